#!/usr/bin/env bash
# Installs the OpenAPI tools the tests run, from PyPI, into a virtualenv of
# their own under target/ (nothing is installed system-wide), if missing.
# Idempotent: a venv that already has the pinned versions is kept.
#
#   tests/openapi/install.sh          install (if missing) and print the venv's bin/ folder
#
# The venv lives in $KEYWARD_OPENAPI_VENV (default target/openapi-venv).
# Needs python3 with venv and pip (installs Debian's python3-venv when the
# venv module is missing, as root like the rest of `make test`). Progress
# goes to stderr; stdout carries only the bin/ folder.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${KEYWARD_OPENAPI_VENV:-$ROOT/target/openapi-venv}"
# The versions the tests are written for; override to try others.
SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
SPEC_VALIDATOR_VERSION="${SPEC_VALIDATOR_VERSION:-0.9.0}"
WANT="schemathesis==$SCHEMATHESIS_VERSION openapi-spec-validator==$SPEC_VALIDATOR_VERSION"

log() { echo "openapi/install.sh: $*" >&2; }
die() { echo "openapi/install.sh: error: $*" >&2; exit 1; }

installed() {
  [[ -x "$VENV/bin/schemathesis" && -x "$VENV/bin/openapi-spec-validator" ]] &&
    [[ "$(cat "$VENV/.keyward-installed" 2>/dev/null)" == "$WANT" ]]
}

make_venv() {
  rm -rf "$VENV"
  if "$PYTHON" -m venv "$VENV" >&2 2>/dev/null; then
    return 0
  fi
  # Debian's python3 ships venv (with ensurepip) as a separate package.
  rm -rf "$VENV"
  log "python3 -m venv failed: installing Debian's python3-venv"
  apt-get -o DPkg::Lock::Timeout=300 update >&2
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y python3-venv >&2
  "$PYTHON" -m venv "$VENV" >&2 || die "cannot create a virtualenv with $PYTHON"
}

if installed; then
  log "already installed in $VENV ($WANT)"
else
  mkdir -p "$(dirname "$VENV")"
  # One install at a time: tests may ask concurrently.
  exec 9>"$(dirname "$VENV")/.openapi-venv.lock"
  flock 9
  if ! installed; then
    log "installing $WANT into $VENV"
    make_venv
    # shellcheck disable=SC2086
    "$VENV/bin/python" -m pip install --disable-pip-version-check --quiet $WANT >&2 ||
      die "pip install $WANT failed"
    echo "$WANT" >"$VENV/.keyward-installed"
  fi
fi
echo "$VENV/bin"
