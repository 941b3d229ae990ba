"""The fake Anthropic server behaves like the real OAuth + Messages endpoints."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from tests.fake_anthropic import CLAUDE_CODE_SYSTEM, FakeAnthropic, s256

CLIENT_ID = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
REDIRECT_URI = "https://console.anthropic.com/oauth/code/callback"
SCOPE = "org:create_api_key user:profile user:inference"
EXPIRED = "OAuth token has expired. Please obtain a new token or refresh your existing token."


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(port=0) as server:
        yield server


@pytest.fixture
def client(fake: FakeAnthropic) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.url, timeout=10) as c:
        yield c


def authorize_url(base: str, challenge: str, state: str) -> str:
    query = {
        "code": "true",
        "client_id": CLIENT_ID,
        "response_type": "code",
        "redirect_uri": REDIRECT_URI,
        "scope": SCOPE,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": state,
    }
    return f"{base}?{urlencode(query)}"


def exchange_body(code: str, state: str, verifier: str) -> dict[str, str]:
    return {
        "grant_type": "authorization_code",
        "code": code,
        "state": state,
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
    }


def login(fake: FakeAnthropic, client: httpx.Client) -> dict[str, Any]:
    verifier, state = secrets.token_urlsafe(48), secrets.token_urlsafe(16)
    code, _ = fake.authorize(authorize_url("https://claude.ai/oauth/authorize", s256(verifier), state))
    response = client.post("/v1/oauth/token", json=exchange_body(code, state, verifier))
    assert response.status_code == 200, response.text
    return response.json()


def api_headers(token: str, beta: str = "oauth-2025-04-20,interleaved-thinking-2025-05-14") -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "anthropic-version": "2023-06-01", "anthropic-beta": beta}


def message_body(**extra: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "ping"}], **extra}


def test_rfc7636_appendix_b_vector() -> None:
    # Appendix B reads "E9Melhoa2Owv...": an "a" after "Melho" (an "e" there is a common typo).
    assert s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_full_pkce_login_over_http(fake: FakeAnthropic, client: httpx.Client) -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    url = authorize_url(fake.authorize_url, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "st4te")

    redirect = client.get(url)
    assert redirect.status_code == 302
    location = urlsplit(redirect.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT_URI
    query = parse_qs(location.query)
    code, state = query["code"][0], query["state"][0]
    assert state == "st4te"

    tokens = client.post("/v1/oauth/token", json=exchange_body(code, state, verifier))
    assert tokens.status_code == 200, tokens.text
    data = tokens.json()
    assert data["access_token"].startswith("sk-ant-oat01-")
    assert data["refresh_token"].startswith("sk-ant-ort01-")
    assert data["token_type"] == "Bearer"
    assert data["expires_in"] == 3600
    assert data["scope"] == SCOPE
    assert data["account"]["email_address"] == "user@example.com"
    assert data["organization"]["name"] == "Example Org"
    assert fake.exchange_count == 1


def test_authorize_json_and_validation(fake: FakeAnthropic, client: httpx.Client) -> None:
    url = authorize_url(fake.authorize_url, s256("v" * 43), "abc")
    answer = client.get(url, headers={"Accept": "application/json"})
    assert answer.status_code == 200
    assert answer.json()["code_with_state"] == f"{answer.json()['code']}#abc"

    plain = client.get(url.replace("S256", "plain"))
    assert plain.status_code == 400
    assert plain.json()["error"] == "invalid_request"
    assert client.get("/oauth/authorize?client_id=x").status_code == 400


def test_next_email_names_the_account(fake: FakeAnthropic, client: httpx.Client) -> None:
    fake.next_email = "second@example.com"
    assert login(fake, client)["account"]["email_address"] == "second@example.com"


def test_wrong_verifier_rejected(fake: FakeAnthropic, client: httpx.Client) -> None:
    code, state = fake.authorize(authorize_url(fake.authorize_url, s256("a" * 43), "s"))
    response = client.post("/v1/oauth/token", json=exchange_body(code, state, "b" * 43))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_token_endpoint_wants_json(fake: FakeAnthropic, client: httpx.Client) -> None:
    code, state = fake.authorize(authorize_url(fake.authorize_url, s256("a" * 43), "s"))
    form = client.post("/v1/oauth/token", data=exchange_body(code, state, "a" * 43))
    assert form.status_code == 400
    assert form.json()["error"] == "invalid_request"
    missing = client.post("/v1/oauth/token", json={"grant_type": "authorization_code", "code": code})
    assert missing.json()["error"] == "invalid_request"


def test_code_is_single_use(fake: FakeAnthropic, client: httpx.Client) -> None:
    code, state = fake.authorize(authorize_url(fake.authorize_url, s256("a" * 43), "s"))
    assert client.post("/v1/oauth/token", json=exchange_body(code, state, "a" * 43)).status_code == 200
    again = client.post("/v1/oauth/token", json=exchange_body(code, state, "a" * 43))
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


def test_refresh_rotates_and_old_token_is_rejected(fake: FakeAnthropic, client: httpx.Client) -> None:
    first = login(fake, client)
    refresh = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": CLIENT_ID}
    second = client.post("/v1/oauth/token", json=refresh)
    assert second.status_code == 200
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    assert rotated["access_token"] != first["access_token"]

    reused = client.post("/v1/oauth/token", json=refresh)
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    assert fake.refresh_count == 2

    # The old access token lives until its own expiry, like the real service.
    for token in (first["access_token"], rotated["access_token"]):
        assert client.post("/v1/messages", json=message_body(), headers=api_headers(token)).status_code == 200


def test_refresh_without_rotation_keeps_the_token(fake: FakeAnthropic, client: httpx.Client) -> None:
    fake.rotate_refresh_tokens = False
    first = login(fake, client)
    refresh = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": CLIENT_ID}
    for _ in range(2):
        answer = client.post("/v1/oauth/token", json=refresh)
        assert answer.status_code == 200
        assert "refresh_token" not in answer.json()


def test_injected_token_failures(fake: FakeAnthropic, client: httpx.Client) -> None:
    fake.fail_next_token_requests(1, status=429, retry_after=7)
    first = client.post("/v1/oauth/token", json={"grant_type": "refresh_token"})
    assert first.status_code == 429
    assert first.headers["retry-after"] == "7"
    assert client.post("/v1/oauth/token", json={"grant_type": "refresh_token"}).status_code == 400


def test_messages_ok(fake: FakeAnthropic, client: httpx.Client) -> None:
    token = login(fake, client)["access_token"]
    response = client.post("/v1/messages", json=message_body(), headers=api_headers(token))
    assert response.status_code == 200, response.text
    assert response.headers["anthropic-ratelimit-unified-status"] == "allowed"
    assert response.headers["request-id"].startswith("req_")
    data = response.json()
    assert data["type"] == "message" and data["role"] == "assistant"
    assert data["model"] == "claude-sonnet-4-5"
    assert data["content"] == [{"type": "text", "text": "Hello from fake Claude (claude-sonnet-4-5): ping"}]
    assert data["stop_reason"] == "end_turn" and data["stop_sequence"] is None
    assert data["usage"]["input_tokens"] > 0 and data["usage"]["output_tokens"] > 0

    [record] = fake.messages_requests()
    assert record.headers["authorization"] == f"Bearer {token}"
    assert record.body["model"] == "claude-sonnet-4-5"
    assert record.status == 200
    assert len(fake.token_requests()) == 1


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


def test_claude_code_system_requirement(fake: FakeAnthropic, client: httpx.Client) -> None:
    fake.require_claude_code_system = True
    headers = api_headers(login(fake, client)["access_token"])
    bare = client.post("/v1/messages", json=message_body(), headers=headers)
    assert bare.status_code == 400
    assert bare.json()["error"]["type"] == "invalid_request_error"
    system = [{"type": "text", "text": CLAUDE_CODE_SYSTEM}, {"type": "text", "text": "Be brief."}]
    assert client.post("/v1/messages", json=message_body(system=system), headers=headers).status_code == 200


def test_streaming_event_sequence(fake: FakeAnthropic, client: httpx.Client) -> None:
    token = login(fake, client)["access_token"]
    with client.stream("POST", "/v1/messages", json=message_body(stream=True), headers=api_headers(token)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()

    events = []
    for block in raw.strip().split("\n\n"):
        name_line, data_line = block.split("\n")
        name, data = name_line.removeprefix("event: "), json.loads(data_line.removeprefix("data: "))
        assert data["type"] == name
        events.append((name, data))
    names = [name for name, _ in events]
    deltas = [data["delta"]["text"] for name, data in events if name == "content_block_delta"]
    assert names == ["message_start", "content_block_start", "ping"] + ["content_block_delta"] * len(deltas) + [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert 3 <= len(deltas) <= 6
    assert "".join(deltas) == "Hello from fake Claude (claude-sonnet-4-5): ping"
    assert events[0][1]["message"]["content"] == []
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert events[-2][1]["usage"]["output_tokens"] > 0


def test_rate_limit_is_per_account(fake: FakeAnthropic, client: httpx.Client) -> None:
    first = login(fake, client)["access_token"]
    second = login(fake, client)["access_token"]  # same email, different grant
    fake.next_email = "other@example.com"
    other = login(fake, client)["access_token"]

    fake.rate_limit_token(first, 120)
    before = time.time()
    limited = client.post("/v1/messages", json=message_body(), headers=api_headers(second))
    assert limited.status_code == 429
    assert limited.json()["error"]["type"] == "rate_limit_error"
    h = limited.headers
    assert 1 <= int(h["retry-after"]) <= 120
    assert h["anthropic-ratelimit-unified-status"] == "rejected"
    assert h["anthropic-ratelimit-unified-5h-status"] == "rejected"
    assert h["anthropic-ratelimit-unified-representative-claim"] == "five_hour"
    assert before + 100 < int(h["anthropic-ratelimit-unified-reset"]) <= before + 122
    assert h["anthropic-ratelimit-unified-5h-reset"] == h["anthropic-ratelimit-unified-reset"]
    assert client.post("/v1/messages", json=message_body(), headers=api_headers(other)).status_code == 200


def test_http_control_endpoints(fake: FakeAnthropic, client: httpx.Client) -> None:
    url = authorize_url("https://claude.ai/oauth/authorize", s256("c" * 43), "xyz")
    answer = client.post("/_fake/authorize", json={"authorize_url": url})
    assert answer.status_code == 200
    code = answer.json()["code"]
    assert answer.json()["code_with_state"] == f"{code}#xyz"
    token = client.post("/v1/oauth/token", json=exchange_body(code, "xyz", "c" * 43)).json()["access_token"]

    assert client.post("/_fake/control", json={"expire_all_access_tokens": True}).status_code == 200
    assert client.post("/v1/messages", json=message_body(), headers=api_headers(token)).status_code == 401
    assert client.post("/_fake/control", json={"bogus": 1}).status_code == 400
    assert client.get("/_fake/state").json()["messages_count"] == 1
    assert all(not r.path.startswith("/_fake/") for r in fake.requests)


def test_module_runs_standalone() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_anthropic", "--port", "0", "--access-ttl", "5"],
        cwd=Path(__file__).resolve().parent.parent,
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
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
