#!/usr/bin/env bash
# benches/measure.sh ADDR KEYWARD_PID RUN...: for benches/load.rs, one wrk per
# RUN ("MODE KEYS_FILE CONNECTIONS SECONDS", as benches/load.lua takes them),
# all at once, and what they cost. Prints, for a cluster, a line per node
# (role, CPU and commands per validation, which audit streams of
# KEYWARD_BENCH_STREAMS it holds) and the busiest master's; last, a JSON line:
# each run's figures (load.lua's JSON), CPU seconds of keyward, Redis (every
# pid of KEYWARD_BENCH_REDIS_PIDS), wrk and the rest of the machine, wall
# seconds, keyward's peak RSS in KiB. With KEYWARD_BENCH_PROFILE=1, perf
# records keyward while wrk runs. With KEYWARD_BENCH_COUNT=syscalls (or
# allocs), `perf stat` counts keyward's system calls by kind and its context
# switches (or, by uprobes, its calls into malloc: slow, so only the counts
# mean anything) while wrk runs, and Redis's INFO commandstats are read
# (reset before); each is printed per validation.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
addr="$1" kw="$2" out="$KEYWARD_BENCH_DIR/wrk" cores="$(nproc)"
shift 2
read -ra pids <<<"$KEYWARD_BENCH_REDIS_PIDS"
read -ra ports <<<"$KEYWARD_BENCH_REDIS_PORTS"
first="${ports[0]}" admin="$KEYWARD_BENCH_DIR"
if ((${#ports[@]} > 1)); then admin+=/cluster; else ports=(); fi
cli() { bash redis/local.sh cluster-cli "$admin" "$@"; }
profile=() count="${KEYWARD_BENCH_COUNT:-}" stat="$KEYWARD_BENCH_DIR/perf-stat"
if [[ "${KEYWARD_BENCH_PROFILE:-}" == 1 ]]; then
  profile=(perf record -q -e cpu-clock -g -o target/load-profile.perf.data -p "$kw" --)
fi
# The allocator's entry points: jemalloc's, when the binary holds it, and
# glibc's (the system allocator's, and C code's).
probe() {
  local bin="$1" fn
  shift
  for fn in "$@"; do
    # (grep reads on: an early exit would fail nm, and the pipeline.)
    { nm -D --defined-only "$bin"; nm "$bin"; } 2>/dev/null | grep -E " [TWi] $fn(@.*)?$" >/dev/null || continue
    perf probe -q -x "$bin" -a "kwbench:${fn#_}=$fn" && events+=",kwbench:${fn#_}"
  done
}
case "$count" in
  "") ;;
  syscalls)
    events=raw_syscalls:sys_enter,context-switches
    for call in read write writev readv recvfrom sendto epoll_wait futex sched_yield; do
      events+=",syscalls:sys_enter_$call"
    done
    ;;
  allocs)
    events="" libc="$(awk '/\/libc[.-].*so/ { print $6; exit }' "/proc/$kw/maps")"
    perf probe -q -d 'kwbench:*' 2>/dev/null || true
    trap "perf probe -q -d 'kwbench:*' 2>/dev/null || true" EXIT
    probe "$(readlink "/proc/$kw/exe")" _rjem_malloc _rjem_mallocx _rjem_calloc _rjem_realloc _rjem_rallocx
    probe "$libc" malloc calloc realloc posix_memalign
    events="${events#,}"
    ;;
  *) echo "measure.sh: KEYWARD_BENCH_COUNT=$count: syscalls or allocs" >&2; exit 1 ;;
esac
if [[ -n "$count" ]]; then
  profile=(perf stat -x, -o "$stat" -e "$events" -p "$kw" --)
  cli "$first" config resetstat >/dev/null
fi

# CPU ticks of keyward and each Redis node (utime + stime; their names hold
# no spaces), of the machine (all but idle and iowait), and the commands each
# cluster node ran.
counts() {
  local pid port
  for pid in "$kw" "${pids[@]}"; do awk '{ print $14 + $15 }' "/proc/$pid/stat"; done
  awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
  for port in "${ports[@]}"; do
    cli "$port" info stats | sed -n 's/^total_commands_processed:\([0-9]*\).*/\1/p'
  done
}

sleep 0.5 # what ran before settles
# Resets VmHWM, so that it is this run's peak (Linux >= 4.0).
echo 5 2>/dev/null >"/proc/$kw/clear_refs" && hwm="" || hwm=null
before="$(counts)" start="$(date +%s%N)"
wrk_ticks="$(
  i=0
  for run in "$@"; do
    read -r mode keys clients secs <<<"$run"
    threads=$((clients < cores ? clients : cores)) i=$((i + 1))
    "${profile[@]}" wrk --latency --timeout 30s -t "$threads" -c "$clients" -d "${secs}s" \
      -s benches/load.lua "http://$addr" -- "$keys" "$mode" "$threads" >"$out.$i" 2>&1 &
  done
  wait
  # wrk's CPU: this subshell's waited-for children.
  awk '{ print $16 + $17 }' "/proc/$BASHPID/stat"
)"
wall="$(($(date +%s%N) - start))" after="$(counts)"
requests=0 runs=""
for ((i = 1; i <= $#; i++)); do
  figures="$(tail -n 1 "$out.$i")"
  [[ "$figures" == "{"* ]] || { cat "$out.$i" >&2; exit 1; }
  runs+="${runs:+,}$figures"
  requests=$((requests + $(sed 's/.*"requests":\([0-9]*\).*/\1/' <<<"$figures")))
done
if [[ -n "$count" ]]; then
  # perf stat's CSV: count,unit,event,...; a syscall by its name.
  awk -F, -v n="$requests" '$1 ~ /^[0-9]+$/ {
      name = $3; sub(/^.*:(sys_enter_)?/, "", name)
      line = line sprintf("%s%s %.2f", line == "" ? "" : ", ", name, $1 / (n > 0 ? n : 1))
    } END { print "    keyward per validation: " line }' "$stat"
  cli "$first" info commandstats | tr -d '\r' | awk -F'[:,=]' -v n="$requests" '/^cmdstat_/ {
      name = $1; sub(/^cmdstat_/, "", name); calls = $3 / (n > 0 ? n : 1)
      if (calls < 0.01) next
      line = line sprintf("%s%s %.2f x %.2f µs", line == "" ? "" : ", ", name, calls, $7)
      total += $5
    } END { printf "    Redis per validation (commandstats: calls x µs per call): %s; %.2f µs in commands\n", line, total / (n > 0 ? n : 1) }'
fi
nodes=""
for port in "${ports[@]}"; do
  role="$(cli "$port" role | head -n 1)" held=""
  for stream in $KEYWARD_BENCH_STREAMS; do
    # A key exists only on the master that holds its slot.
    [[ "$role" == master && "$(cli "$port" exists "$stream")" == 1 ]] && held+=" $stream"
  done
  nodes+="$port ${role/slave/replica}${held:+ holds$held};"
done
[[ -n "$hwm" ]] || hwm="$(awk '/^VmHWM:/ { print $2 }' "/proc/$kw/status")"

paste <(echo "$before") <(echo "$after") | awk -v hz="$(getconf CLK_TCK)" -v wall="$wall" \
  -v wrk="$wrk_ticks" -v n="${#pids[@]}" -v hwm="$hwm" -v per="$requests" -v nodes="$nodes" -v runs="$runs" '
  { d[NR] = $2 - $1 }
  END {
    wall /= 1e9; wrk /= hz; kw = d[1] / hz; per = per > 0 ? per : 1
    for (i = 2; i <= n + 1; i++) rd += d[i] / hz
    other = d[n + 2] / hz - kw - rd - wrk
    m = split(nodes, node, ";") - 1
    for (i = 1; i <= m; i++) {
      split(node[i], f, " "); secs = d[i + 1] / hz; held = node[i]
      sub(/^[^ ]+ [^ ]+/, "", held); sub(/^ holds/, "; holds", held)
      printf "    node %d %-7s %4.0f%% CPU, %5.1f µs and %.2f commands per validation%s\n",
        f[1], f[2], secs * 100 / wall, secs * 1e6 / per, d[n + 2 + i] / per, held
      if (f[2] == "master" && secs > top) { top = secs; port = f[1] }
    }
    if (top > 0) printf "    busiest master %d: %.0f%% of a core at %.0f validations/s, so a core at ~%.0f/s\n",
      port, top * 100 / wall, per / wall, per / top
    printf "{\"runs\":[%s],\"cpu\":[%f,%f,%f,%f],\"wall\":%f,\"rss_kib\":%s}\n", runs, kw, rd,
      wrk, (other > 0 ? other : 0), wall, hwm
  }'
