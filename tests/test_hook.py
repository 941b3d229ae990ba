"""The request path in isolation: ClaudeOAuthFlow driven like httpx's own auth tests, and the identity block.

Upstream is an ``httpx.MockTransport`` scripted per test; the token endpoint is the
respx fake from conftest, so refreshes rotate real (fake) refresh tokens.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from litellm_claude_oauth.auth_flow import (
    PLACEHOLDER,
    Attempt,
    ClaudeOAuthFlow,
    UntrustedUpstream,
    current_attempt,
    origin,
)
from litellm_claude_oauth.identity import with_identity
from litellm_claude_oauth.manager import TokenManager
from litellm_claude_oauth.routing import Pool
from litellm_claude_oauth.settings import Settings

from .conftest import Clock, FakeTokenEndpoint, logged_in

API = "https://api.anthropic.com"
IDENTITY = "You are Claude Code, Anthropic's official CLI for Claude."
EXPIRED = {"type": "error", "error": {"type": "authentication_error", "message": "OAuth token has expired."}}


def upstream(script: Callable[[httpx.Request, int], httpx.Response]) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        # A snapshot: the flow re-sends the same request object with new headers.
        seen.append(httpx.Request(request.method, request.url, headers=request.headers.copy()))
        return script(request, len(seen))

    return httpx.MockTransport(handle), seen


async def send(flow: ClaudeOAuthFlow, transport: httpx.MockTransport, url: str = f"{API}/v1/messages",
               headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(transport=transport, auth=flow) as client:
        request_headers = {"authorization": f"Bearer {PLACEHOLDER}", **(headers or {})}
        return await client.post(url, json={"model": "claude-sonnet-4-6"}, headers=request_headers)


def flow_for(manager: TokenManager, account: str | None = None, pool: Pool | None = None) -> ClaudeOAuthFlow:
    return ClaudeOAuthFlow(manager, account, pool, origin(API).__eq__)


def bearer(request: httpx.Request) -> str:
    return request.headers.get("authorization", "").removeprefix("Bearer ")


async def test_the_real_token_replaces_the_placeholder_on_the_wire(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint
) -> None:
    await logged_in(manager, token_endpoint)
    transport, seen = upstream(lambda r, n: httpx.Response(200, json={}))
    assert (await send(flow_for(manager), transport)).status_code == 200
    assert bearer(seen[0]) == "sk-ant-oat01-access1"
    assert "x-api-key" not in seen[0].headers


async def test_401_refreshes_and_resends_at_most_twice(manager: TokenManager, token_endpoint: FakeTokenEndpoint) -> None:
    await logged_in(manager, token_endpoint)
    transport, seen = upstream(lambda r, n: httpx.Response(401, json=EXPIRED))
    response = await send(flow_for(manager), transport)
    assert response.status_code == 401
    assert [bearer(r) for r in seen] == ["sk-ant-oat01-access1", "sk-ant-oat01-access2", "sk-ant-oat01-access3"]
    assert token_endpoint.refreshes == 2


async def test_a_second_refresh_fixes_a_token_another_worker_stored_but_the_server_revoked(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint, clock: Clock
) -> None:
    """Issue 10: the first 401 retry used the store's token, revoked too; the flow used to give up."""
    await logged_in(manager, token_endpoint)
    other = TokenManager.from_settings(Settings.from_env(), clock=clock)
    await other.force_refresh()  # another worker (or `litellm claude refresh`) stored access2
    good = "sk-ant-oat01-access3"
    transport, seen = upstream(lambda r, n: httpx.Response(200 if bearer(r) == good else 401, json=EXPIRED))
    assert (await send(flow_for(manager), transport)).status_code == 200
    assert [bearer(r) for r in seen] == ["sk-ant-oat01-access1", "sk-ant-oat01-access2", good]


async def test_a_401_for_a_dead_grant_tells_the_client_to_log_in_again(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint
) -> None:
    await logged_in(manager, token_endpoint)
    token_endpoint.live_refresh.clear()  # revoked upstream
    transport, _ = upstream(lambda r, n: httpx.Response(401, json=EXPIRED))
    response = await send(flow_for(manager), transport)
    assert response.status_code == 401
    assert "litellm claude login" in response.json()["error"]["message"]


async def test_a_401_refresh_cannot_fix_is_not_retried(manager: TokenManager, token_endpoint: FakeTokenEndpoint) -> None:
    await logged_in(manager, token_endpoint)
    body = {"type": "error", "error": {"type": "authentication_error",
                                       "message": "OAuth authentication is currently not supported."}}
    transport, seen = upstream(lambda r, n: httpx.Response(401, json=body))
    assert (await send(flow_for(manager), transport)).status_code == 401
    assert len(seen) == 1 and token_endpoint.refreshes == 0


@pytest.mark.parametrize(
    "base", ["https://API.anthropic.com/v1", "http://127.0.0.1:8080/", "https://[::1]/", "https://bücher.example/x"]
)
def test_a_configured_base_and_a_request_to_it_have_the_same_origin(base: str) -> None:
    """Configured bases are strings, request URLs are parsed: one parser for both, or a trusted base is refused."""
    assert origin(base) == origin(httpx.Request("POST", httpx.URL(base).join("/v1/messages")).url)


async def test_no_token_goes_to_an_untrusted_origin(manager: TokenManager, token_endpoint: FakeTokenEndpoint) -> None:
    """Audit H3: a client-chosen api_base never receives the operator's token."""
    await logged_in(manager, token_endpoint)
    transport, seen = upstream(lambda r, n: httpx.Response(401, json=EXPIRED))
    with pytest.raises(UntrustedUpstream):
        await send(flow_for(manager), transport, url="https://attacker.example/v1/messages")
    assert seen == [] and token_endpoint.refreshes == 0


async def test_a_headerless_429_is_not_quota(manager: TokenManager, token_endpoint: FakeTokenEndpoint) -> None:
    """The identity gate's "Error" 429 must not rest the account (issue 9, audit D4)."""
    await logged_in(manager, token_endpoint)
    gate = {"type": "error", "error": {"type": "rate_limit_error", "message": "Error"}}
    transport, seen = upstream(lambda r, n: httpx.Response(429, json=gate))
    response = await send(flow_for(manager), transport)
    assert response.status_code == 429
    assert "identity system block" in response.json()["error"]["message"]  # one clear line, not "Error"
    assert len(seen) == 1
    assert manager.health.cooldown("default") is None
    assert (await manager.load()).cooldown_until is None


def quota_429(reset: float, *, window: str = "5h", claim: str = "five_hour") -> httpx.Response:
    return httpx.Response(429, json={"type": "error", "error": {"type": "rate_limit_error", "message": "x"}}, headers={
        "anthropic-ratelimit-unified-status": "rejected",
        "anthropic-ratelimit-unified-reset": str(int(reset)),
        "anthropic-ratelimit-unified-representative-claim": claim,
        f"anthropic-ratelimit-unified-{window}-status": "rejected",
        f"anthropic-ratelimit-unified-{window}-reset": str(int(reset)),
        # A period reset far away must not extend the rest (audit D2).
        "anthropic-ratelimit-unified-overage-status": "rejected",
        "anthropic-ratelimit-unified-overage-reset": str(int(reset + 30 * 86400)),
    })


async def test_a_quota_429_rests_the_account_until_the_window_resets(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint
) -> None:
    await logged_in(manager, token_endpoint)
    reset = time.time() + 3600
    transport, _ = upstream(lambda r, n: quota_429(reset))
    response = await send(flow_for(manager), transport)
    assert response.status_code == 429
    assert 3500 < int(response.headers["retry-after"]) <= 3601
    assert (await manager.load()).cooldown_until == int(reset)


async def test_a_pool_resends_a_quota_429_on_the_next_account(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, token_endpoint: FakeTokenEndpoint, clock: Clock
) -> None:
    monkeypatch.setenv("CLAUDE_OAUTH_POOL", "a,b")
    manager = TokenManager.from_settings(Settings.from_env(), clock=clock)
    await logged_in(manager, token_endpoint, "a")  # access1
    await logged_in(manager, token_endpoint, "b")  # access2
    pool = Pool(manager)
    transport, seen = upstream(
        lambda r, n: quota_429(time.time() + 600) if bearer(r) == "sk-ant-oat01-access1" else httpx.Response(200, json={})
    )
    token = current_attempt.set(Attempt(account="a"))
    try:
        assert (await send(flow_for(manager, pool=pool), transport)).status_code == 200
    finally:
        current_attempt.reset(token)
    assert [bearer(r) for r in seen] == ["sk-ant-oat01-access1", "sk-ant-oat01-access2"]
    assert manager.health.cooldown("a") is not None and manager.health.cooldown("b") is None


async def test_a_model_scoped_429_rests_only_that_family(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint
) -> None:
    await logged_in(manager, token_endpoint)
    reset = time.time() + 86400
    transport, _ = upstream(lambda r, n: httpx.Response(429, json={}, headers={
        "anthropic-ratelimit-unified-status": "rejected",
        "anthropic-ratelimit-unified-representative-claim": "seven_day_opus",
        "anthropic-ratelimit-unified-5h-status": "allowed",
        "anthropic-ratelimit-unified-7d-status": "allowed",
        "anthropic-ratelimit-unified-7d_opus-status": "rejected",
        "anthropic-ratelimit-unified-7d_opus-reset": str(int(reset)),
    }))
    await send(flow_for(manager), transport)
    assert manager.health.cooldown("default") is None
    assert manager.health.cooldown("default", "opus") is not None
    assert manager.health.cooldown("default", "sonnet") is None
    assert "opus" in (await manager.load()).model_cooldowns


async def test_a_clients_own_credential_is_forwarded_and_never_touches_the_stored_account(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint
) -> None:
    """Issue 11: a bogus client token must come back 401, not be answered by the operator's account."""
    await logged_in(manager, token_endpoint)
    transport, seen = upstream(lambda r, n: httpx.Response(401, json=EXPIRED))
    token = current_attempt.set(Attempt(account=None, client_credential=("authorization", "Bearer sk-ant-oat01-CLIENT")))
    try:
        assert (await send(flow_for(manager), transport)).status_code == 401
    finally:
        current_attempt.reset(token)
    assert [bearer(r) for r in seen] == ["sk-ant-oat01-CLIENT"]
    assert token_endpoint.refreshes == 0


async def test_a_credential_litellm_forwarded_itself_is_left_alone(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint
) -> None:
    await logged_in(manager, token_endpoint)
    transport, seen = upstream(lambda r, n: httpx.Response(429, json={"type": "error", "error": {"message": "x"}},
                                                           headers={"anthropic-ratelimit-unified-status": "rejected"}))
    await send(flow_for(manager), transport, headers={"authorization": "Bearer sk-ant-oat01-CLIENT"})
    assert [bearer(r) for r in seen] == ["sk-ant-oat01-CLIENT"]
    assert (await manager.load()).cooldown_until is None


@pytest.mark.parametrize("forwarded", [
    {"X-Api-Key": "sk-ant-api03-CLIENT"},  # any case: header names are case-insensitive
    {"authorization": f"Bearer {PLACEHOLDER}", "x-api-key": "sk-ant-api03-CLIENT"},
])
async def test_a_forwarded_api_key_is_seen_in_any_case_and_left_alone(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint, forwarded: dict[str, str]
) -> None:
    """The flow reads the request's headers in one raw pass: names compare lower-cased, as httpx's lookups do."""
    await logged_in(manager, token_endpoint)
    transport, seen = upstream(lambda r, n: httpx.Response(200, json={}))
    async with httpx.AsyncClient(transport=transport, auth=flow_for(manager)) as client:
        await client.post(f"{API}/v1/messages", json={}, headers=forwarded)
    assert seen[0].headers["x-api-key"] == "sk-ant-api03-CLIENT"
    assert "sk-ant-oat01-access" not in seen[0].headers.get("authorization", "")


async def test_an_empty_api_key_header_is_not_a_credential_and_does_not_go_upstream(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint
) -> None:
    await logged_in(manager, token_endpoint)
    transport, seen = upstream(lambda r, n: httpx.Response(200, json={}))
    await send(flow_for(manager), transport, headers={"x-api-key": ""})
    assert bearer(seen[0]) == "sk-ant-oat01-access1"
    assert "x-api-key" not in seen[0].headers


async def test_a_non_ascii_user_agent_keeps_its_text_behind_ours(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint
) -> None:
    await logged_in(manager, token_endpoint)
    transport, seen = upstream(lambda r, n: httpx.Response(200, json={}))
    async with httpx.AsyncClient(transport=transport, auth=flow_for(manager)) as client:
        await client.post(f"{API}/v1/messages", json={}, headers={"user-agent": "tool/1 (café)".encode()})
    agent = dict((k.lower(), v) for k, v in seen[0].headers.raw)[b"user-agent"]
    assert agent.startswith(b"litellm-claude-oauth/") and agent.endswith("tool/1 (café)".encode())


# -- identity block ------------------------------------------------------------------

BILLING = {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.332.abc; cc_entrypoint=cli; cch=12345;"}


@pytest.mark.parametrize(
    ("system", "expected"),
    [
        (None, [IDENTITY]),
        ("Be brief.", [IDENTITY, "Be brief."]),
        (IDENTITY, [IDENTITY]),
        # A caller's block that merely starts with the identity is split: the API wants it whole.
        (IDENTITY + "\nBe brief.", [IDENTITY, "Be brief."]),
        ([{"type": "text", "text": IDENTITY + " Be brief."}], [IDENTITY, "Be brief."]),
        ([{"type": "text", "text": "Be brief."}], [IDENTITY, "Be brief."]),
        ([{"type": "text", "text": IDENTITY}, {"type": "text", "text": "More."}], [IDENTITY, "More."]),
    ],
)
def test_the_identity_is_the_whole_first_block(system: object, expected: list[str]) -> None:
    result = with_identity(system, IDENTITY)
    assert [b["text"] for b in result] == expected


def test_claude_codes_own_system_blocks_are_left_exactly_as_they_are() -> None:
    """Issue 9: we used to put a second identity in front of Claude Code's billing block."""
    system = [BILLING, {"type": "text", "text": IDENTITY, "cache_control": {"type": "ephemeral"}},
              {"type": "text", "text": "Claude Code's long prompt"}]
    assert with_identity(system, IDENTITY) is system
    sdk = [{"type": "text", "text": "You are a Claude agent, built on Anthropic's Claude Agent SDK."}]
    assert with_identity(sdk, IDENTITY) is sdk


def test_cache_control_on_a_split_block_stays_with_the_callers_text() -> None:
    block = {"type": "text", "text": IDENTITY + "\nRules.", "cache_control": {"type": "ephemeral"}}
    result = with_identity([block], IDENTITY)
    assert result[0] == {"type": "text", "text": IDENTITY}
    assert result[1] == {"type": "text", "text": "Rules.", "cache_control": {"type": "ephemeral"}}
    assert json.dumps(block)  # the caller's dict was not mutated
    assert block["text"].startswith(IDENTITY)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 429, 500])
def test_a_remembered_refusal_becomes_the_matching_litellm_error(status: int) -> None:
    from litellm_claude_oauth.litellm_api import refusal_error

    error = refusal_error(status, "Claude OAuth: this model needs the identity block", "m")
    assert getattr(error, "status_code", None) == (400 if status == 500 else status)
    assert "identity block" in str(error)


async def test_a_non_retryable_refusal_is_remembered_for_litellms_retry(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint
) -> None:
    from litellm_claude_oauth.auth_flow import RefusalMemo

    await logged_in(manager, token_endpoint)
    memo = RefusalMemo()
    flow = ClaudeOAuthFlow(manager, None, None, origin(API).__eq__, memo)
    gate = {"type": "error", "error": {"type": "rate_limit_error", "message": "Error"}}
    transport, _ = upstream(lambda r, n: httpx.Response(429, json=gate))
    token = current_attempt.set(Attempt(account=None, call_id="call-1"))
    try:
        await send(flow, transport)
    finally:
        current_attempt.reset(token)
    status, message = memo.get("call-1")
    assert status == 429 and "identity" in message
    assert memo.get("call-1") == (status, message)  # every retry of that request gets it
    assert memo.get("call-2") is None


async def test_our_requests_say_who_we_are(manager: TokenManager, token_endpoint: FakeTokenEndpoint) -> None:
    await logged_in(manager, token_endpoint)
    transport, seen = upstream(lambda r, n: httpx.Response(200, json={}))
    await send(flow_for(manager), transport, headers={"user-agent": "litellm/1.106.12"})
    agent = seen[0].headers["user-agent"]
    assert agent.startswith("litellm-claude-oauth/") and "litellm/1.106.12" in agent
    assert "claude-cli" not in agent and "claude-code" not in agent


async def test_a_ban_like_answer_stops_the_account_everywhere_until_a_new_login(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint
) -> None:
    await logged_in(manager, token_endpoint)
    body = {"type": "error", "error": {"type": "invalid_request_error", "message": "This organization has been disabled."}}
    transport, _ = upstream(lambda r, n: httpx.Response(400, json=body))
    response = await send(flow_for(manager), transport)
    assert response.status_code == 400 and "disabled" in response.text
    stored = await manager.load()
    assert stored.relogin_reason and "disabled" in stored.relogin_reason
    assert manager.health.unusable_reason("default")
    await logged_in(manager, token_endpoint)  # a new login clears it
    assert (await manager.load()).relogin_reason is None


async def test_every_answer_updates_the_accounts_quota_view(manager: TokenManager, token_endpoint: FakeTokenEndpoint) -> None:
    """Issue 12: 200s carry the unified headers too; the request path only parses them."""
    await logged_in(manager, token_endpoint)
    reset = int(time.time()) + 3600
    transport, _ = upstream(lambda r, n: httpx.Response(200, json={}, headers={
        "anthropic-ratelimit-unified-status": "allowed",
        "anthropic-ratelimit-unified-5h-status": "allowed",
        "anthropic-ratelimit-unified-5h-utilization": "0.62",
        "anthropic-ratelimit-unified-5h-reset": str(reset),
    }))
    reads = manager.stats.store_reads
    await send(flow_for(manager), transport)
    assert manager.quotas.utilization("default", "5h") == pytest.approx(0.62)
    assert manager.stats.store_reads == reads  # no store I/O on the request path


async def test_the_hook_registers_its_change_listener_once_however_many_requests(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint
) -> None:
    """Each request re-registered a fresh lambda: the list grew per request and every scan with it."""
    from litellm_claude_oauth.hook import ClaudeOAuthHandler

    await logged_in(manager, token_endpoint)
    handler = ClaudeOAuthHandler(manager)
    for _ in range(5):
        kwargs = {"model": "anthropic/claude-haiku-4-5-20251001", "api_key": "claude-oauth", "messages": []}
        assert await handler.async_pre_call_deployment_hook(kwargs, "acompletion") is not None
    assert len(manager._listeners) == 1


def test_tokens_go_to_the_config_as_it_is_now_even_when_edited_in_place(
    manager: TokenManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trusted bases followed ``id(model_list) ^ len(model_list)``: LiteLLM's upsert of an edited
    deployment keeps the list and its length, so the new api_base was refused and the old one still
    trusted until a restart."""
    from litellm_claude_oauth import litellm_api
    from litellm_claude_oauth.hook import ClaudeOAuthHandler

    handler = ClaudeOAuthHandler(manager)
    assert handler.trusts(origin(manager.settings.api_base))  # SDK use: no router, CLAUDE_API_BASE only
    assert not handler.trusts(origin("http://127.0.0.1:4001"))

    def deployment(base: str, key: str = "claude-oauth") -> dict[str, Any]:
        return {"model_name": "m", "litellm_params": {"model": "anthropic/x", "api_key": key, "api_base": base}}

    router = SimpleNamespace(model_list=[deployment("http://127.0.0.1:4001/"), deployment("http://other:80", "sk-x")])
    monkeypatch.setattr(litellm_api, "proxy_router", lambda: router)
    assert handler.trusts(origin("http://127.0.0.1:4001"))
    assert not handler.trusts(origin("http://other"))  # a deployment with its own key is not ours to trust
    router.model_list[0] = deployment("http://127.0.0.1:4002")  # /model/update: same list, same length
    assert handler.trusts(origin("http://127.0.0.1:4002"))
    assert not handler.trusts(origin("http://127.0.0.1:4001"))
    assert handler.trusts(origin(manager.settings.api_base))


@pytest.mark.parametrize(
    ("headers", "forwarded"),
    [
        ({"Authorization": "Bearer sk-ant-oat01-MINE", "X-LiteLLM-Api-Key": "sk-litellm"},
         ("authorization", "Bearer sk-ant-oat01-MINE")),
        ({"x-api-key": "sk-ant-api03-MINE", "authorization": "Bearer sk-litellm"}, ("x-api-key", "sk-ant-api03-MINE")),
        ({"Authorization": "Bearer sk-ant-oat01-MINE"}, None),  # no x-litellm-api-key: Authorization is the LiteLLM key
        ({"authorization": "Bearer sk-litellm"}, None),
    ],
)
async def test_the_hook_forwards_a_callers_own_credential_whatever_the_header_case(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint, headers: dict[str, str], forwarded: tuple[str, str] | None
) -> None:
    from litellm_claude_oauth.hook import ClaudeOAuthHandler

    await logged_in(manager, token_endpoint)
    kwargs = {"model": "anthropic/claude-haiku-4-5-20251001", "api_key": "claude-oauth", "messages": [],
              "secret_fields": {"raw_headers": headers}, "metadata": {}}
    token = current_attempt.set(None)
    try:
        await ClaudeOAuthHandler(manager).async_pre_call_deployment_hook(kwargs, "acompletion")
        attempt = current_attempt.get()
    finally:
        current_attempt.reset(token)
    assert attempt is not None and attempt.client_credential == forwarded
    assert (attempt.account is None) == (forwarded is not None)  # a stored account only without the caller's own


async def test_the_flow_sends_the_tokens_the_hook_chose_without_looking_them_up_again(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    await logged_in(manager, token_endpoint)
    chosen = await manager.get_tokens("default")

    async def no_second_lookup(account: str | None = None) -> None:
        raise AssertionError("the hook already fetched this attempt's tokens")

    monkeypatch.setattr(manager, "get_tokens", no_second_lookup)
    transport, seen = upstream(lambda r, n: httpx.Response(200, json={}))
    token = current_attempt.set(Attempt(account="default", tokens=chosen))
    try:
        assert (await send(flow_for(manager), transport)).status_code == 200
    finally:
        current_attempt.reset(token)
    assert bearer(seen[0]) == chosen.access
    assert "sk-ant" not in repr(Attempt(account="default", tokens=chosen))


async def test_the_hook_restarts_a_dead_change_feed_within_its_upkeep_interval(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Background work is checked once per loop and then every few seconds, not on every request."""
    from litellm_claude_oauth import hook
    from litellm_claude_oauth.hook import ClaudeOAuthHandler

    await logged_in(manager, token_endpoint)
    handler = ClaudeOAuthHandler(manager)
    now = [1000.0]
    monkeypatch.setattr(hook.time, "monotonic", lambda: now[0])
    checks: list[int] = []
    monkeypatch.setattr(manager, "listen_for_changes", lambda on_change=None: checks.append(1))

    async def request() -> None:
        kwargs = {"model": "anthropic/claude-haiku-4-5-20251001", "api_key": "claude-oauth", "messages": []}
        assert await handler.async_pre_call_deployment_hook(kwargs, "acompletion") is not None

    for _ in range(3):
        await request()
    assert len(checks) == 1
    now[0] += hook._UPKEEP_SECONDS
    await request()
    assert len(checks) == 2


def test_our_success_logging_gets_the_payload_as_is_never_a_redacted_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin logs nothing: LiteLLM's per-success redaction copy would be built only to be dropped."""
    import litellm

    from litellm_claude_oauth.hook import ClaudeOAuthHandler

    monkeypatch.setattr(litellm, "standard_logging_payload_excluded_fields", ["messages"], raising=False)
    details = {"standard_logging_object": {"messages": ["hi"], "model": "m"}, "litellm_params": {}}
    assert ClaudeOAuthHandler().redact_standard_logging_payload_from_model_call_details(details) is details
