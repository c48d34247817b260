#!/usr/bin/env bash
# make release-pgo: keyward built with profile-guided optimisation (PGO),
# target/pgo/keyward. docs/performance.md ("Round 4, profile-guided
# optimisation") has what it gains and how it was measured.
#
#   1. an instrumented keyward (RUSTFLAGS=-Cprofile-generate), CARGO_TARGET_DIR
#      target/pgo/gen;
#   2. the training load: benches/load.rs's scenarios (KEYWARD_BENCH_SCENARIO=all:
#      minting, warm validate-key and /v1/auth at C=1 and C=64, the cold
#      storm) against it, on a Redis of its own, KEYWARD_PGO_SECONDS (default
#      5) each;
#   3. the counts it wrote merged by llvm-profdata, from rustup's llvm-tools
#      component (the LLVM of the rustc that builds);
#   4. keyward built with them (RUSTFLAGS=-Cprofile-use), CARGO_TARGET_DIR
#      target/pgo/use, copied to target/pgo/keyward.
#
# Needs what make load needs (redis/local.sh install wrk) and rustup. The
# plain `cargo build --release` is unchanged.
set -euo pipefail

die() { echo "pgo.sh: error: $*" >&2; exit 1; }
log() { echo "pgo.sh: $*" >&2; }

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD/target/pgo"
seconds="${KEYWARD_PGO_SECONDS:-5}"
[[ "$seconds" =~ ^[1-9][0-9]{0,2}$ ]] || die "KEYWARD_PGO_SECONDS must be a whole number in 1..999"
command -v rustup >/dev/null || die "needs rustup, for its llvm-tools component (llvm-profdata)"
rustup component add llvm-tools >&2
host="$(rustc -vV | sed -n 's/^host: //p')"
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
[[ -x "$profdata" ]] || die "no llvm-profdata at $profdata"

rm -rf "$root/data" "$root/train"
mkdir -p "$root/data" "$root/train/redis" "$root/redis"
log "1/4: the instrumented build, CARGO_TARGET_DIR=$root/gen"
RUSTFLAGS="-Cprofile-generate=$root/data" CARGO_TARGET_DIR="$root/gen" \
  cargo build --release --locked --bin keyward

# The bench stops keyward with SIGKILL, and the counts are written only at a
# clean exit. So the bench starts this wrapper, whose keyward outlives it
# and is stopped below with SIGTERM (a graceful exit).
real="$root/train/keyward-instrumented"
cp "$root/gen/release/keyward" "$real"
cp redis/local.sh redis/users.acl "$root/train/redis/"
printf '#!/bin/sh\n"%s" "$@" &\nwait $!\n' "$real" >"$root/train/keyward"
chmod +x "$root/train/keyward"
log "2/4: the training load, every scenario of benches/load.rs for $seconds s (its keyward figures are the wrapper's: ignore them)"
KEYWARD_BENCH_BASE="$root/train" KEYWARD_BENCH_SCENARIO=all KEYWARD_BENCH_SECONDS="$seconds" \
  cargo bench --locked --bench load >&2
pkill -TERM -f "$real" || true
for _ in $(seq 300); do
  pgrep -f "$real" >/dev/null || break
  sleep 0.1
done
! pgrep -f "$real" >/dev/null || die "the instrumented keyward did not exit within 30 s of SIGTERM"
compgen -G "$root/data/*.profraw" >/dev/null || die "the training wrote no profile to $root/data"

log "3/4: merging the counts into $root/keyward.profdata"
"$profdata" merge -o "$root/keyward.profdata" "$root/data"

log "4/4: the optimised build, CARGO_TARGET_DIR=$root/use"
RUSTFLAGS="-Cprofile-use=$root/keyward.profdata" CARGO_TARGET_DIR="$root/use" \
  cargo build --release --locked --bin keyward
cp "$root/use/release/keyward" "$root/keyward.tmp"
mv "$root/keyward.tmp" "$root/keyward"
# Beside it, what benches/load.rs needs to run it by KEYWARD_BENCH_BASE.
cp redis/local.sh redis/users.acl "$root/redis/"
log "built $root/keyward"
