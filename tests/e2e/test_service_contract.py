"""The real proxy against a fake that behaves like the live service (research/protocol-2026.md): what a user sees.

Where sources disagree the fake takes the stricter side and these tests ask for behaviour
that works under both: e.g. the identity is sent as its own whole block (accepted whether
or not a plain string that merely starts with it would be), and a quota 429 rests the
account only for the window Anthropic marks rejected (never until an overage reset).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.fake_anthropic import FakeAnthropic

from .harness import MASTER_KEY, Proxy, cli_login, proxy_env, start_proxy, stop_proxy

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "hi"}]
IDENTITY = "You are Claude Code, Anthropic's official CLI for Claude."
STORED = "stored@example.com"
CLIENT = "client@example.com"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proxy, FakeAnthropic]]:
    tmp = tmp_path_factory.mktemp("contract")
    with FakeAnthropic(port=0) as fake:
        env = proxy_env(fake, tmp)
        fake.next_email = STORED
        cli_login(env, fake)
        proxy = start_proxy(env, tmp / "proxy.log")
        try:
            yield proxy, fake
        finally:
            stop_proxy(proxy)


@pytest.fixture
def fresh(served: tuple[Proxy, FakeAnthropic]) -> Iterator[tuple[Proxy, FakeAnthropic]]:
    proxy, fake = served
    fake.clear_rate_limits()
    fake.clear_refusals()
    fake.reset_records()
    yield proxy, fake
    fake.clear_rate_limits()
    fake.clear_refusals()
    proxy.cli("logout")
    cli_login(proxy.env, fake)  # clears any cooldown these tests left on the stored account


def cooldown_of_stored_account(proxy: Proxy) -> float | None:
    done = proxy.cli("status", "--json")
    return json.loads(done.stdout)["accounts"][0]["cooldown_until"]


def messages(client: httpx.Client, model: str, **extra: object) -> httpx.Response:
    return client.post("/v1/messages", json={"model": model, "max_tokens": 10, "messages": MESSAGES, **extra})


def test_claude_codes_default_ids_and_retired_ids(fresh: tuple[Proxy, FakeAnthropic]) -> None:
    """Claude Code asks for Anthropic's own ids (claude-opus-4-8) without ANTHROPIC_MODEL."""
    proxy, _ = fresh
    with proxy.client() as client:
        assert messages(client, "claude-opus-4-8").status_code == 200
        retired = messages(client, "claude-3-5-haiku-20241022")
    assert retired.status_code == 404
    assert "litellm claude models" in retired.text


def test_a_five_hour_429_rests_the_account_for_five_hours_not_until_the_overage_reset(
    fresh: tuple[Proxy, FakeAnthropic],
) -> None:
    proxy, fake = fresh
    fake.rate_limit_token(STORED, reset_in_seconds=600)  # 5h rejected; overage-reset far later
    with proxy.client() as client:
        first = messages(client, "claude-sonnet-4.6")
        assert first.status_code == 429
        assert 500 < int(first.headers["retry-after"]) <= 601
        upstream_before = len(fake.messages_requests())
        second = messages(client, "claude-haiku-4.5")
    assert second.status_code == 429  # answered from the cooldown, not sent upstream
    assert len(fake.messages_requests()) == upstream_before
    assert cooldown_of_stored_account(proxy) is not None


def test_a_model_scoped_limit_rests_only_that_family(fresh: tuple[Proxy, FakeAnthropic]) -> None:
    proxy, fake = fresh
    fake.rate_limit_token(STORED, reset_in_seconds=3 * 86400, profile="seven_day_opus")
    with proxy.client() as client:
        assert messages(client, "claude-opus-4.8").status_code == 429
        assert messages(client, "claude-sonnet-4.6").status_code == 200
        assert messages(client, "claude-opus-4.8").status_code == 429


@pytest.mark.parametrize(("kind", "status", "words"), [
    ("extra_usage", 400, "extra usage"),
    ("claude_code_only", 400, "Claude Code"),
    ("throttled", 429, "throttling"),
])
def test_refusals_reach_the_client_as_one_clear_line_and_are_sent_upstream_once(
    fresh: tuple[Proxy, FakeAnthropic], kind: str, status: int, words: str
) -> None:
    proxy, fake = fresh
    fake.refuse(kind)
    with proxy.client() as client:
        response = messages(client, "claude-sonnet-4.6")
    assert response.status_code == status
    assert words.lower() in response.text.lower()
    if kind != "throttled":  # retryable by nature; LiteLLM may retry it
        assert len(fake.messages_requests()) == 1
    assert cooldown_of_stored_account(proxy) is None  # a refusal is not quota


def test_the_identity_gate_429_is_explained_not_mistaken_for_quota(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with FakeAnthropic(port=0) as fake:
        env = proxy_env(fake, tmp_path, CLAUDE_CODE_SYSTEM_PROMPT="")  # the operator turned the identity off
        cli_login(env, fake)
        proxy = start_proxy(env, tmp_path / "proxy.log")
        try:
            with proxy.client() as client:
                refused = messages(client, "claude-sonnet-4.6")
                haiku = messages(client, "claude-haiku-4.5")  # Haiku is exempt from the gate
        finally:
            stop_proxy(proxy)
        assert refused.status_code == 429
        assert "identity system block" in refused.text
        assert haiku.status_code == 200  # no cooldown: the account is fine
        sonnet_calls = [r for r in fake.messages_requests() if "sonnet" in r.body.get("model", "")]
        assert len(sonnet_calls) == 1  # LiteLLM's retries are answered without going upstream again


def test_the_identity_block_is_whole_and_first(fresh: tuple[Proxy, FakeAnthropic]) -> None:
    proxy, fake = fresh
    with proxy.client() as client:
        response = messages(client, "claude-sonnet-4.6", system=IDENTITY + "\nBe brief.")
    assert response.status_code == 200
    system = fake.messages_requests()[-1].body["system"]
    assert [b["text"] for b in system] == [IDENTITY, "Be brief."]
    assert fake.messages_requests()[-1].headers["user-agent"].startswith("litellm-claude-oauth/")


def with_own_login(proxy: Proxy, token: str, path: str, body: dict[str, object],
                   **headers: str) -> httpx.Response:
    """A request as Claude Code sends it with its own login: the LiteLLM key in x-litellm-api-key."""
    sent = {"x-litellm-api-key": f"Bearer {MASTER_KEY}", "authorization": f"Bearer {token}",
            "anthropic-version": "2023-06-01", **headers}
    with httpx.Client(base_url=proxy.url, timeout=60) as client:
        return client.post(path, json=body, headers=sent)


# The client brings its own system blocks (Claude Code does); the proxy adds nothing.
OWN_BODY = {"model": "claude-sonnet-4.6", "max_tokens": 10, "messages": MESSAGES,
            "system": [{"type": "text", "text": IDENTITY}]}


def test_a_clients_own_login_gets_its_own_429_with_every_rate_limit_header(fresh: tuple[Proxy, FakeAnthropic]) -> None:
    """Issue 11: Claude Code shows the reset time from these headers; nothing touches the stored account."""
    proxy, fake = fresh
    own = fake.issue_tokens(CLIENT)["access_token"]
    fake.rate_limit_token(CLIENT, reset_in_seconds=900)
    response = with_own_login(proxy, own, "/v1/messages", OWN_BODY, **{"anthropic-beta": "oauth-2025-04-20"})
    assert response.status_code == 429
    names = {k.lower() for k in response.headers}
    assert "retry-after" in names
    assert any(name.endswith("anthropic-ratelimit-unified-5h-status") for name in names), sorted(names)
    sent = fake.messages_requests()[-1].headers["authorization"]
    assert sent == f"Bearer {own}"
    assert cooldown_of_stored_account(proxy) is None


def test_a_clients_own_login_is_still_metered_per_litellm_key(fresh: tuple[Proxy, FakeAnthropic]) -> None:
    """Issue 11: spend tracking and budgets keep working per LiteLLM key in passthrough mode."""
    proxy, fake = fresh
    own = fake.issue_tokens(CLIENT)["access_token"]
    response = with_own_login(proxy, own, "/v1/messages", OWN_BODY)
    assert response.status_code == 200, response.text[:300]
    assert fake.messages_requests()[-1].headers["authorization"] == f"Bearer {own}"
    assert float(response.headers["x-litellm-response-cost"]) > 0  # priced and charged to the LiteLLM key
    assert "x-litellm-key-spend" in response.headers


def test_a_clients_own_login_works_on_the_openai_route_too(fresh: tuple[Proxy, FakeAnthropic]) -> None:
    """Issue 11: LiteLLM forwards a client's credential only on /v1/messages; the plugin does it on chat too."""
    proxy, fake = fresh
    own = fake.issue_tokens(CLIENT)["access_token"]
    chat = {"model": "claude-haiku-4.5", "max_tokens": 10, "messages": MESSAGES}
    response = with_own_login(proxy, own, "/v1/chat/completions", chat)
    bogus = with_own_login(proxy, "sk-ant-oat01-bogus", "/v1/chat/completions", chat)
    assert response.status_code == 200, response.text[:300]
    assert fake.messages_requests()[-2].headers["authorization"] == f"Bearer {own}"
    assert bogus.status_code == 401  # never answered by the stored account
    assert fake.messages_requests()[-1].headers["authorization"] == "Bearer sk-ant-oat01-bogus"
