#!/usr/bin/env bash
# Installs the webhook tests' receiver dependency, the Standard Webhooks
# reference library from PyPI (`standardwebhooks`, not ours), into a
# virtualenv of its own under target/, if missing; prints its python.
#
#   tests/webhooks/install.sh      install (if missing) and print the venv's python
#
# The venv lives in $KEYWARD_WEBHOOKS_VENV (default target/webhooks-venv).
# Progress goes to stderr; stdout carries only the interpreter's path.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${KEYWARD_WEBHOOKS_VENV:-$ROOT/target/webhooks-venv}"
WANT="standardwebhooks==${STANDARDWEBHOOKS_VERSION:-1.1.0}"

log() { echo "webhooks/install.sh: $*" >&2; }
die() { echo "webhooks/install.sh: error: $*" >&2; exit 1; }

installed() {
  [[ -x "$VENV/bin/python" ]] && [[ "$(cat "$VENV/.keyward-installed" 2>/dev/null)" == "$WANT" ]]
}

if installed; then
  log "already installed in $VENV ($WANT)"
else
  mkdir -p "$(dirname "$VENV")"
  exec 9>"$(dirname "$VENV")/.webhooks-venv.lock"
  flock 9
  if ! installed; then
    log "installing $WANT into $VENV"
    rm -rf "$VENV"
    if ! "$PYTHON" -m venv "$VENV" >&2 2>/dev/null; then
      rm -rf "$VENV"
      log "python3 -m venv failed: installing Debian's python3-venv"
      apt-get -o DPkg::Lock::Timeout=300 update >&2
      DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y python3-venv >&2
      "$PYTHON" -m venv "$VENV" >&2 || die "cannot create a virtualenv with $PYTHON"
    fi
    "$VENV/bin/python" -m pip install --disable-pip-version-check --quiet "$WANT" >&2 ||
      die "pip install $WANT failed"
    echo "$WANT" >"$VENV/.keyward-installed"
  fi
fi
echo "$VENV/bin/python"
