#!/usr/bin/env bash
# make load-compare BASE=<rev>: the warm C=64 load against <rev>'s keyward and
# the current tree's, alternating, in one run (see benches/load.rs).
#
#   benches/compare.sh [REV]          REV defaults to 196fbe3
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
rev="${1:-196fbe3}"
sha="$(git rev-parse --verify --quiet "${rev}^{commit}")" || die "unknown revision: $rev"
short="${sha:0:12}"
dir="$PWD/target/compare/$short"
bin="$dir/keyward"

if [[ ! -x "$bin" ]]; then
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

# The base's own ACL template beside a copy of the current renderer:
# local.sh renders the users.acl next to it.
mkdir -p "$dir/redis"
git show "$sha:redis/users.acl" >"$dir/redis/users.acl"
cp redis/local.sh "$dir/redis/local.sh"

log "base: $rev = $sha"
KEYWARD_BENCH_BASE="$dir" KEYWARD_BENCH_BASE_REV="$rev" \
  exec cargo bench --locked --bench load
