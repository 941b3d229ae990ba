#!/usr/bin/env bash
# Dependency vulnerability audit of an installed environment (default .venv) with pip-audit.
#
#   bash .ci/audit.sh            # audit .venv
#   VENV=/path/to/venv bash .ci/audit.sh
#
# The advisory source is checked first, with the request pip-audit itself makes: PyPI's
# per-release JSON (which carries the release's known vulnerabilities), then OSV. When
# neither answers, the audit cannot run: it says so in one line and exits 0, since no
# verdict is better than a false "no vulnerabilities". A finding exits 1.
# pip-audit runs from its own venv, cached outside the clone, so it adds nothing to .venv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-.venv}
TOOLS=${AUDIT_TOOLS_VENV:-/var/cache/litellm-claude-oauth-ci/tools/pip-audit}
PIP_AUDIT_VERSION=${PIP_AUDIT_VERSION:-2.10.1}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

reachable() { curl -fsS -o /dev/null --max-time 15 "$@" 2>/dev/null; }

# A release that certainly exists: the environment's own pip.
probe_version=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("pip"))')
if reachable "https://pypi.org/pypi/pip/$probe_version/json"; then
  service=pypi
elif reachable -X POST -H 'Content-Type: application/json' \
    -d "{\"package\": {\"name\": \"pip\", \"ecosystem\": \"PyPI\"}, \"version\": \"$probe_version\"}" \
    https://api.osv.dev/v1/query; then
  service=osv
else
  echo "[audit] skipped: no advisory source reachable from here (PyPI's per-release JSON and api.osv.dev both failed)"
  exit 0
fi

if [ ! -x "$TOOLS/bin/pip-audit" ] || [ "$("$TOOLS/bin/pip-audit" --version 2>/dev/null)" != "pip-audit $PIP_AUDIT_VERSION" ]; then
  rm -rf "$TOOLS"
  mkdir -p "$(dirname "$TOOLS")"
  "$PYTHON" -m venv "$TOOLS"
  "$TOOLS/bin/python" -m pip install -q "pip-audit==$PIP_AUDIT_VERSION" 2>&1 | grep -v "^WARNING: Location" || true
fi

frozen=$(mktemp)
trap 'rm -f "$frozen"' EXIT
# Our own package is not on PyPI; everything else is audited at its installed version.
"$VENV/bin/python" -m pip freeze --exclude-editable --all | grep -iv '^litellm-claude-oauth' > "$frozen"
echo "[audit] $(wc -l < "$frozen") packages of $VENV against $service advisories"
exec "$TOOLS/bin/pip-audit" --vulnerability-service "$service" --requirement "$frozen" --no-deps --disable-pip --progress-spinner off
