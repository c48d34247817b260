#!/usr/bin/env bash
# `make run`: start a local Redis Stack and keyward, create a demo project,
# mint a demo key, print how to validate it, then keep keyward in the
# foreground until ctrl-c (which stops both).
#
# usage: redis/demo.sh RUN_DIR REDIS_PORT KEYWARD_PORT
set -euo pipefail
cd "$(dirname "$0")/.."
run_dir=$1 redis_port=$2 keyward_port=$3
command -v curl >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl; }
mkdir -p "$run_dir"
run_dir=$(cd "$run_dir" && pwd)

rand() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
validator_pw=$(rand) manager_pw=$(rand) admin_token=$(rand)

bash redis/local.sh stop "$run_dir" 2>/dev/null || true
bash redis/local.sh acl "$validator_pw" "$manager_pw" "$run_dir/users.acl"
bash redis/local.sh start "$redis_port" "$run_dir" "$run_dir/users.acl" >/dev/null

export KEYWARD_LISTEN="127.0.0.1:$keyward_port"
export KEYWARD_REDIS_URL="redis://validator:$validator_pw@127.0.0.1:$redis_port"
export KEYWARD_ADMIN_REDIS_URL="redis://manager:$manager_pw@127.0.0.1:$redis_port"
export KEYWARD_ADMIN_TOKEN="$admin_token"
export KEYWARD_CLIENT_NAME=demo
./target/release/keyward serve 2>"$run_dir/keyward.log" &
keyward_pid=$!
trap 'kill $keyward_pid 2>/dev/null || true; bash redis/local.sh stop "$run_dir" || true' EXIT INT TERM

base="http://127.0.0.1:$keyward_port"
for _ in $(seq 100); do
  curl -fsS "$base/health" >/dev/null 2>&1 && break
  kill -0 $keyward_pid 2>/dev/null || { cat "$run_dir/keyward.log"; exit 1; }
  sleep 0.1
done
curl -fsS "$base/health" >/dev/null || { echo "keyward did not become healthy" >&2; cat "$run_dir/keyward.log"; exit 1; }

curl -fsS -H "Authorization: Bearer $admin_token" -H 'content-type: application/json' \
  -d '{"project_id":"demo","label":"Demo project","owner":"you"}' "$base/v1/admin/projects" >/dev/null
api_key=$(curl -fsS -H "Authorization: Bearer $admin_token" -H 'content-type: application/json' \
  -d '{"project_id":"demo","owner":"you","server_name":"demo-backend","metadata":{"plan":"free"}}' \
  "$base/v1/mint-key" | sed -n 's/.*"api_key":"\([^"]*\)".*/\1/p')

cat <<MSG

keyward is listening on $base (Redis Stack on 127.0.0.1:$redis_port, logs in $run_dir/keyward.log)

  admin token: $admin_token
  demo key:    $api_key

Validate the demo key:
  curl -s -X POST $base/v1/validate-key -H 'content-type: application/json' -d '{"api_key":"$api_key"}'

Mint another (admin):
  curl -s -X POST $base/v1/mint-key -H 'Authorization: Bearer $admin_token' -H 'content-type: application/json' \\
    -d '{"project_id":"demo","owner":"you","server_name":"demo-backend"}'

Press ctrl-c to stop keyward and Redis.
MSG
wait $keyward_pid
