#!/usr/bin/env bash
# `make run`: start a local Redis Stack and keyward, create a demo project,
# mint a demo key with the admin CLI, print how to use it, then keep keyward in the
# foreground until ctrl-c (which stops both).
#
# usage: redis/demo.sh RUN_DIR REDIS_PORT KEYWARD_PORT
set -euo pipefail
cd "$(dirname "$0")/.."
run_dir=$1 redis_port=$2 keyward_port=$3
mkdir -p "$run_dir"
run_dir=$(cd "$run_dir" && pwd)

rand() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
validator_pw=$(rand) manager_pw=$(rand) monitor_pw=$(rand) admin_token=$(rand)
kw=./target/release/keyward

bash redis/local.sh stop "$run_dir" 2>/dev/null || true
bash redis/local.sh acl "$validator_pw" "$manager_pw" "$run_dir/users.acl"
# The monitor user, as `keyward acl` prints it: it reads the audit streams
# (the console's Activity screen, `keyward audit`), nothing else.
printf '%s\n' "$monitor_pw" >"$run_dir/monitor.pw"
$kw acl demo-monitor --role monitor --deployment demo \
  --password-file "$run_dir/monitor.pw" >>"$run_dir/users.acl"
bash redis/local.sh start "$redis_port" "$run_dir" "$run_dir/users.acl" >/dev/null

export KEYWARD_LISTEN="127.0.0.1:$keyward_port"
export KEYWARD_REDIS_URL="redis://validator:$validator_pw@127.0.0.1:$redis_port"
export KEYWARD_ADMIN_REDIS_URL="redis://manager:$manager_pw@127.0.0.1:$redis_port"
export KEYWARD_ADMIN_TOKEN="$admin_token"
export KEYWARD_MONITOR_REDIS_URL="redis://demo-monitor:$monitor_pw@127.0.0.1:$redis_port"
export KEYWARD_CLIENT_NAME=demo
./target/release/keyward serve 2>"$run_dir/keyward.log" &
keyward_pid=$!
trap 'kill $keyward_pid 2>/dev/null || true; bash redis/local.sh stop "$run_dir" || true' EXIT INT TERM

# The admin CLI talks to this keyward with this token (from the environment,
# never a flag).
export KEYWARD_URL="http://127.0.0.1:$keyward_port"
for _ in $(seq 100); do
  $kw healthcheck && break
  kill -0 $keyward_pid 2>/dev/null || { cat "$run_dir/keyward.log"; exit 1; }
  sleep 0.1
done
$kw healthcheck ||
  { echo "keyward did not become healthy" >&2; cat "$run_dir/keyward.log"; exit 1; }

$kw project create demo --label "Demo project" --owner you >/dev/null
api_key=$($kw key mint demo --owner you --server-name demo-backend --metadata '{"plan":"free"}')

cat <<MSG

keyward is listening on $KEYWARD_URL (Redis Stack on 127.0.0.1:$redis_port, logs in $run_dir/keyward.log)

  admin token: $admin_token
  demo key:    $api_key

In another shell, with the admin CLI (see README "Command line"):
  export KEYWARD_URL=$KEYWARD_URL KEYWARD_ADMIN_TOKEN=$admin_token
  echo '$api_key' | $kw check          # validate the demo key, as a gateway would
  $kw key list demo
  $kw key mint demo --owner you --server-name demo-backend
  $kw audit                             # the admin trail: who did what

Or over HTTP:
  curl -s -X POST $KEYWARD_URL/v1/validate-key -H 'content-type: application/json' -d '{"api_key":"$api_key"}'

Press ctrl-c to stop keyward and Redis.
MSG
wait $keyward_pid
