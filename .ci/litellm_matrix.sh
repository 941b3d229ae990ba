#!/usr/bin/env bash
# Run the end-to-end suite against other LiteLLM versions than the one in .venv.
#
#   bash .ci/litellm_matrix.sh                 # the oldest version pyproject.toml allows
#   bash .ci/litellm_matrix.sh 1.90.0 1.98.0   # any versions inside the range
#   bash .ci/litellm_matrix.sh --list          # the range, the oldest, .venv's version, the newest on the index
#
# .venv (made by scripts/test) holds the newest installable release of the range, so
# the newest end is covered by the normal suite; this script covers the rest.
# One venv per version is cached outside the clone (CI clones afresh every run), in
# $LITELLM_MATRIX_CACHE (default /var/cache/litellm-claude-oauth-ci/venvs). A venv is
# rebuilt only when the requirements it was made from change; the plugin itself is
# re-installed (editable, --no-deps, seconds) on every run, so it is this clone's code.
#
# The venv gets the plugin's dependencies with litellm[proxy]==VERSION and the test
# extras except schemathesis (used only by tests/e2e/test_schemathesis.py, not run
# here; 4.32+ needs rich>=13.9.4, which LiteLLM before ~1.82 pins to 13.7.1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

CACHE=${LITELLM_MATRIX_CACHE:-/var/cache/litellm-claude-oauth-ci/venvs}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
# The suite that exercises LiteLLM: proxy startup, chat (plain and streaming), refresh,
# pools and outages, the real SDK/Claude Code clients (/v1/messages), the adapter, and
# what uninstalling the plugin does to the `litellm` command.
TESTS=${LITELLM_MATRIX_TESTS:-"tests/test_litellm_api.py tests/test_uninstall.py tests/e2e/test_proxy.py tests/e2e/test_accounts.py tests/e2e/test_outages.py tests/e2e/test_clients.py"}
SKIP_EXTRAS=${LITELLM_MATRIX_SKIP_EXTRAS:-schemathesis}

log() { printf '[litellm-matrix] %s\n' "$*"; }

# Everything below that reads pyproject.toml, in one place (Python 3.11 has tomllib).
pyproject() {
  "$PYTHON" - "$@" <<'PY'
import sys, tomllib
from pathlib import Path

data = tomllib.loads(Path("pyproject.toml").read_text())["project"]
cmd, *args = sys.argv[1:]
litellm = next(d for d in data["dependencies"] if d.replace(" ", "").startswith("litellm["))
spec = litellm[litellm.index("]") + 1:].replace(" ", "")
if cmd == "spec":
    print(spec)
elif cmd == "oldest":
    print(next(p[2:] for p in spec.split(",") if p.startswith(">=")))
elif cmd == "requirements":  # requirements for VERSION, one a line
    version, skip = args[0], set(args[1].split(","))
    print(f"litellm[proxy]=={version}")
    for dep in data["dependencies"]:
        if dep is not litellm:
            print(dep)
    for dep in data["optional-dependencies"]["test"]:
        name = dep.split("[")[0].split(">")[0].split("<")[0].split("=")[0].split("!")[0].strip()
        if name.lower() not in skip:
            print(dep)
PY
}

in_range() {  # in_range VERSION SPEC
  "$PYTHON" -c 'import sys; from pip._vendor.packaging.specifiers import SpecifierSet as S
sys.exit(0 if sys.argv[1] in S(sys.argv[2]) else 1)' "$1" "$2"
}

newest_on_index() {  # newest release inside SPEC, or nothing when the index is unreachable
  local listing
  listing=$(timeout 60 "$PYTHON" -m pip index versions litellm 2>/dev/null | sed -n 's/^Available versions: //p') || true
  [ -n "$listing" ] || return 0
  "$PYTHON" -c 'import sys; from pip._vendor.packaging.specifiers import SpecifierSet as S
from pip._vendor.packaging.version import Version as V
ok = [v for v in sys.argv[2].split(", ") if not V(v).is_prerelease and v in S(sys.argv[1])]
print(max(ok, key=V) if ok else "")' "$1" "$listing"
}

venv_for() {  # venv_for VERSION: make (or reuse) the cached venv, print its path
  local version=$1 venv="$CACHE/litellm-$1" reqs stamp
  reqs=$(pyproject requirements "$version" "$SKIP_EXTRAS")
  stamp=$(printf '%s\n%s\n' "$("$PYTHON" -V 2>&1)" "$reqs" | sha256sum | cut -c1-16)
  if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.matrix-stamp" 2>/dev/null)" = "$stamp" ]; then
    log "litellm $version: cached venv $venv" >&2
  else
    log "litellm $version: building $venv (a few minutes)" >&2
    rm -rf "$venv"
    mkdir -p "$CACHE"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip >&2
    printf '%s\n' "$reqs" > "$venv/requirements.txt"
    "$venv/bin/python" -m pip install -q -r "$venv/requirements.txt" 2>&1 | grep -v "^WARNING: Location" >&2 || true
    "$venv/bin/python" -c 'import sys, importlib.metadata as m; v = m.version("litellm")
sys.exit(0 if v == sys.argv[1] else f"litellm {v} installed, {sys.argv[1]} wanted")' "$version" >&2
    echo "$stamp" > "$venv/.matrix-stamp"
  fi
  # This clone's code, and its `litellm` script over LiteLLM's (as a user's install has it).
  "$venv/bin/python" -m pip install -q --no-deps -e "$ROOT" 2>&1 | grep -v "^WARNING: Location" >&2 || true
  printf '%s\n' "$venv"
}

run_version() {
  local version=$1 venv started rc
  started=$(date +%s)
  venv=$(venv_for "$version")
  log "litellm $version: $(cd /tmp && "$venv/bin/python" -c 'import importlib.metadata as m; print("installed", m.version("litellm"))')"
  # shellcheck disable=SC2086  # TESTS is a list of paths
  set -- $TESTS
  local existing=()
  for t in "$@"; do [ -e "$t" ] && existing+=("$t"); done
  rc=0
  env LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS=True \
    CLAUDE_OAUTH_TEST_DATABASE_URL="${CLAUDE_OAUTH_TEST_DATABASE_URL:-postgresql://postgres:postgres@127.0.0.1:5432/litellm_claude_oauth_test}" \
    CLAUDE_OAUTH_TEST_REDIS_URL="${CLAUDE_OAUTH_TEST_REDIS_URL:-redis://127.0.0.1:6379/15}" \
    CLAUDE_OAUTH_EXPECT_LITELLM="$version" \
    "$venv/bin/python" -m pytest -p no:cacheprovider -q -ra "${existing[@]}" || rc=$?
  log "litellm $version: pytest exit $rc after $(( $(date +%s) - started ))s"
  return "$rc"
}

SPEC=$(pyproject spec)
OLDEST=$(pyproject oldest)

if [ "${1:-}" = "--list" ]; then
  echo "range:   litellm$SPEC"
  echo "oldest:  $OLDEST"
  [ -x .venv/bin/python ] && echo ".venv:   $(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("litellm"))')"
  newest=$(newest_on_index "$SPEC")
  echo "newest:  ${newest:-unknown (package index unreachable)}"
  exit 0
fi

versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=("$OLDEST")
failed=0
for version in "${versions[@]}"; do
  if ! in_range "$version" "$SPEC"; then
    log "litellm $version is outside the supported range litellm$SPEC"; exit 2
  fi
  run_version "$version" || failed=1
done
exit "$failed"
