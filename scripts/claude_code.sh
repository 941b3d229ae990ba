#!/usr/bin/env bash
# Install a pinned Claude Code (@anthropic-ai/claude-code, from the npm registry) for
# tests/e2e/test_clients.py, into a cache directory outside git. Idempotent: when the
# pinned version is already there it only prints the binary's path.
#
# Usage: scripts/claude_code.sh        prints the path of the `claude` binary (stdout, last line)
# Env:   CLAUDE_CODE_VERSION   the version to install (default below)
#        CLAUDE_CODE_CACHE     where (default: <repo>/.cache/claude-code); one subdirectory per version
# Exit:  0 installed, 2 Node.js/npm missing (the tests then skip with that reason), 1 install failed.
#
# 2.1.197 is the newest release whose package.json admits Node 20 (`engines.node >=18`);
# from 2.1.198 on it asks for Node 22. The package ships a native binary; Node only runs
# its postinstall step, which copies that binary into place.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VERSION=${CLAUDE_CODE_VERSION:-2.1.197}
CACHE=${CLAUDE_CODE_CACHE:-$ROOT/.cache/claude-code}
PREFIX=$CACHE/$VERSION
BIN=$PREFIX/node_modules/@anthropic-ai/claude-code/bin/claude.exe

log() { printf '[claude-code] %s\n' "$*" >&2; }

# The installed binary answers `--version` without touching the network.
installed() {
  [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "^$VERSION "
}

if installed; then
  echo "$BIN"
  exit 0
fi
for tool in node npm; do
  if ! command -v "$tool" >/dev/null; then
    log "$tool not found: install Node.js >= 18 and npm to run the Claude Code tests"
    exit 2
  fi
done

mkdir -p "$CACHE"
# Keep the cache out of `git status` without touching the repository's .gitignore.
[ -f "$CACHE/.gitignore" ] || printf '*\n' > "$CACHE/.gitignore"

log "installing @anthropic-ai/claude-code@$VERSION into $PREFIX (node $(node --version))"
tmp=$(mktemp -d "$CACHE/.install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# --foreground-scripts: the postinstall step that puts the native binary in place must run.
npm install --prefix "$tmp" --no-audit --no-fund --no-save --foreground-scripts --loglevel=error \
  "@anthropic-ai/claude-code@$VERSION" >&2
rm -rf "$PREFIX"
mv "$tmp" "$PREFIX"
trap - EXIT
if ! installed; then
  log "installed, but $BIN does not answer --version with $VERSION"
  exit 1
fi
log "ready: $("$BIN" --version)"
echo "$BIN"
