#!/usr/bin/env bash
# End-to-end test of LiteLLM + Claude OAuth (docker-compose.test-oauth.yml).
#
#   ./test_oauth_docker.sh                      build, start, log in (prompts), test
#   ./test_oauth_docker.sh --url http://127.0.0.1:4000 --key KEY --non-interactive
#   ./test_oauth_docker.sh --cleanup            docker compose down -v
#
# In Docker mode it also runs the guide's checks of the services (psql \dt in
# litellm-db-1, redis-cli ping in litellm-redis-1) and logs in with
# `docker exec litellm-litellm-1 litellm claude login/callback/status`.
# The master key never appears on a command line: curl reads it from a file.
#
# Exit codes: 0 all tests passed, 1 a test failed, 2 missing prerequisite or bad usage.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

COMPOSE_FILE=docker-compose.test-oauth.yml
ENV_FILE=.env.oauth
ENV_EXAMPLE=.env.oauth.example
DEFAULT_KEY=sk-oauth-test-1234
SEED_MODELS=(claude-opus-4.1 claude-opus-4 claude-sonnet-4 claude-sonnet-3.7 claude-haiku-3.5)
APP_CONTAINER=litellm-litellm-1
DB_CONTAINER=litellm-db-1
REDIS_CONTAINER=litellm-redis-1
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-120}
ACCOUNT=${USER_ID:-default}

URL=""
BUILD=1
CLEANUP=0
KEY=${LITELLM_MASTER_KEY:-}
INTERACTIVE=1
MODEL=claude-haiku-4.5
OVERRIDES=()
COMPOSE=()
COMPOSE_FILES=()
PASSED=0 FAILED=0
HTTP_CODE=000 BODY=""
TMP_DIR=$(mktemp -d)
trap 'rm -rf "$TMP_DIR"' EXIT

usage() {
    cat <<EOF
Usage: $0 [options]

  --url URL          test an already running proxy (skips every docker step)
  --no-build         start the containers without rebuilding the image
  --cleanup          docker compose down -v (containers, network, volumes) and exit
  --override FILE    another compose file layered on $COMPOSE_FILE (repeatable;
                     CI adds .ci/docker-compose.ci.yml: fake upstream)
  --key KEY          master key (default: \$LITELLM_MASTER_KEY, LITELLM_MASTER_KEY
                     in $ENV_FILE, or $DEFAULT_KEY); a command line is visible
                     to other local users, so prefer the variable or the file
  --model MODEL      model for the chat and streaming tests (default: $MODEL)
  --non-interactive  never prompt; when not logged in use \$OAUTH_CODE (CODE#STATE),
                     or POST the authorization URL to \$FAKE_AUTHORIZE_URL (a fake
                     Anthropic server answering {"code_with_state": ...})
  -h, --help         this help

Environment: HEALTH_TIMEOUT (seconds, default 120), USER_ID (account, default "default"),
LITELLM_PORT (published port, default 4000).
EOF
}

# --- output ---------------------------------------------------------------------

step() { printf '\n== %s\n' "$*"; }
info() { printf '   %s\n' "$*"; }
ok() { printf '✅ %s\n' "$*"; } # not counted: prerequisites and setup
pass() { PASSED=$((PASSED + 1)); printf '✅ %s\n' "$*"; }
fail() { FAILED=$((FAILED + 1)); printf '❌ %s\n' "$*"; }
die() { local code=$1; shift; printf '❌ %s\n' "$*" >&2; exit "$code"; }
show_body() { info "HTTP $HTTP_CODE: $(printf '%s' "$BODY" | head -c 400)"; }

# --- JSON (jq, or python3 when jq is missing) -------------------------------------

# json OP [ARGS] reads JSON on stdin. OPs: valid; get KEY; status ACCOUNT (prints
# valid|expired|logged_out|unknown); model_ids; content; obj K V [K V...] (no stdin).
JSON_PY='
import json, sys
op, args = sys.argv[1], sys.argv[2:]
if op == "obj":
    print(json.dumps(dict(zip(args[::2], args[1::2])))); sys.exit(0)
try:
    d = json.load(sys.stdin)
except ValueError:
    sys.exit(1)
if op == "get":
    v = d.get(args[0]) if isinstance(d, dict) else None
    print("" if v is None else v if isinstance(v, str) else json.dumps(v))
elif op == "status":
    accts = d.get("accounts", [d]) if isinstance(d, dict) else []
    a = next((x for x in accts if x.get("account") == args[0]), accts[0] if accts else {})
    print("valid" if a.get("valid") is True else "expired" if a.get("logged_in") is True
          else "logged_out" if (not accts or a.get("logged_in") is False) else "unknown")
elif op == "model_ids":
    print("\n".join(str(m.get("id")) for m in d.get("data", [])))
elif op == "content":
    print((((d.get("choices") or [{}])[0].get("message") or {}).get("content")) or "")
'
# shellcheck disable=SC2016 # jq variables, not shell ones
JQ_STATUS='(.accounts // [.]) as $a
  | ([$a[] | select(.account == $acct)][0] // $a[0] // {}) as $s
  | if $s.valid == true then "valid" elif $s.logged_in == true then "expired"
    elif ($a | length) == 0 or $s.logged_in == false then "logged_out" else "unknown" end'

json() {
    local op=$1; shift
    if command -v jq >/dev/null 2>&1; then
        case $op in
            valid) jq -e . >/dev/null 2>&1 ;;
            get) jq -r --arg k "$1" '.[$k] // empty | if type == "string" then . else tojson end' ;;
            status) jq -r --arg acct "$1" "$JQ_STATUS" ;;
            model_ids) jq -r '.data[]?.id' ;;
            content) jq -r '.choices[0].message.content // empty' ;;
            obj)
                # Each value through --arg, which takes it verbatim: jq 1.6 reads a positional
                # argument that starts with "-" as an option, and OAuth codes may ("--EeJY…").
                local named=() i=0
                while (($# >= 2)); do named+=(--arg "k$i" "$1" --arg "v$i" "$2"); shift 2; i=$((i + 1)); done
                jq -nc "${named[@]}" '$ARGS.named as $n
                    | reduce range(0; ($n | length) / 2) as $i ({}; .[$n["k\($i)"]] = $n["v\($i)"])' ;;
        esac
    else
        python3 -c "$JSON_PY" "$op" "$@"
    fi
}
body_json() { printf '%s' "$BODY" | json "$@"; }

# --- HTTP ---------------------------------------------------------------------------

# request [--no-auth] METHOD PATH [JSON]: sets HTTP_CODE and BODY.
request() {
    local auth=1
    if [[ $1 == --no-auth ]]; then auth=0; shift; fi
    local method=$1 path=$2 data=${3:-}
    local args=(-sS -o "$TMP_DIR/body" -w '%{http_code}' -X "$method" --max-time 120)
    if ((auth)); then args+=(-H "@$AUTH_HEADER"); fi
    if [[ -n $data ]]; then args+=(-H 'Content-Type: application/json' --data "$data"); fi
    : >"$TMP_DIR/body"
    HTTP_CODE=$(curl "${args[@]}" "$URL$path" 2>"$TMP_DIR/curl.err") || HTTP_CODE=000
    BODY=$(cat "$TMP_DIR/body")
    if [[ $HTTP_CODE == 000 ]]; then BODY=$(cat "$TMP_DIR/curl.err"); fi
}

# --- steps --------------------------------------------------------------------------

check_prerequisites() {
    step "Checking prerequisites"
    command -v curl >/dev/null 2>&1 || die 2 "curl is required"
    ok "curl: $(curl --version | head -n1 | cut -d' ' -f1-2)"
    if command -v jq >/dev/null 2>&1; then
        ok "jq: $(jq --version)"
    elif command -v python3 >/dev/null 2>&1; then
        ok "python3 (for JSON; jq not found)"
    else
        die 2 "jq or python3 is required to read JSON"
    fi
    [[ -n $URL ]] && return 0
    command -v docker >/dev/null 2>&1 || die 2 "docker is required (or test a running proxy with --url)"
    if docker compose version >/dev/null 2>&1; then
        COMPOSE=(docker compose)
    elif command -v docker-compose >/dev/null 2>&1; then
        COMPOSE=(docker-compose)
    else
        die 2 "Docker Compose v2 is required ('docker compose' or 'docker-compose')"
    fi
    ok "compose: $("${COMPOSE[@]}" version 2>/dev/null | head -n1)"
    ((CLEANUP)) && return 0
    docker info >/dev/null 2>&1 || die 2 "cannot reach the Docker engine (is it running? may you use it?)"
    ok "Docker engine reachable"
    [[ -f config.oauth.yaml ]] || die 2 "config.oauth.yaml not found in $PWD"
    [[ -f $COMPOSE_FILE ]] || die 2 "$COMPOSE_FILE not found in $PWD"
}

# The guide's checks of the two backing services, from inside their containers.
test_services() {
    step "Checking the database and Redis containers"
    local out
    if out=$(docker exec "$DB_CONTAINER" psql -U llmproxy -d litellm -c '\dt' 2>&1); then
        pass "docker exec $DB_CONTAINER psql -U llmproxy -d litellm -c '\dt'"
    else
        fail "docker exec $DB_CONTAINER psql ... -c '\dt'"; info "$(head -c 400 <<<"$out")"
    fi
    if [[ -z $(env_value REDIS_PASSWORD) ]]; then
        out=$(docker exec "$REDIS_CONTAINER" redis-cli ping 2>&1) || true
    else # REDISCLI_AUTH: the password stays out of the process list.
        # shellcheck disable=SC2016 # expanded in the container
        out=$(docker exec "$REDIS_CONTAINER" sh -c 'REDISCLI_AUTH="$REDIS_PASSWORD" exec redis-cli ping' 2>&1) || true
    fi
    if [[ $out == *PONG* ]]; then
        pass "docker exec $REDIS_CONTAINER redis-cli ping: PONG"
    else
        fail "docker exec $REDIS_CONTAINER redis-cli ping: $out"
    fi
}

random_hex32() {
    openssl rand -hex 32 2>/dev/null || od -An -tx1 -N32 /dev/urandom | tr -d ' \n'
}

# .env.oauth from the example, with a fresh master key and encryption key (the
# example's master key is published in the guide), readable by its owner only.
ensure_env_file() {
    if [[ ! -f $ENV_FILE ]]; then
        [[ -f $ENV_EXAMPLE ]] || die 2 "neither $ENV_FILE nor $ENV_EXAMPLE exists"
        local master enc
        master=sk-$(random_hex32)
        enc=$(random_hex32)
        [[ ${#enc} == 64 && ${#master} == 67 ]] || die 2 "could not generate random keys (openssl or /dev/urandom)"
        (
            umask 077
            awk -v master="$master" -v enc="$enc" '
                /^LITELLM_MASTER_KEY=/ { print "LITELLM_MASTER_KEY=" master; next }
                /^CLAUDE_TOKEN_ENCRYPTION_KEY=/ { print "CLAUDE_TOKEN_ENCRYPTION_KEY=" enc; next }
                { print }' "$ENV_EXAMPLE" >"$ENV_FILE"
        )
        ok "created $ENV_FILE (mode 0600) with a new LITELLM_MASTER_KEY and CLAUDE_TOKEN_ENCRYPTION_KEY"
    elif ! grep -Eq '^CLAUDE_TOKEN_ENCRYPTION_KEY=[0-9a-fA-F]{64}$' "$ENV_FILE"; then
        info "note: $ENV_FILE has no CLAUDE_TOKEN_ENCRYPTION_KEY; tokens are stored unencrypted"
    fi
    if [[ -z $KEY ]]; then
        KEY=$(sed -n 's/^LITELLM_MASTER_KEY=//p' "$ENV_FILE" | tr -d '\r' | tail -n1)
    fi
    if [[ -z $KEY ]]; then die 2 "$ENV_FILE has no LITELLM_MASTER_KEY (the proxy refuses to start without one)"; fi
    if [[ $KEY == "$DEFAULT_KEY" ]]; then
        info "note: LITELLM_MASTER_KEY is the published example key; the proxy is on ${LITELLM_BIND:-127.0.0.1} only"
    fi
}

# env_value NAME: NAME from the shell, else from $ENV_FILE.
env_value() {
    if [[ -n ${!1:-} ]]; then printf '%s' "${!1}"; return; fi
    [[ -f $ENV_FILE ]] && sed -n "s/^$1=//p" "$ENV_FILE" | tr -d '\r' | tail -n1
    return 0
}

# curl reads the Authorization header from this file (-H @file), so the key
# shows up in no process list.
write_auth_header() {
    AUTH_HEADER=$TMP_DIR/auth-header
    (umask 077 && printf 'Authorization: Bearer %s\n' "$KEY" >"$AUTH_HEADER")
}

compose() { "${COMPOSE[@]}" "${COMPOSE_FILES[@]}" "$@"; }

start_stack() {
    step "Building and starting containers"
    local args=("${COMPOSE_FILES[@]}" --env-file "$ENV_FILE" up -d)
    ((BUILD)) && args+=(--build)
    info "${COMPOSE[*]} ${args[*]}"
    if "${COMPOSE[@]}" "${args[@]}"; then
        ok "containers started"
    else
        fail "docker compose up failed"
        finish
    fi
}

wait_for_health() {
    step "Waiting for $URL/health/liveliness (up to ${HEALTH_TIMEOUT}s)"
    local waited=0
    until curl -fsS -o /dev/null --max-time 5 "$URL/health/liveliness" 2>/dev/null; do
        if ((waited >= HEALTH_TIMEOUT)); then
            fail "proxy not healthy after ${HEALTH_TIMEOUT}s"
            if ((${#COMPOSE[@]})); then
                compose logs --tail 50 litellm || true
            fi
            finish
        fi
        sleep 2
        waited=$((waited + 2))
    done
    pass "proxy is healthy (${waited}s)"
}

test_oauth_endpoints() {
    step "Testing OAuth endpoints"
    request GET /auth/claude/oauth/status
    if [[ $HTTP_CODE == 200 ]] && body_json valid; then
        pass "GET /auth/claude/oauth/status returns JSON (state: $(body_json status "$ACCOUNT"))"
    else
        fail "GET /auth/claude/oauth/status"; show_body
    fi
    request GET /auth/claude/oauth/start
    if [[ $HTTP_CODE == 200 && -n $(body_json get authorization_url) && -n $(body_json get state) ]]; then
        pass "GET /auth/claude/oauth/start returns authorization_url and state"
    else
        fail "GET /auth/claude/oauth/start"; show_body
    fi
    local path
    for path in /auth/claude/oauth/status /auth/claude/oauth/start; do
        request --no-auth GET "$path"
        if [[ $HTTP_CODE == 401 || $HTTP_CODE == 403 ]]; then
            pass "GET $path without the key is refused ($HTTP_CODE)"
        else
            fail "GET $path without the key returned $HTTP_CODE (want 401/403)"
        fi
    done
}

login_state() {
    request GET /auth/claude/oauth/status
    case $HTTP_CODE in
        200) body_json status "$ACCOUNT" ;;
        401 | 403) echo "refused (HTTP $HTTP_CODE: wrong --key?)" ;;
        *) echo "unknown (HTTP $HTTP_CODE)" ;;
    esac
}

# Reads CODE#STATE from $OAUTH_CODE, the fake authorize endpoint, or the user.
obtain_code() {
    local auth_url=$1 input=""
    if [[ -n ${OAUTH_CODE:-} ]]; then
        info "using \$OAUTH_CODE" >&2
        input=$OAUTH_CODE
    elif [[ -n ${FAKE_AUTHORIZE_URL:-} ]]; then
        info "authorizing through $FAKE_AUTHORIZE_URL" >&2
        input=$(curl -fsS --max-time 30 -H 'Content-Type: application/json' \
            --data "$(json obj authorize_url "$auth_url")" "$FAKE_AUTHORIZE_URL" |
            json get code_with_state) || input=""
    elif ((INTERACTIVE)); then
        printf '\n   1. Open this URL, sign in to Claude and authorize:\n\n      %s\n\n' "$auth_url" >&2
        printf '   2. Copy the code shown on the callback page (CODE#STATE).\n\n' >&2
        read -r -p "Paste the code (CODE#STATE): " input || input=""
    fi
    printf '%s' "$input"
}

ensure_logged_in() {
    step "Checking Claude login"
    local state
    state=$(login_state)
    if [[ $state == valid ]]; then
        pass "logged in, token valid"
        return 0
    fi
    if [[ $state == refused* ]]; then fail "GET /auth/claude/oauth/status: $state"; return 1; fi
    if [[ $state == expired ]]; then
        info "token expired: trying POST /auth/claude/oauth/refresh"
        request POST /auth/claude/oauth/refresh '{}'
        if [[ $(login_state) == valid ]]; then pass "token refreshed"; return 0; fi
        info "refresh failed (HTTP $HTTP_CODE); logging in again"
    fi
    if ((!INTERACTIVE)) && [[ -z ${OAUTH_CODE:-} && -z ${FAKE_AUTHORIZE_URL:-} ]]; then
        fail "not logged in, and --non-interactive without OAUTH_CODE or FAKE_AUTHORIZE_URL"
        info "log in first: docker exec -it $APP_CONTAINER litellm claude login"
        return 1
    fi
    if ((${#COMPOSE[@]})); then cli_login; else api_login; fi || return 1
    state=$(login_state)
    if [[ $state == valid ]]; then pass "status: logged in, token valid"; else fail "status after login: $state"; return 1; fi
}

# Docker mode: the guide's method 1, `litellm claude login`, then `callback`
# with the pasted CODE#STATE, each in its own `docker exec`.
cli_login() {
    local out auth_url input
    if ! out=$(docker exec "$APP_CONTAINER" litellm claude login --no-browser --json --account "$ACCOUNT" 2>"$TMP_DIR/cli.err"); then
        fail "docker exec $APP_CONTAINER litellm claude login"; info "$(head -c 400 "$TMP_DIR/cli.err")"; return 1
    fi
    auth_url=$(printf '%s' "$out" | json get authorization_url || true)
    if [[ -z $auth_url ]]; then fail "litellm claude login printed no authorization_url"; info "$(head -c 400 <<<"$out")"; return 1; fi
    pass "docker exec $APP_CONTAINER litellm claude login: authorization URL"
    input=$(obtain_code "$auth_url")
    input=${input//[[:space:]]/}
    if [[ -z $input ]]; then fail "no authorization code"; return 1; fi
    if docker exec "$APP_CONTAINER" litellm claude callback --account "$ACCOUNT" -- "$input" >"$TMP_DIR/cli.out" 2>&1; then
        pass "docker exec $APP_CONTAINER litellm claude callback CODE#STATE"
    else
        fail "docker exec $APP_CONTAINER litellm claude callback"; info "$(head -c 400 "$TMP_DIR/cli.out")"; return 1
    fi
}

# Without Docker: the guide's method 2, through /auth/claude/oauth/start and /exchange.
api_login() {
    request GET /auth/claude/oauth/start
    local auth_url login_state_id
    auth_url=$(body_json get authorization_url || true)
    login_state_id=$(body_json get state || true)
    if [[ -z $auth_url ]]; then fail "could not start a login"; show_body; return 1; fi
    local input code code_state
    input=$(obtain_code "$auth_url")
    input=${input//[[:space:]]/}
    if [[ -z $input ]]; then fail "no authorization code"; return 1; fi
    if [[ $input =~ [?\&]code=([^&#]+) ]]; then # whole callback URL
        code=${BASH_REMATCH[1]}
        code_state=$login_state_id
        if [[ $input =~ [?\&]state=([^&#]+) ]]; then code_state=${BASH_REMATCH[1]}; fi
    elif [[ $input == *'#'* ]]; then
        code=${input%%#*}
        code_state=${input#*#}
    else
        code=$input
        code_state=$login_state_id
    fi
    request POST /auth/claude/oauth/exchange "$(json obj code "$code" state "$code_state")"
    if [[ $HTTP_CODE == 200 ]]; then
        pass "POST /auth/claude/oauth/exchange"
    else
        fail "POST /auth/claude/oauth/exchange"; show_body; return 1
    fi
}

# Docker mode: `litellm claude status` in the container agrees with the proxy.
test_cli_status() {
    step "docker exec $APP_CONTAINER litellm claude status"
    local out rc=0
    out=$(docker exec "$APP_CONTAINER" litellm claude status --account "$ACCOUNT" 2>&1) || rc=$?
    if ((rc == 0)) && grep -q 'Valid' <<<"$out"; then
        pass "litellm claude status: valid (exit 0)"
    else
        fail "litellm claude status (exit $rc)"; info "$(head -c 600 <<<"$out")"
    fi
}

test_models() {
    step "GET /v1/models"
    request GET /v1/models
    if [[ $HTTP_CODE != 200 ]]; then fail "GET /v1/models"; show_body; return 0; fi
    local ids missing=() model
    ids=$(body_json model_ids || true)
    if grep -Fxq -- "$MODEL" <<<"$ids"; then
        pass "GET /v1/models lists $(grep -c . <<<"$ids") models, $MODEL among them"
    else
        fail "$MODEL is not in /v1/models"; show_body
    fi
    # The guide's names; Anthropic has retired the models behind them, so a
    # config may drop them: informational only.
    for model in "${SEED_MODELS[@]}"; do
        grep -Fxq -- "$model" <<<"$ids" || missing+=("$model")
    done
    if ((${#missing[@]})); then info "not listed (the guide's older names): ${missing[*]}"; fi
}

test_chat() {
    step "Chat completion ($MODEL)"
    request POST /v1/chat/completions "$(printf '{"model":"%s","messages":[{"role":"user","content":"Hello, how are you?"}],"max_tokens":50}' "$MODEL")"
    local content=""
    if [[ $HTTP_CODE == 200 ]]; then content=$(body_json content || true); fi
    if [[ -n $content ]]; then
        pass "chat completion: $(printf '%s' "$content" | tr '\n' ' ' | head -c 80)"
    else
        fail "chat completion"; show_body
    fi
}

test_streaming() {
    step "Streaming chat completion ($MODEL)"
    local out=$TMP_DIR/stream code
    : >"$out"
    code=$(curl -sS -N --max-time 120 -o "$out" -w '%{http_code}' -X POST "$URL/v1/chat/completions" \
        -H "@$AUTH_HEADER" -H 'Content-Type: application/json' \
        --data "$(printf '{"model":"%s","messages":[{"role":"user","content":"Count to 5"}],"max_tokens":50,"stream":true}' "$MODEL")" \
        2>"$TMP_DIR/curl.err") || code=000
    local chunks
    chunks=$(grep -c '^data: {' "$out" || true)
    if [[ $code == 200 ]] && ((chunks > 0)) && grep -q '^data: \[DONE\]' "$out"; then
        pass "streaming: $chunks data: chunks, then [DONE]"
    else
        fail "streaming (HTTP $code, $chunks chunks, [DONE] $(grep -q '\[DONE\]' "$out" && echo seen || echo missing))"
        info "$(head -c 400 "$out")"
    fi
}

finish() {
    echo
    if ((FAILED && ${#COMPOSE[@]})); then echo "Logs: docker logs litellm-litellm-1 --tail 100"; fi
    if ((${#COMPOSE[@]})); then echo "Stop everything with: $0 --cleanup"; fi
    echo "$PASSED passed, $FAILED failed"
    ((FAILED == 0)) && exit 0
    exit 1
}

# --- main ---------------------------------------------------------------------------

parse_args() {
    while (($#)); do
        case $1 in
            --url | --key | --model | --override)
                [[ $# -ge 2 ]] || die 2 "$1 needs a value"
                case $1 in
                    --url) URL=$2 ;;
                    --key) KEY=$2 ;;
                    --model) MODEL=$2 ;;
                    --override) [[ -f $2 ]] || die 2 "--override: $2 not found"; OVERRIDES+=("$2") ;;
                esac
                shift ;;
            --no-build) BUILD=0 ;;
            --cleanup) CLEANUP=1 ;;
            --non-interactive) INTERACTIVE=0 ;;
            -h | --help) usage; exit 0 ;;
            *) usage >&2; die 2 "unknown option: $1" ;;
        esac
        shift
    done
    if ((CLEANUP)) && [[ -n $URL ]]; then die 2 "--cleanup and --url do not go together"; fi
    if ((${#OVERRIDES[@]})) && [[ -n $URL ]]; then die 2 "--override and --url do not go together"; fi
    COMPOSE_FILES=(-f "$COMPOSE_FILE")
    local file
    for file in "${OVERRIDES[@]}"; do COMPOSE_FILES+=(-f "$file"); done
}

main() {
    parse_args "$@"
    check_prerequisites
    if ((CLEANUP)); then
        step "Cleaning up"
        compose down -v --remove-orphans
        ok "containers, network and volumes removed"
        exit 0
    fi
    if [[ -z $URL ]]; then
        ensure_env_file
        URL="http://127.0.0.1:${LITELLM_PORT:-4000}"
        start_stack
    fi
    URL=${URL%/}
    KEY=${KEY:-$DEFAULT_KEY}
    write_auth_header
    wait_for_health
    if ((${#COMPOSE[@]})); then test_services; fi
    test_oauth_endpoints
    if ensure_logged_in; then
        if ((${#COMPOSE[@]})); then test_cli_status; fi
        test_models
        test_chat
        test_streaming
    else
        info "skipping the API tests: not logged in"
    fi
    finish
}

# Sourced (the tests call its helpers), it only defines them.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
