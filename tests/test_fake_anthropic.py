"""The fake Anthropic server behaves like the live OAuth + Messages endpoints of late 2026 (protocol-2026.md §2, §5)."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
import yaml

from tests.fake_anthropic import CLAUDE_CODE_SYSTEM, CLIENT_ID, REFUSALS, FakeAnthropic, OAuthState, catalog, s256

ROOT = Path(__file__).resolve().parent.parent
REDIRECT_URI = "https://platform.claude.com/oauth/code/callback"
SCOPE = "org:create_api_key user:profile user:inference"
EXPIRED = "OAuth token has expired. Please obtain a new token or refresh your existing token."
IDENTITY_GATE = {"type": "error", "error": {"type": "rate_limit_error", "message": "Error"}}
UNIFIED = "anthropic-ratelimit-unified-"
MODEL = "claude-sonnet-4-6"
IDENTITY_BLOCK = [{"type": "text", "text": CLAUDE_CODE_SYSTEM}]


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(port=0) as server:
        yield server


@pytest.fixture
def client(fake: FakeAnthropic) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.url, timeout=10, headers={"User-Agent": "litellm-claude-oauth/test"}) as c:
        yield c


def new_state() -> str:
    return secrets.token_urlsafe(32)  # 43 characters, as the authorize page wants


def authorize_query(challenge: str, state_: str, **override: str) -> dict[str, str]:
    query = {
        "code": "true",
        "client_id": CLIENT_ID,
        "response_type": "code",
        "redirect_uri": REDIRECT_URI,
        "scope": SCOPE,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": state_,
        **override,
    }
    return {k: v for k, v in query.items() if v != ""}


def authorize_url(base: str, challenge: str, state_: str, **override: str) -> str:
    return f"{base}?{urlencode(authorize_query(challenge, state_, **override))}"


def exchange_body(code: str, state: str, verifier: str, redirect_uri: str = REDIRECT_URI) -> dict[str, str]:
    return {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "client_id": CLIENT_ID,
        "code_verifier": verifier,
        "state": state,
    }


def refresh_body(token: str) -> dict[str, str]:
    return {"grant_type": "refresh_token", "refresh_token": token, "client_id": CLIENT_ID}


def login(fake: FakeAnthropic, client: httpx.Client) -> dict[str, Any]:
    verifier, state = secrets.token_urlsafe(48), new_state()
    code, _ = fake.authorize(authorize_url("https://claude.ai/oauth/authorize", s256(verifier), state))
    response = client.post("/v1/oauth/token", json=exchange_body(code, state, verifier))
    assert response.status_code == 200, response.text
    return response.json()


def api_headers(token: str, beta: str = "oauth-2025-04-20,interleaved-thinking-2025-05-14") -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "anthropic-version": "2023-06-01", "anthropic-beta": beta}


def message_body(**extra: Any) -> dict[str, Any]:
    body = {"model": MODEL, "max_tokens": 64, "system": IDENTITY_BLOCK, "messages": [{"role": "user", "content": "ping"}]}
    return {**body, **extra}


def unified(response: httpx.Response) -> dict[str, str]:
    return {k.removeprefix(UNIFIED): v for k, v in response.headers.items() if k.startswith(UNIFIED)}


def sse_events(raw: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in raw.strip().split("\n\n"):
        name_line, data_line = block.split("\n")
        name, data = name_line.removeprefix("event: "), json.loads(data_line.removeprefix("data: "))
        assert data["type"] == name
        events.append((name, data))
    return events


# -- OAuth: authorize --------------------------------------------------------------------------


def test_rfc7636_appendix_b_vector() -> None:
    # Appendix B reads "E9Melhoa2Owv...": an "a" after "Melho" (an "e" there is a common typo).
    assert s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_full_pkce_login_over_http(fake: FakeAnthropic, client: httpx.Client) -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    state = new_state()
    redirect = client.get(authorize_url(fake.authorize_url, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", state))
    assert redirect.status_code == 302
    location = urlsplit(redirect.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT_URI
    query = parse_qs(location.query)
    code = query["code"][0]
    assert query["state"] == [state]

    before = time.time()
    tokens = client.post("/v1/oauth/token", json=exchange_body(code, state, verifier))
    assert tokens.status_code == 200, tokens.text
    data = tokens.json()
    assert data["access_token"].startswith("sk-ant-oat01-")
    assert data["refresh_token"].startswith("sk-ant-ort01-")
    assert data["token_type"] == "Bearer"
    assert data["expires_in"] == 28800  # 8 hours, like the live service
    assert 30 * 86400 - 5 <= data["refresh_token_expires_in"] <= 30 * 86400
    assert data["scope"] == SCOPE
    assert data["account"]["email_address"] == "user@example.com" and data["account"]["uuid"]
    assert data["organization"]["name"] == "Example Org" and data["organization"]["uuid"]
    assert fake.exchange_count == 1
    assert fake.oauth.access_token(data["access_token"]).expires_at >= before + 28800 - 1


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"client_id": "not-claude-code"}, "Invalid client_id not-claude-code"),
        ({"redirect_uri": "https://evil.example/cb"}, "Redirect URI https://evil.example/cb is not supported by client."),
        ({"redirect_uri": "http://127.0.0.1:5000/callback"}, "Redirect URI http://127.0.0.1:5000/callback is not supported by client."),
        ({"code": ""}, "Invalid request format"),
        ({"code": "false"}, "Invalid request format"),
        ({"state": "s" * 22}, "Invalid request format"),  # a 16-byte state
        ({"code_challenge_method": "plain"}, "Invalid request format"),
        ({"scope": "user:inference user:everything"}, "Unknown scope: user:everything"),
        ({"client_id": ""}, "Missing client_id parameter"),
    ],
)
def test_authorize_refuses_like_the_real_page(client: httpx.Client, fake: FakeAnthropic, override: dict, message: str) -> None:
    answer = client.get(authorize_url(fake.authorize_url, s256("v" * 43), new_state(), **override))
    assert answer.status_code == 400
    assert answer.json() == {"error": "invalid_request", "error_description": message}
    with pytest.raises(ValueError, match="^" + message.replace(".", r"\.") + "$"):
        fake.authorize(authorize_url("https://claude.ai/oauth/authorize", s256("v" * 43), new_state(), **override))


@pytest.mark.parametrize(
    "redirect",
    ["https://platform.claude.com/oauth/code/callback", "https://console.anthropic.com/oauth/code/callback",
     "http://localhost:54545/callback"],
)  # fmt: skip
def test_registered_redirects_work_end_to_end(fake: FakeAnthropic, client: httpx.Client, redirect: str) -> None:
    state = new_state()
    answer = client.get(authorize_url(fake.authorize_url, s256("v" * 43), state, redirect_uri=redirect),
                        headers={"Accept": "application/json"})  # fmt: skip
    assert answer.status_code == 200
    assert answer.json()["code_with_state"] == f"{answer.json()['code']}#{state}"
    done = client.post("/v1/oauth/token", json=exchange_body(answer.json()["code"], state, "v" * 43, redirect))
    assert done.status_code == 200, done.text


def test_exchange_must_repeat_the_authorize_redirect(fake: FakeAnthropic, client: httpx.Client) -> None:
    state = new_state()
    code, _ = fake.authorize(authorize_url(fake.authorize_url, s256("a" * 43), state))
    other = "https://console.anthropic.com/oauth/code/callback"
    wrong = client.post("/v1/oauth/token", json=exchange_body(code, state, "a" * 43, redirect_uri=other))
    assert wrong.status_code == 400
    assert wrong.json() == {"error": "invalid_grant", "error_description": "Invalid 'redirect_uri' in request"}
    # A refused exchange does not burn the code: the right redirect still works.
    assert client.post("/v1/oauth/token", json=exchange_body(code, state, "a" * 43)).status_code == 200


def test_next_email_names_the_account(fake: FakeAnthropic, client: httpx.Client) -> None:
    fake.next_email = "second@example.com"
    assert login(fake, client)["account"]["email_address"] == "second@example.com"


def test_wrong_verifier_or_state_rejected(fake: FakeAnthropic, client: httpx.Client) -> None:
    state = new_state()
    code, _ = fake.authorize(authorize_url(fake.authorize_url, s256("a" * 43), state))
    bad_verifier = client.post("/v1/oauth/token", json=exchange_body(code, state, "b" * 43))
    assert bad_verifier.status_code == 400 and bad_verifier.json()["error"] == "invalid_grant"
    bad_state = client.post("/v1/oauth/token", json=exchange_body(code, new_state(), "a" * 43))
    assert bad_state.status_code == 400 and bad_state.json()["error"] == "invalid_grant"


def test_code_is_single_use(fake: FakeAnthropic, client: httpx.Client) -> None:
    state = new_state()
    code, _ = fake.authorize(authorize_url(fake.authorize_url, s256("a" * 43), state))
    assert client.post("/v1/oauth/token", json=exchange_body(code, state, "a" * 43)).status_code == 200
    again = client.post("/v1/oauth/token", json=exchange_body(code, state, "a" * 43))
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


def test_custom_expires_in_at_exchange_is_refused_with_mcp_scope(fake: FakeAnthropic, client: httpx.Client) -> None:
    # How `claude setup-token` gets its one-year token; not allowed with user:mcp_servers (TCR).
    for scope, expected in (("user:inference", 200), ("user:inference user:mcp_servers", 400)):
        state = new_state()
        code, _ = fake.authorize(authorize_url(fake.authorize_url, s256("a" * 43), state, scope=scope))
        answer = client.post("/v1/oauth/token", json={**exchange_body(code, state, "a" * 43), "expires_in": 31536000})
        assert answer.status_code == expected, answer.text
    assert answer.json()["error_description"] == "Custom expires_in not allowed for scope 'user:mcp_servers'"


# -- OAuth: the token endpoint's edge and body formats ---------------------------------------------


@pytest.mark.parametrize(
    ("agent", "status", "text"),
    [
        (None, 429, '"rate_limit_error"'),
        ("Python-urllib/3.11", 403, "error code: 1010"),
        ("claude-code/2.1.280", 429, '"rate_limit_error"'),
    ],
)
def test_token_endpoint_edge_refuses_some_user_agents(
    fake: FakeAnthropic, client: httpx.Client, agent: str | None, status: int, text: str
) -> None:
    first = login(fake, client)
    request = client.build_request("POST", "/v1/oauth/token", json=refresh_body(first["refresh_token"]))
    if agent is None:
        del request.headers["user-agent"]
    else:
        request.headers["user-agent"] = agent
    answer = client.send(request)
    assert answer.status_code == status
    assert text in answer.text
    assert fake.refresh_count == 0  # refused at the edge: the token is not spent
    assert fake.refresh_token_alive(first["refresh_token"])
    recorded = fake.token_requests()[-1]
    assert recorded.headers.get("user-agent") == agent and recorded.status == status


def test_user_agent_edge_can_be_relaxed(fake: FakeAnthropic, client: httpx.Client) -> None:
    fake.check_token_user_agent = False
    request = client.build_request("POST", "/v1/oauth/token", json=refresh_body(login(fake, client)["refresh_token"]))
    del request.headers["user-agent"]
    assert client.send(request).status_code == 200


def test_token_endpoint_takes_json_and_form(fake: FakeAnthropic, client: httpx.Client) -> None:
    state = new_state()
    code, _ = fake.authorize(authorize_url(fake.authorize_url, s256("a" * 43), state))
    form = client.post("/v1/oauth/token", data=exchange_body(code, state, "a" * 43))
    assert form.status_code == 200, form.text
    assert fake.token_requests()[-1].body["grant_type"] == "authorization_code"  # recorded, parsed
    refreshed = client.post("/v1/oauth/token", data=refresh_body(form.json()["refresh_token"]))
    assert refreshed.status_code == 200
    junk = client.post("/v1/oauth/token", content=b"grant_type refresh", headers={"Content-Type": "text/plain"})
    assert junk.status_code == 400
    assert junk.json() == {"type": "error", "error": {"type": "invalid_request_error", "message": "Invalid request format"}}
    missing = client.post("/v1/oauth/token", json={"grant_type": "authorization_code", "code": code})
    assert missing.json()["error"] == "invalid_request"


# -- OAuth: refresh -------------------------------------------------------------------------


def test_refresh_rotates_and_old_token_is_rejected(fake: FakeAnthropic, client: httpx.Client) -> None:
    first = login(fake, client)
    second = client.post("/v1/oauth/token", json=refresh_body(first["refresh_token"]))
    assert second.status_code == 200
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    assert rotated["access_token"] != first["access_token"]
    assert rotated["account"] == first["account"] and rotated["organization"] == first["organization"]

    reused = client.post("/v1/oauth/token", json=refresh_body(first["refresh_token"]))
    assert reused.status_code == 400
    assert reused.json() == {"error": "invalid_grant", "error_description": "Refresh token not found or invalid"}
    assert fake.refresh_count == 2

    # The old access token lives until its own expiry, like the real service.
    for token in (first["access_token"], rotated["access_token"]):
        assert client.post("/v1/messages", json=message_body(), headers=api_headers(token)).status_code == 200


def test_refresh_ignores_expires_in_and_wider_scope_is_refused(fake: FakeAnthropic, client: httpx.Client) -> None:
    first = login(fake, client)
    answer = client.post("/v1/oauth/token", json={**refresh_body(first["refresh_token"]), "expires_in": 31536000})
    assert answer.json()["expires_in"] == 28800
    wider = client.post("/v1/oauth/token", json={**refresh_body(answer.json()["refresh_token"]),
                                                 "scope": SCOPE + " user:mcp_servers"})  # fmt: skip
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"


def test_refresh_lifetime_is_absolute_from_the_login() -> None:
    now = [1_800_000_000.0]
    state = OAuthState(clock=lambda: now[0])
    first = state.issue("a@example.com")
    assert first["refresh_token_expires_in"] == 30 * 86400
    headers = {"User-Agent": "litellm-claude-oauth/test"}

    def refresh(token: str) -> Any:
        return state.handle(headers, "application/json", json.dumps(refresh_body(token)).encode())

    now[0] += 20 * 86400
    second = refresh(first["refresh_token"])
    assert second.status == 200
    assert second.body["refresh_token_expires_in"] == 10 * 86400  # not extended by refreshing
    now[0] += 10 * 86400
    dead = refresh(second.body["refresh_token"])
    assert (dead.status, dead.body) == (400, {"error": "invalid_grant", "error_description": "Refresh token not found or invalid"})
    assert state.issue("a@example.com")["refresh_token_expires_in"] == 30 * 86400  # a new login starts over


def test_refresh_lifetime_end_and_omitted_field(fake: FakeAnthropic, client: httpx.Client) -> None:
    fake.report_refresh_ttl = False
    first = login(fake, client)
    assert "refresh_token_expires_in" not in first
    fake.end_refresh_lifetime("user@example.com")
    assert not fake.refresh_token_alive(first["refresh_token"])
    dead = client.post("/v1/oauth/token", json=refresh_body(first["refresh_token"]))
    assert dead.json() == {"error": "invalid_grant", "error_description": "Refresh token not found or invalid"}


def test_refresh_without_rotation_keeps_the_token(fake: FakeAnthropic, client: httpx.Client) -> None:
    fake.rotate_refresh_tokens = False
    first = login(fake, client)
    for _ in range(2):
        answer = client.post("/v1/oauth/token", json=refresh_body(first["refresh_token"]))
        assert answer.status_code == 200
        assert "refresh_token" not in answer.json()


def test_injected_token_failures(fake: FakeAnthropic, client: httpx.Client) -> None:
    fake.fail_next_token_requests(1, status=429, retry_after=7)
    first = client.post("/v1/oauth/token", json={"grant_type": "refresh_token"})
    assert first.status_code == 429
    assert first.headers["retry-after"] == "7"
    assert client.post("/v1/oauth/token", json={"grant_type": "refresh_token"}).status_code == 400


# -- Messages: auth, models -------------------------------------------------------------------


def test_messages_ok_and_recorded(fake: FakeAnthropic, client: httpx.Client) -> None:
    token = login(fake, client)["access_token"]
    response = client.post("/v1/messages", json=message_body(), headers=api_headers(token))
    assert response.status_code == 200, response.text
    assert response.headers["request-id"].startswith("req_")
    data = response.json()
    assert data["type"] == "message" and data["role"] == "assistant"
    assert data["model"] == MODEL
    assert data["content"] == [{"type": "text", "text": f"Hello from fake Claude ({MODEL}): ping"}]
    assert data["stop_reason"] == "end_turn" and data["stop_sequence"] is None
    usage = data["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["cache_creation_input_tokens"] == 0 and usage["cache_read_input_tokens"] == 0

    [record] = fake.messages_requests()
    assert record.headers["authorization"] == f"Bearer {token}"
    assert record.headers["user-agent"] == "litellm-claude-oauth/test"
    assert record.body["model"] == MODEL
    assert record.status == 200
    assert len(fake.token_requests()) == 1


def test_beta_query_and_count_tokens(fake: FakeAnthropic, client: httpx.Client) -> None:
    headers = api_headers(login(fake, client)["access_token"])
    assert client.post("/v1/messages?beta=true", json=message_body(), headers=headers).status_code == 200
    assert fake.messages_requests()[-1].query == {"beta": "true"}
    short = client.post("/v1/messages/count_tokens?beta=true", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
                        headers=headers)  # fmt: skip
    long = client.post("/v1/messages/count_tokens", json={"model": MODEL, "messages": [{"role": "user", "content": "hi " * 400}]},
                       headers=headers)  # fmt: skip
    assert short.status_code == 200 and set(short.json()) == {"input_tokens"}
    assert 0 < short.json()["input_tokens"] < long.json()["input_tokens"]
    unknown = client.post("/v1/messages/count_tokens", json={"model": "claude-3-5-haiku-20241022", "messages": []}, headers=headers)
    assert unknown.status_code == 404
    assert client.post("/v1/messages/count_tokens", json={"model": MODEL, "messages": []}).status_code == 401


def test_messages_auth_errors(fake: FakeAnthropic, client: httpx.Client) -> None:
    token = login(fake, client)["access_token"]
    no_beta = client.post("/v1/messages", json=message_body(), headers=api_headers(token, beta="prompt-caching-2024-07-31"))
    assert no_beta.status_code == 401
    assert no_beta.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "OAuth authentication is currently not supported."},
    }
    unknown = client.post("/v1/messages", json=message_body(), headers=api_headers("sk-ant-oat01-nope"))
    assert unknown.status_code == 401
    assert unknown.json()["error"]["message"] == "Invalid bearer token"
    api_key = client.post("/v1/messages", json=message_body(), headers={**api_headers(token), "x-api-key": token})
    assert api_key.status_code == 401


def test_token_without_inference_scope_gets_403(fake: FakeAnthropic, client: httpx.Client) -> None:
    token = fake.issue_tokens(scope="user:profile")["access_token"]
    answer = client.post("/v1/messages", json=message_body(), headers=api_headers(token))
    assert answer.status_code == 403
    assert answer.json()["error"] == {"type": "permission_error", "message": (
        "OAuth token does not meet scope requirement any_of(user:inference, user:ccr_inference, user:voice, "
        "org:service_key_inference)")}  # fmt: skip


def test_expired_token(fake: FakeAnthropic, client: httpx.Client) -> None:
    token = login(fake, client)["access_token"]
    fake.expire_access_token(token)
    response = client.post("/v1/messages", json=message_body(), headers=api_headers(token))
    assert response.status_code == 401
    assert response.json() == {"type": "error", "error": {"type": "authentication_error", "message": EXPIRED}}


def test_short_ttl_and_forced_401(fake: FakeAnthropic, client: httpx.Client) -> None:
    fake.access_ttl = 0
    stale = login(fake, client)
    assert stale["expires_in"] == 0
    assert client.post("/v1/messages", json=message_body(), headers=api_headers(stale["access_token"])).status_code == 401

    fake.access_ttl = 3600
    token = login(fake, client)["access_token"]
    fake.force_401_next(1)
    assert client.post("/v1/messages", json=message_body(), headers=api_headers(token)).status_code == 401
    assert client.post("/v1/messages", json=message_body(), headers=api_headers(token)).status_code == 200


@pytest.mark.parametrize("model", ["claude-3-5-haiku-20241022", "claude-opus-4-6-20260205", "claude-opus-4-7-20260416",
                                   "claude-opus-4-1-20250805", "claude-sonnet-4-20250514", "claude-sonnet-4-5", "gpt-4o"])  # fmt: skip
def test_retired_and_invented_models_are_404(fake: FakeAnthropic, client: httpx.Client, model: str) -> None:
    token = login(fake, client)["access_token"]
    answer = client.post("/v1/messages", json=message_body(model=model), headers=api_headers(token))
    assert answer.status_code == 404
    assert answer.json() == {"type": "error", "error": {"type": "not_found_error", "message": f"model: {model}"}}


def test_every_current_model_answers(fake: FakeAnthropic, client: httpx.Client) -> None:
    headers = api_headers(login(fake, client)["access_token"])
    ids = [m.id for m in catalog.served()]
    assert {"claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5", "claude-fable-5-1", "claude-opus-4-8",
            "claude-opus-4-6", "claude-sonnet-4-6", "claude-haiku-4-5-20251001"} <= set(ids)  # fmt: skip
    for model in ids:
        answer = client.post("/v1/messages", json=message_body(model=model), headers=headers)
        assert answer.status_code == 200, (model, answer.text)
        assert answer.json()["model"] == model


def test_sonnet_4_5_retires_on_its_date() -> None:
    assert "claude-sonnet-4-5-20250929" in [m.id for m in catalog.served(date(2026, 11, 29))]
    assert "claude-sonnet-4-5-20250929" not in [m.id for m in catalog.served(date(2026, 11, 30))]
    assert catalog.find("claude-sonnet-4-5-20250929", date(2026, 12, 1)) is None


def test_any_model_when_relaxed(fake: FakeAnthropic, client: httpx.Client) -> None:
    fake.enforce_models = False
    token = login(fake, client)["access_token"]
    assert client.post("/v1/messages", json=message_body(model="claude-3-5-haiku-20241022"), headers=api_headers(token)).status_code == 200


def test_config_models_are_all_served() -> None:
    """Every upstream id in config.oauth.yaml is one the (fake, so the real) API serves: they cannot drift."""
    config = yaml.safe_load((ROOT / "config.oauth.yaml").read_text())
    upstream = [entry["litellm_params"]["model"] for entry in config["model_list"]
                if str(entry["litellm_params"].get("api_key", "")).startswith("claude-oauth")
                and "*" not in entry["litellm_params"]["model"]]  # fmt: skip  (a wildcard passes ids through)
    assert upstream, "config.oauth.yaml lists no claude-oauth deployment"
    served = {m.id for m in catalog.served()}
    unserved = [m for m in upstream if m.removeprefix("anthropic/") not in served]
    assert unserved == [], f"config.oauth.yaml names ids the API does not serve: {unserved}"


# -- GET /v1/models ---------------------------------------------------------------------------------


def test_models_list_in_anthropic_shape_with_pagination(fake: FakeAnthropic, client: httpx.Client) -> None:
    headers = api_headers(login(fake, client)["access_token"])
    everything = client.get("/v1/models", params={"limit": 1000}, headers=headers).json()
    ids = [m["id"] for m in everything["data"]]
    assert ids == [m.id for m in catalog.served()]  # newest first
    assert everything["has_more"] is False and everything["first_id"] == ids[0] and everything["last_id"] == ids[-1]
    for entry in everything["data"]:
        assert set(entry) == {"type", "id", "display_name", "created_at"} and entry["type"] == "model"
        assert entry["display_name"].startswith("Claude ") and entry["created_at"].endswith("Z")

    first = client.get("/v1/models", params={"limit": 3}, headers=headers).json()
    assert [m["id"] for m in first["data"]] == ids[:3] and first["has_more"] is True
    second = client.get("/v1/models", params={"limit": 3, "after_id": first["last_id"]}, headers=headers).json()
    assert [m["id"] for m in second["data"]] == ids[3:6]
    back = client.get("/v1/models", params={"limit": 2, "before_id": second["first_id"]}, headers=headers).json()
    assert [m["id"] for m in back["data"]] == ids[1:3] and back["has_more"] is True
    assert client.get("/v1/models", params={"limit": 0}, headers=headers).status_code == 400
    assert client.get(f"/v1/models/{ids[0]}", headers=headers).json()["id"] == ids[0]
    assert client.get("/v1/models").status_code == 401


def test_model_visibility_is_per_account(fake: FakeAnthropic, client: httpx.Client) -> None:
    mine = login(fake, client)["access_token"]
    fake.next_email = "other@example.com"
    theirs = login(fake, client)["access_token"]
    fake.hide_model(mine, "claude-opus-5-5")

    def listed(token: str) -> list[str]:
        return [m["id"] for m in client.get("/v1/models", params={"limit": 1000}, headers=api_headers(token)).json()["data"]]

    assert "claude-opus-5-5" not in listed(mine) and "claude-opus-5-5" in listed(theirs)
    refused = client.post("/v1/messages", json=message_body(model="claude-opus-5-5"), headers=api_headers(mine))
    assert refused.status_code == 404 and refused.json()["error"]["message"] == "model: claude-opus-5-5"
    assert client.get("/v1/models/claude-opus-5-5", headers=api_headers(mine)).status_code == 404
    assert client.post("/v1/messages", json=message_body(model="claude-opus-5-5"), headers=api_headers(theirs)).status_code == 200
    fake.show_model("user@example.com", "claude-opus-5-5")
    assert "claude-opus-5-5" in listed(mine)


# -- the identity gate ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("system", "allowed"),
    [
        (None, False),
        ("Be brief.", False),
        ([{"type": "text", "text": "Be brief."}], False),
        ([{"type": "text", "text": CLAUDE_CODE_SYSTEM + "\nBe brief."}], False),  # identity + more in one block
        ([{"type": "text", "text": "Be brief."}, {"type": "text", "text": CLAUDE_CODE_SYSTEM}], False),
        (CLAUDE_CODE_SYSTEM, True),
        (CLAUDE_CODE_SYSTEM + "\nBe brief.", True),  # a plain string may go on
        ([{"type": "text", "text": CLAUDE_CODE_SYSTEM}, {"type": "text", "text": "Be brief."}], True),
        ([{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.280.abc; cc_entrypoint=cli; cch=00000;"},
          {"type": "text", "text": CLAUDE_CODE_SYSTEM}], True),
        ([{"type": "text", "text": "x-anthropic-billing-header: cc_entrypoint=sdk-cli;"},
          {"type": "text", "text": "You are a Claude agent, built on Anthropic's Claude Agent SDK."}], True),
    ],
)  # fmt: skip
def test_identity_gate(fake: FakeAnthropic, client: httpx.Client, system: Any, allowed: bool) -> None:
    headers = api_headers(login(fake, client)["access_token"])
    body = message_body(system=system)
    if system is None:
        del body["system"]
    for model in ("claude-opus-5-5", "claude-sonnet-4-6", "claude-fable-5-1"):
        answer = client.post("/v1/messages", json={**body, "model": model}, headers=headers)
        if allowed:
            assert answer.status_code == 200, (model, answer.text)
        else:
            assert answer.status_code == 429, (model, answer.text)
            assert answer.json() == IDENTITY_GATE
            assert "retry-after" not in answer.headers and unified(answer) == {}  # headerless
    for haiku in ("claude-haiku-5-5", "claude-haiku-4-5-20251001"):  # exempt
        assert client.post("/v1/messages", json={**body, "model": haiku}, headers=headers).status_code == 200


def test_identity_gate_can_be_switched_off_and_old_400_switched_on(fake: FakeAnthropic, client: httpx.Client) -> None:
    headers = api_headers(login(fake, client)["access_token"])
    fake.require_claude_code_system = False
    bare = {k: v for k, v in message_body().items() if k != "system"}
    assert client.post("/v1/messages", json=bare, headers=headers).status_code == 200
    fake.refuse("claude_code_only")
    old = client.post("/v1/messages", json=bare, headers=headers)
    assert old.status_code == 400 and "only authorized for use with Claude Code" in old.json()["error"]["message"]


# -- unified rate-limit headers ------------------------------------------------------------------------


def test_every_200_carries_the_unified_headers(fake: FakeAnthropic, client: httpx.Client) -> None:
    token = login(fake, client)["access_token"]
    now = time.time()
    h = unified(client.post("/v1/messages", json=message_body(), headers=api_headers(token)))
    assert h["status"] == "allowed" and h["representative-claim"] == "five_hour"
    assert h["5h-status"] == "allowed" and h["7d-status"] == "allowed"
    assert now < int(h["5h-reset"]) <= now + 5 * 3600 + 1 and int(h["reset"]) == int(h["5h-reset"])
    assert now < int(h["7d-reset"]) <= now + 7 * 86400 + 1
    assert 0 <= float(h["5h-utilization"]) < 1 and 0 <= float(h["7d-utilization"]) < 1
    assert h["overage-status"] == "rejected" and int(h["overage-reset"]) > int(h["5h-reset"])  # ordinary account
    assert "overage-in-use" not in h and float(h["fallback-percentage"]) == 0.5
    # Streams carry them too.
    with client.stream("POST", "/v1/messages", json=message_body(stream=True), headers=api_headers(token)) as streamed:
        assert unified(streamed)["5h-status"] == "allowed"


def test_usage_control_shows_in_headers(fake: FakeAnthropic, client: httpx.Client) -> None:
    token = login(fake, client)["access_token"]
    fake.set_usage(token, five_hour=0.5, seven_day=0.9)
    h = unified(client.post("/v1/messages", json=message_body(), headers=api_headers(token)))
    assert (h["5h-utilization"], h["7d-utilization"]) == ("0.50", "0.90")
    assert h["status"] == "allowed_warning" and h["representative-claim"] == "seven_day"
    assert h["7d-surpassed-threshold"] == "0.75" and int(h["reset"]) == int(h["7d-reset"])
    fake.set_usage(token, overage_in_use=True)
    h = unified(client.post("/v1/messages", json=message_body(), headers=api_headers(token)))
    assert h["overage-in-use"] == "true" and h["overage-status"] == "allowed"
    with pytest.raises(ValueError, match=r"0\.\.1"):
        fake.set_usage(token, five_hour=50)


def test_five_hour_rejection_has_the_full_header_set(fake: FakeAnthropic, client: httpx.Client) -> None:
    first = login(fake, client)["access_token"]
    second = login(fake, client)["access_token"]  # same email, different grant
    fake.next_email = "other@example.com"
    other = login(fake, client)["access_token"]

    fake.rate_limit_token(first, 120)
    before = time.time()
    limited = client.post("/v1/messages", json=message_body(), headers=api_headers(second))
    assert limited.status_code == 429
    assert limited.json()["error"] == {"type": "rate_limit_error",
                                       "message": "This request would exceed your account's rate limit. Please try again later."}  # fmt: skip
    assert 1 <= int(limited.headers["retry-after"]) <= 120
    h = unified(limited)
    assert h["status"] == "rejected" and h["representative-claim"] == "five_hour"
    assert h["5h-status"] == "rejected" and h["5h-reset"] == h["reset"]
    assert before + 100 < int(h["reset"]) <= before + 122
    assert h["7d-status"] == "allowed" and int(h["7d-reset"]) > int(h["reset"])
    assert h["overage-status"] == "rejected" and int(h["overage-reset"]) > int(h["reset"]) + 3600  # far away
    assert "fallback-percentage" in h
    # The whole account, every model; other accounts are untouched.
    assert client.post("/v1/messages", json=message_body(model="claude-haiku-5-5"), headers=api_headers(first)).status_code == 429
    assert client.post("/v1/messages", json=message_body(), headers=api_headers(other)).status_code == 200
    fake.clear_rate_limits()
    assert client.post("/v1/messages", json=message_body(), headers=api_headers(first)).status_code == 200


@pytest.mark.parametrize(
    ("profile", "window", "claim", "refused", "served"),
    [
        ("seven_day_opus", "7d_opus", "seven_day_opus", "claude-opus-5-5", "claude-sonnet-5-5"),
        ("7d_oi", "7d_oi", "seven_day_overage_included", "claude-fable-5-1", "claude-opus-4-8"),
        ("seven_day_sonnet", "7d_sonnet", "seven_day_sonnet", "claude-sonnet-4-6", "claude-haiku-5-5"),
    ],
)
def test_model_scoped_rejection_refuses_only_its_family(
    fake: FakeAnthropic, client: httpx.Client, profile: str, window: str, claim: str, refused: str, served: str
) -> None:
    token = login(fake, client)["access_token"]
    fake.rate_limit_token(token, 3 * 86400, profile=profile)
    limited = client.post("/v1/messages", json=message_body(model=refused), headers=api_headers(token))
    assert limited.status_code == 429
    h = unified(limited)
    assert h["status"] == "rejected" and h["representative-claim"] == claim
    assert h[f"{window}-status"] == "rejected" and h[f"{window}-reset"] == h["reset"]
    assert h["5h-status"] == "allowed" and h["7d-status"] == "allowed"  # the shared windows are fine
    ok = client.post("/v1/messages", json=message_body(model=served), headers=api_headers(token))
    assert ok.status_code == 200 and unified(ok)[f"{window}-status"] == "rejected"


def test_seven_day_rejection(fake: FakeAnthropic, client: httpx.Client) -> None:
    token = login(fake, client)["access_token"]
    fake.rate_limit_token(token, 2 * 86400, profile="seven_day")
    h = unified(client.post("/v1/messages", json=message_body(), headers=api_headers(token)))
    assert h["status"] == "rejected" and h["representative-claim"] == "seven_day"
    assert h["7d-status"] == "rejected" and h["5h-status"] == "allowed"
    with pytest.raises(ValueError, match="unknown rate-limit profile"):
        fake.rate_limit_token(token, 60, profile="monthly")


# -- refusal modes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(REFUSALS))
def test_refusal_modes(fake: FakeAnthropic, client: httpx.Client, kind: str) -> None:
    token = login(fake, client)["access_token"]
    fake.next_email = "other@example.com"
    other = login(fake, client)["access_token"]
    fake.refuse(kind, token)
    status, error_type, message = REFUSALS[kind]
    answer = client.post("/v1/messages", json=message_body(), headers=api_headers(token))
    assert answer.status_code == status
    assert answer.json() == {"type": "error", "error": {"type": error_type, "message": message}}
    assert client.post("/v1/messages", json=message_body(), headers=api_headers(other)).status_code == 200
    fake.clear_refusals()
    assert client.post("/v1/messages", json=message_body(), headers=api_headers(token)).status_code == 200


def test_refusal_texts_are_the_real_ones() -> None:
    assert REFUSALS["extra_usage"][2] == "You're out of extra usage. Add more at claude.ai/settings/usage and keep going."
    assert REFUSALS["third_party"][2].startswith("Third-party apps now draw from your extra usage, not your plan limits")
    assert REFUSALS["overloaded"][:2] == (529, "overloaded_error")
    assert REFUSALS["org_disabled"][2] == "This organization has been disabled."


# -- content: streaming, thinking, tools, cache ------------------------------------------------------------


def test_streaming_event_sequence(fake: FakeAnthropic, client: httpx.Client) -> None:
    token = login(fake, client)["access_token"]
    with client.stream("POST", "/v1/messages", json=message_body(stream=True), headers=api_headers(token)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.read().decode())
    names = [name for name, _ in events]
    deltas = [data["delta"]["text"] for name, data in events if name == "content_block_delta"]
    assert names == ["message_start", "content_block_start", "ping"] + ["content_block_delta"] * len(deltas) + [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert 3 <= len(deltas) <= 6
    assert "".join(deltas) == f"Hello from fake Claude ({MODEL}): ping"
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert {"input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "cache_creation",
            "output_tokens"} <= set(start["usage"])  # fmt: skip
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert events[-2][1]["usage"]["output_tokens"] > 0


def test_thinking_blocks_come_first_and_signed(fake: FakeAnthropic, client: httpx.Client) -> None:
    headers = api_headers(login(fake, client)["access_token"])
    body = message_body(thinking={"type": "enabled", "budget_tokens": 1024}, max_tokens=2048)
    content = client.post("/v1/messages", json=body, headers=headers).json()["content"]
    assert [b["type"] for b in content] == ["thinking", "text"]
    assert content[0]["thinking"] and content[0]["signature"]
    again = client.post("/v1/messages", json=body, headers=headers).json()["content"]
    assert again[0] == content[0]  # deterministic

    with client.stream("POST", "/v1/messages", json={**body, "stream": True}, headers=headers) as response:
        events = sse_events(response.read().decode())
    starts = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert starts == ["thinking", "text"]
    kinds = [d["delta"]["type"] for n, d in events if n == "content_block_delta"]
    assert kinds[0] == "thinking_delta" and "signature_delta" in kinds
    assert kinds.index("signature_delta") < kinds.index("text_delta")
    thought = "".join(d["delta"].get("thinking", "") for n, d in events if n == "content_block_delta" and d["index"] == 0)
    signature = next(d["delta"]["signature"] for n, d in events if n == "content_block_delta" and d["delta"]["type"] == "signature_delta")
    assert (thought, signature) == (content[0]["thinking"], content[0]["signature"])
    disabled = client.post("/v1/messages", json=message_body(thinking={"type": "disabled"}), headers=headers).json()
    assert [b["type"] for b in disabled["content"]] == ["text"]


WEATHER_TOOL = {"name": "get_weather", "description": "Weather for a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                                                                   "unit": {"type": "string", "enum": ["c", "f"]}},
                                 "required": ["city", "unit"]}}  # fmt: skip


def test_tool_use_when_the_prompt_asks(fake: FakeAnthropic, client: httpx.Client) -> None:
    headers = api_headers(login(fake, client)["access_token"])
    ask = [{"role": "user", "content": "Use get_weather for Paris"}]
    answer = client.post("/v1/messages", json=message_body(messages=ask, tools=[WEATHER_TOOL]), headers=headers).json()
    assert [b["type"] for b in answer["content"]] == ["text", "tool_use"] and answer["stop_reason"] == "tool_use"
    call = answer["content"][1]
    assert call["name"] == "get_weather" and call["id"].startswith("toolu_")
    assert call["input"] == {"city": "fake-city", "unit": "c"}

    plain = client.post("/v1/messages", json=message_body(tools=[WEATHER_TOOL]), headers=headers).json()
    assert plain["stop_reason"] == "end_turn" and [b["type"] for b in plain["content"]] == ["text"]
    forced = client.post("/v1/messages", json=message_body(tools=[WEATHER_TOOL], tool_choice={"type": "any"}), headers=headers)
    assert forced.json()["content"][-1]["name"] == "get_weather"
    none = client.post("/v1/messages", json=message_body(messages=ask, tools=[WEATHER_TOOL], tool_choice={"type": "none"}),
                       headers=headers)  # fmt: skip
    assert none.json()["stop_reason"] == "end_turn"
    result_turn = [*ask, {"role": "assistant", "content": [call]},
                   {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "sunny"}]}]  # fmt: skip
    done = client.post("/v1/messages", json=message_body(messages=result_turn, tools=[WEATHER_TOOL]), headers=headers).json()
    assert done["stop_reason"] == "end_turn"  # agent loops end

    with client.stream("POST", "/v1/messages", json=message_body(messages=ask, tools=[WEATHER_TOOL], stream=True),
                       headers=headers) as response:  # fmt: skip
        events = sse_events(response.read().decode())
    start = next(d for n, d in events if n == "content_block_start" and d["index"] == 1)
    assert start["content_block"] == {"type": "tool_use", "id": start["content_block"]["id"], "name": "get_weather", "input": {}}
    partial = "".join(d["delta"]["partial_json"] for n, d in events if n == "content_block_delta" and d["index"] == 1)
    assert json.loads(partial) == {"city": "fake-city", "unit": "c"}
    assert next(d for n, d in events if n == "message_delta")["delta"]["stop_reason"] == "tool_use"


def test_prompt_cache_is_created_then_read(fake: FakeAnthropic, client: httpx.Client) -> None:
    headers = api_headers(login(fake, client)["access_token"])
    system = [*IDENTITY_BLOCK, {"type": "text", "text": "Long instructions. " * 100, "cache_control": {"type": "ephemeral"}}]
    first = client.post("/v1/messages", json=message_body(system=system), headers=headers).json()["usage"]
    second = client.post("/v1/messages", json=message_body(system=system), headers=headers).json()["usage"]
    assert first["cache_creation_input_tokens"] > 0 and first["cache_read_input_tokens"] == 0
    assert second["cache_read_input_tokens"] == first["cache_creation_input_tokens"] and second["cache_creation_input_tokens"] == 0


# -- control over HTTP, standalone -----------------------------------------------------------------------


def test_http_control_endpoints(fake: FakeAnthropic, client: httpx.Client) -> None:
    state = new_state()
    url = authorize_url("https://claude.ai/oauth/authorize", s256("c" * 43), state)
    answer = client.post("/_fake/authorize", json={"authorize_url": url, "email": "ctl@example.com"})
    assert answer.status_code == 200
    code = answer.json()["code"]
    assert answer.json()["code_with_state"] == f"{code}#{state}"
    tokens = client.post("/v1/oauth/token", json=exchange_body(code, state, "c" * 43)).json()
    token = tokens["access_token"]
    assert tokens["account"]["email_address"] == "ctl@example.com"
    bad = client.post("/_fake/authorize", json={"authorize_url": url.replace("code=true", "code=false")})
    assert bad.status_code == 400 and "Invalid request format" in bad.json()["error_description"]

    def control(**body: Any) -> httpx.Response:
        return client.post("/_fake/control", json=body)

    def send(model: str = MODEL) -> httpx.Response:
        return client.post("/v1/messages", json=message_body(model=model), headers=api_headers(token))

    assert control(rate_limit_email="ctl@example.com", reset_in=300, profile="7d_opus").status_code == 200
    assert send("claude-opus-5-5").status_code == 429 and send().status_code == 200
    assert control(clear_rate_limits=True, usage={"email": "ctl@example.com", "five_hour": 0.8}).status_code == 200
    assert unified(send())["5h-utilization"] == "0.80"
    assert control(hide_model={"token": token, "model": MODEL}).status_code == 200
    assert send().status_code == 404
    assert control(show_model={"email": "ctl@example.com", "model": MODEL}, refuse="extra_usage").status_code == 200
    assert send().status_code == 400
    assert control(refuse=None).status_code == 200 and send().status_code == 200
    assert control(refuse={"kind": "overloaded", "email": "ctl@example.com"}).status_code == 200
    assert send().status_code == 529
    assert control(clear_refusals=True, require_claude_code_system=False, enforce_models=False).json()["enforce_models"] is False
    assert client.post("/v1/messages", json={**message_body(model="claude-3-5-haiku-20241022"), "system": None},
                       headers=api_headers(token)).status_code == 200  # fmt: skip
    # A bad value is refused before anything changes.
    assert control(profile="monthly", rate_limit_email="ctl@example.com").status_code == 400
    assert control(refuse="bogus", expire_all_access_tokens=True).status_code == 400
    assert send().status_code == 200
    assert control(end_refresh_lifetime="ctl@example.com").status_code == 200
    assert not fake.refresh_token_alive(tokens["refresh_token"])
    assert control(expire_all_access_tokens=True).status_code == 200
    assert send().status_code == 401
    assert control(bogus=1).status_code == 400
    assert client.get("/_fake/state").json()["messages_count"] == fake.messages_count
    assert all(not r.path.startswith("/_fake/") for r in fake.requests)


def test_no_token_is_logged(fake: FakeAnthropic, client: httpx.Client, capsys: pytest.CaptureFixture[str]) -> None:
    tokens = login(fake, client)
    client.post("/v1/messages", json=message_body(), headers=api_headers(tokens["access_token"]))
    client.post("/v1/oauth/token", json=refresh_body(tokens["refresh_token"]))
    out = capsys.readouterr()
    assert "sk-ant-" not in out.out + out.err


def test_module_runs_standalone() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_anthropic", "--port", "0", "--access-ttl", "5", "--any-model"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("fake anthropic listening on http://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[1]
        state = httpx.get(f"{url}/_fake/state", timeout=5).json()
        assert state["refresh_count"] == 0 and state["exchange_count"] == 0 and state["messages_count"] == 0
        assert state["access_ttl"] == 5
        assert state["enforce_models"] is False and state["require_claude_code_system"] is True
        assert state["check_token_user_agent"] is True
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
