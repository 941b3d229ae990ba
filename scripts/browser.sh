#!/usr/bin/env bash
# Make sure headless Chromium is installed (Debian's package) for tests/e2e/test_ui.py.
# Idempotent: does nothing when /usr/bin/chromium already exists. No browser download
# from anywhere but the distribution's apt repository.
set -euo pipefail

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

log() { printf '[browser] %s\n' "$*"; }

if [ -x "$CHROMIUM" ]; then
  log "Chromium present: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  log "cannot install Chromium (no apt-get); install it yourself or set CHROMIUM=/path/to/chromium"
  exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else log "need root to apt-get install chromium"; exit 1; fi
fi
log "installing chromium and chromium-driver (apt)"
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
log "installed: $("$CHROMIUM" --version 2>/dev/null)"
