#!/usr/bin/env bash
# Installs Debian's Chromium and ChromeDriver for the console's browser test
# (tests/api/console.rs), when missing. Idempotent; progress goes to stderr.
#
#   tests/console/install-chromium.sh
#
# Both come from Debian's packages `chromium` and `chromium-driver`
# (/usr/bin/chromium, /usr/bin/chromedriver), whose versions always match.
set -euo pipefail

log() { echo "install-chromium.sh: $*" >&2; }

if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
  log "already installed: $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
  exit 0
fi
log "installing chromium and chromium-driver via apt"
apt-get update >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver fonts-dejavu-core >&2
