#!/usr/bin/env bash
# make load-compare BASE=<rev>: warm C=N (KEYWARD_BENCH_SCENARIO=warm of
# benches/load.rs) against <rev>'s keyward and the current tree's, alternating
# for KEYWARD_BENCH_ROUNDS rounds (default 3; base first in odd rounds, new
# first in even ones), each run on a Redis and keys of its own; then each
# round's ratios new/base, the medians (non-200: the sum), their ratios and
# round 4's targets (issue #35, against 240fbde).
#
#   benches/compare.sh [REV]          REV defaults to 240fbde; with
#                                     KEYWARD_BENCH_PGO=1 (make load-compare PGO=1),
#                                     this tree's side is benches/pgo.sh's
#                                     binary, built first
#   benches/compare.sh --unix         make load-unix: this tree's keyward on Redis
#                                     over TCP ("base") and over its Unix socket
#                                     (KEYWARD_BENCH_REDIS=unix, "new"): ratios
#                                     unix/tcp, no targets
#   benches/compare.sh --tls          make load-tls: the same over TCP and over
#                                     TLS with a client certificate
#                                     (KEYWARD_BENCH_REDIS=tls): ratios tls/tcp
#   benches/compare.sh --grpc         make load-grpc: this tree's keyward behind
#                                     Envoy (load.lua's auth mode through it to
#                                     a bare app), asked over HTTP ext_authz
#                                     (/v1/auth, examples/gateways/envoy.yaml:
#                                     "base") and over gRPC (envoy-grpc.yaml:
#                                     "new", KEYWARD_BENCH_ENVOY): ratios grpc/http
#
# <rev> is built once, in a git worktree of its own (removed after the build)
# with its own CARGO_TARGET_DIR, target/compare/<sha>/target; its binary is
# kept as target/compare/<sha>/keyward, so later runs do not rebuild it. Its
# Redis users come from its own redis/users.acl, rendered by the current
# redis/local.sh exactly as the current tree's template is.
set -euo pipefail

die() { echo "compare.sh: error: $*" >&2; exit 1; }
log() { echo "compare.sh: $*" >&2; }

cd "$(dirname "${BASH_SOURCE[0]}")/.."
rev="${1:-240fbde}" rounds="${KEYWARD_BENCH_ROUNDS:-3}"
[[ "$rounds" =~ ^[1-9][0-9]?$ ]] || die "KEYWARD_BENCH_ROUNDS must be a whole number in 1..99"
[[ "${KEYWARD_BENCH_CLUSTER:-}" != 1 ]] || die "compare mode runs on one Redis: unset KEYWARD_BENCH_CLUSTER"
# Each side's name in the rows and how it runs: (base, new).
# One tree, two ways of running it (no base revision to build).
local_pair=0
if [[ "$rev" == --unix || "$rev" == --tls || "$rev" == --grpc ]]; then local_pair=1; fi
if [[ "$rev" == --grpc ]]; then
  # The HTTP example's keyward setting; gRPC reads no such header.
  export KEYWARD_AUTH_ORIGINAL_HEADERS=envoy
  names=(http grpc) runs=(KEYWARD_BENCH_ENVOY=http KEYWARD_BENCH_ENVOY=grpc)
elif [[ "$rev" == --unix || "$rev" == --tls ]]; then
  names=(tcp "${rev#--}") runs=(KEYWARD_BENCH_REDIS=tcp KEYWARD_BENCH_REDIS="${rev#--}")
else
  sha="$(git rev-parse --verify --quiet "${rev}^{commit}")" || die "unknown revision: $rev"
  short="${sha:0:12}"
  dir="$PWD/target/compare/$short"
  bin="$dir/keyward"
  names=("base $rev" new) runs=(KEYWARD_BENCH_BASE="$dir" KEYWARD_BENCH_REDIS=tcp)
  if [[ "${KEYWARD_BENCH_PGO:-}" == 1 ]]; then
    bash benches/pgo.sh
    names=("base $rev" "new (PGO)") runs=(KEYWARD_BENCH_BASE="$dir" KEYWARD_BENCH_BASE="$PWD/target/pgo")
  fi
fi

if [[ "$rev" == --grpc ]]; then
  log "this tree behind Envoy, asked over HTTP ext_authz (base) and gRPC ext_authz (new)"
elif ((local_pair)); then
  log "this tree on Redis over TCP (base) and over ${names[1]} (new: unix, its Unix socket; tls, TLS)"
elif [[ ! -x "$bin" ]]; then
  tree="$dir/src"
  mkdir -p "$dir"
  # A worktree left by an interrupted build: remove it first (--force on add
  # re-registers its path if only the directory was deleted).
  if [[ -e "$tree" ]]; then git worktree remove --force "$tree" || rm -rf "$tree"; fi
  log "building $rev ($short) in worktree $tree, CARGO_TARGET_DIR=$dir/target"
  git worktree add --force --detach --quiet "$tree" "$sha"
  trap 'git worktree remove --force "$tree" >/dev/null 2>&1 || true' EXIT
  (cd "$tree" && CARGO_TARGET_DIR="$dir/target" cargo build --release --locked --bin keyward)
  cp "$dir/target/release/keyward" "$bin.tmp"
  mv "$bin.tmp" "$bin"
  git worktree remove --force "$tree"
  trap - EXIT
else
  log "using $bin (built earlier from $short)"
fi

if ((!local_pair)); then
  # The base's own ACL template, which benches/load.sh renders.
  mkdir -p "$dir/redis"
  git show "$sha:redis/users.acl" >"$dir/redis/users.acl"
  cp redis/local.sh "$dir/redis/local.sh"
  log "base: $rev = $sha"
fi
cargo bench --locked --bench load --no-run

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for ((round = 1; round <= rounds; round++)); do
  if ((round % 2)); then sides=(base new); else sides=(new base); fi
  for side in "${sides[@]}"; do
    i=0; [[ "$side" == base ]] || i=1
    env -u KEYWARD_BENCH_BASE -u KEYWARD_BENCH_REDIS -u KEYWARD_BENCH_ENVOY "${runs[$i]}" KEYWARD_BENCH_SCENARIO=warm \
      cargo bench --locked --bench load >"$out/run" 2>&1 || { cat "$out/run" >&2; die "round $round, $side failed"; }
    # The first run's header once; then each run's row, named after its side.
    ((round > 1)) || [[ "$side" == new ]] || sed -n '/^keyward load/,/^scenario/p' "$out/run"
    row="$(grep '^warm C=' "$out/run")"
    printf '%-32s%s\n' "$round: ${names[$i]}" "${row:32}"
    echo "$side $round ${row:32}" >>"$out/rows"
  done
done

# Each column's decimals and whether a ratio new/base means something, as in
# benches/load.rs's COLS.
awk -v base="${names[0]}" -v new="${names[1]}" -v targets="$( ((local_pair)) || echo 1)" '
  BEGIN {
    split("0 3 3 0 1 1 2 0 0 0 0 1", dec, " "); split("1 1 1 0 1 1 1 0 0 0 0 0", ratio, " ")
    ratio_name = (base ~ /^base / ? "new/base" : new "/" base)
  }
  { for (i = 1; i <= 12; i++) v[$1, $2, i] = $(i + 3); c = $3; rounds = $2 > rounds ? $2 : rounds }
  function line(name, c, cell,   s, i) {
    s = sprintf("%-32s %3s", name, c)
    for (i = 1; i <= 12; i++) s = s sprintf(" %8s", cell[i])
    sub(/ +$/, "", s); print s
  }
  function ratios(name, b, n,   i, cell) {
    for (i = 1; i <= 12; i++) cell[i] = ratio[i] && b[i] + 0 ? sprintf("%.2fx", n[i] / b[i]) : ""
    line(name, "", cell)
  }
  function median(side, i,   r, j, t, a) {
    for (r = 1; r <= rounds; r++) {
      if (v[side, r, i] == "?") return "?"
      if (i == 4) { t += v[side, r, i]; continue }
      a[r] = v[side, r, i] + 0
      for (j = r; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
    }
    return i == 4 ? t : (a[int((rounds + 1) / 2)] + a[int(rounds / 2) + 1]) / 2
  }
  END {
    for (r = 1; r <= rounds; r++) {
      for (i = 1; i <= 12; i++) { b[i] = v["base", r, i]; n[i] = v["new", r, i] }
      ratios(r ": " ratio_name, b, n)
    }
    print "medians of " rounds " round(s) (non-200: the sum)"
    for (i = 1; i <= 12; i++) {
      B[i] = median("base", i); N[i] = median("new", i)
      bs[i] = B[i] == "?" ? "?" : sprintf("%." dec[i] "f", B[i])
      ns[i] = N[i] == "?" ? "?" : sprintf("%." dec[i] "f", N[i])
    }
    line("median " base, c, bs); line("median " new, c, ns); ratios("median " ratio_name, B, N)
    if (!targets) exit
    print "targets (reported, not asserted; medians)"
    target("keyward CPU/validation new/base <= 0.5", N[5] / B[5], N[5] / B[5] <= 0.5)
    target("Redis CPU/validation new/base <= 1", N[6] / B[6], N[6] / B[6] <= 1)
    target("p99 new/base <= 1", N[3] / B[3], N[3] / B[3] <= 1)
    target("new: non-200 = 0", N[4], N[4] == 0)
  }
  function target(what, got, ok) { printf "  %-50s %10.3f  %s\n", what, got, ok ? "ok" : "MISS" }
' "$out/rows"
