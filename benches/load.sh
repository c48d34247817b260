#!/usr/bin/env bash
# The load benchmark's harness (`cargo bench --bench load` runs it): a Redis
# Stack from redis/local.sh in a temp dir (with KEYWARD_BENCH_CLUSTER=1 a
# cluster of 3 masters with a replica each), the bench binary run on it, and
# Redis stopped and the dir removed however that ends.
#
#   benches/load.sh BENCH_BINARY
#
# The binary gets KEYWARD_BENCH_DIR (the temp dir), KEYWARD_BENCH_REDIS_PORTS
# and _PIDS (for benches/measure.sh), and the environment of the keyward it
# starts: the caller's KEYWARD_* settings (reported as overrides), then the
# Redis URLs (the validator's and the manager's), a random admin token, warn
# logs and, for the restart scenario, a pepper file. With
# KEYWARD_BENCH_BASE=DIR (benches/compare.sh), the Redis users come from
# DIR/redis/users.acl. With KEYWARD_BENCH_REDIS=unix (one node only), both
# URLs name Redis's Unix socket (redis+unix://), not its TCP port; with
# KEYWARD_BENCH_REDIS=tls (one node only), its TLS port (rediss://, with the
# CA and client certificate redis/local.sh made). keyward's
# log ends up in the temp dir; its last lines are printed at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bench="$1" cluster="${KEYWARD_BENCH_CLUSTER:-0}" over="${KEYWARD_BENCH_REDIS:-tcp}"
case "$over" in
  tcp) unix=() ;;
  unix | tls) unix=("$over") ;;
  *) echo "load.sh: KEYWARD_BENCH_REDIS=$over: tcp, unix or tls" >&2; exit 1 ;;
esac
if [[ "$cluster" == 1 && "$over" != tcp ]]; then
  echo "load.sh: KEYWARD_BENCH_REDIS=$over needs one node: unset KEYWARD_BENCH_CLUSTER" >&2
  exit 1
fi
dir="$(mktemp -d "${TMPDIR:-/tmp}/keyward-load.XXXXXXXX")"
stop() {
  if [[ -s "$dir/keyward.log" ]]; then
    echo "keyward logged at warn or above; last lines:"
    tail -n 20 "$dir/keyward.log"
  fi
  if [[ "$cluster" == 1 ]]; then
    bash redis/local.sh cluster-stop "$dir/cluster" 2>/dev/null
  else
    bash redis/local.sh stop "$dir" 2>/dev/null
  fi
  rm -rf "$dir"
}
trap stop EXIT
pw() { head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
vpw="$(pw)" mpw="$(pw)"
bash "${KEYWARD_BENCH_BASE:-.}/redis/local.sh" acl "$vpw" "$mpw" "$dir/users.acl" 2>"$dir/local.log"
if [[ "$cluster" != 1 ]]; then
  # One node: an admin user for measure.sh's INFO and CONFIG RESETSTAT, as
  # local.sh gives a cluster (the same name and password file, so its
  # cluster-cli works on this dir too).
  apw="$(pw)"
  (umask 077 && echo "$apw" >"$dir/admin.pw")
  echo "user cluster-admin on >$apw ~* &* +@all" >>"$dir/users.acl"
fi

# Another process may take a port first: try thrice. A cluster's ports and
# their bus ports (+10000) stay below the ephemeral ports.
for attempt in 1 2 3; do
  port=$((10000 + RANDOM % 12000))
  if [[ "$cluster" == 1 ]]; then
    seeds="$(bash redis/local.sh cluster-start "$port" "$dir/cluster" "$dir/users.acl" 2>>"$dir/local.log")" && break
  else
    bash redis/local.sh start "$port" "$dir" "$dir/users.acl" "${unix[@]}" >/dev/null 2>>"$dir/local.log" && break
  fi
  ((attempt < 3)) || { cat "$dir/local.log" >&2; exit 1; }
done
if [[ "$cluster" == 1 ]]; then
  url="redis-cluster://%s@$seeds" ports="$(seq -s ' ' "$port" $((port + 5)))"
  pids="$(for p in $ports; do cat "$dir/cluster/$p/redis.pid"; done | xargs)"
  redis="a cluster of 3 masters with 1 replica each (redis/local.sh cluster-start)"
elif [[ "$over" == unix ]]; then
  # fred's syntax: with credentials a host is required, and ignored.
  url="redis+unix://%s@localhost$dir/redis.sock" ports="$port" pids="$(cat "$dir/redis.pid")"
  redis="one node (redis/local.sh start), over its Unix socket"
elif [[ "$over" == tls ]]; then
  url="rediss://%s@localhost:$port" ports="$port" pids="$(cat "$dir/redis.pid")"
  redis="one node (redis/local.sh start ... tls), over TLS with a client certificate"
else
  url="redis://%s@127.0.0.1:$port" ports="$port" pids="$(cat "$dir/redis.pid")"
  redis="one node (redis/local.sh start), over TCP"
fi

echo "keyward load benchmark ($({ wrk -v 2>&1 || true; } | head -n 1 | cut -d' ' -f1-2), benches/load.lua)"
echo "  machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
echo "  Redis: $redis, pids $pids"

# What the bench sets itself replaces the caller's value; secret files would
# clash with the secrets set here.
own='^KEYWARD_(LISTEN|REDIS_URL|ADMIN_REDIS_URL|ADMIN_TOKEN|LOG|.*_FILE)$'
for var in $(compgen -e | grep -E "$own"); do unset "$var"; done
overrides="$(for var in $(compgen -e | grep '^KEYWARD_' | grep -v '^KEYWARD_BENCH_' | sort); do
  printf ' %s=%s' "$var" "${!var}"
done)"
if [[ -n "$overrides" ]]; then
  echo "  keyward configuration: NOT the defaults:$overrides"
else
  echo "  keyward configuration: defaults (no KEYWARD_* overrides inherited)"
fi
# shellcheck disable=SC2059 # the URL is the format
KEYWARD_REDIS_URL="$(printf "$url" "validator:$vpw")" KEYWARD_ADMIN_REDIS_URL="$(printf "$url" "manager:$mpw")"
export KEYWARD_REDIS_URL KEYWARD_ADMIN_REDIS_URL KEYWARD_ADMIN_TOKEN="$(pw)" KEYWARD_LOG=warn
if [[ "$over" == tls ]]; then
  export KEYWARD_REDIS_CA_FILE="$dir/tls/ca.crt" KEYWARD_REDIS_CERT_FILE="$dir/tls/client.crt" \
    KEYWARD_REDIS_KEY_FILE="$dir/tls/client.key"
fi
if [[ "${KEYWARD_BENCH_SCENARIO:-}" == restart ]]; then
  (umask 077 && echo "$(pw)$(pw)" >"$dir/pepper")
  export KEYWARD_VERIFY_PEPPER_FILE="$dir/pepper"
fi
KEYWARD_BENCH_DIR="$dir" KEYWARD_BENCH_REDIS_PORTS="$ports" KEYWARD_BENCH_REDIS_PIDS="$pids" "$bench"
