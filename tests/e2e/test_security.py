"""The audit's end-to-end probes (research/audit-2026-11/e2e_probe_*.py), as regressions through the real proxy.

H3: a client-chosen api_base, or a client-supplied ``claude-oauth:<account>`` api_key, never
gets a Claude token. H4: a request's ``metadata`` never chooses the account. M7: logging
callbacks never see a token. M4: a bad plugin setting never breaks other deployments.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_anthropic import FakeAnthropic

from .harness import Proxy, cli_login, proxy_env, start_proxy, stop_proxy

pytestmark = pytest.mark.e2e

TOKEN = re.compile(r"sk-ant-o[ar]t01-[A-Za-z0-9_\-]{8,}")
PLACEHOLDER = "sk-ant-oat01-litellm-claude-oauth-placeholder"
MESSAGES = [{"role": "user", "content": "hi"}]


def config(tmp: Path, attacker: FakeAnthropic) -> Path:
    path = tmp / "config.yaml"
    path.write_text(
        "model_list:\n"
        "  - model_name: claude-haiku-4.5\n"
        "    litellm_params: {model: anthropic/claude-haiku-4-5-20251001, api_key: claude-oauth,"
        " configurable_clientside_auth_params: [api_base]}\n"
        "  - model_name: someone-elses-claude\n"
        f"    litellm_params: {{model: anthropic/claude-haiku-4-5-20251001, api_key: sk-ant-api03-not-ours,"
        f" api_base: '{attacker.url}', configurable_clientside_auth_params: [api_key]}}\n"
        "  - model_name: mock-gpt\n"
        "    litellm_params: {model: openai/gpt-4o, api_key: sk-not-ours, mock_response: 'hi from mock'}\n"
        "litellm_settings:\n"
        "  callbacks: [litellm_claude_oauth.hook.handler, tests.e2e.log_kwargs.dump]\n"
        "general_settings:\n"
        "  master_key: os.environ/LITELLM_MASTER_KEY\n"
    )
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proxy, FakeAnthropic, FakeAnthropic, Path]]:
    tmp = tmp_path_factory.mktemp("security")
    dump = tmp / "kwargs.jsonl"
    with FakeAnthropic(port=0) as fake, FakeAnthropic(port=0) as attacker:
        env = proxy_env(fake, tmp, KWARGS_DUMP=str(dump), CLAUDE_OAUTH_ACCOUNT_MAP='{"key:vip-alias": "vip"}')
        cli_login(env, fake, "vip")  # only "vip" is logged in; "default" is not
        proxy = start_proxy(env, tmp / "proxy.log", config=config(tmp, attacker))
        try:
            yield proxy, fake, attacker, dump
        finally:
            stop_proxy(proxy)


def test_a_client_api_base_never_receives_a_token(stack) -> None:  # type: ignore[no-untyped-def]
    proxy, _fake, attacker, _dump = stack
    with proxy.client() as client:
        response = client.post("/v1/chat/completions", json={
            "model": "claude-haiku-4.5", "messages": MESSAGES, "max_tokens": 10, "api_base": attacker.url,
        })
    assert response.status_code >= 400
    assert [r.headers.get("authorization") for r in attacker.messages_requests()] == []


def test_a_client_cannot_name_an_account_through_api_key(stack) -> None:  # type: ignore[no-untyped-def]
    proxy, _fake, attacker, _dump = stack
    attacker.reset_records()
    with proxy.client() as client:
        response = client.post("/v1/chat/completions", json={
            "model": "someone-elses-claude", "messages": MESSAGES, "max_tokens": 10, "api_key": "claude-oauth:vip",
        })
    assert response.status_code == 401
    assert "claude-oauth markers" in response.text
    sent = [r.headers.get("authorization", "") + r.headers.get("x-api-key", "") for r in attacker.messages_requests()]
    assert not any(TOKEN.search(s) for s in sent)


def test_request_metadata_never_chooses_the_account(stack) -> None:  # type: ignore[no-untyped-def]
    """H4: Claude Code sends metadata.user_id on every request; a client can write any key alias there."""
    proxy, _fake, _attacker, _dump = stack
    with proxy.client() as client:
        for metadata in ({"user_api_key": "vip-alias"}, {"user_api_key_alias": "vip-alias"}, {"user_id": "x"}):
            response = client.post("/v1/messages", json={
                "model": "claude-haiku-4.5", "max_tokens": 10, "messages": MESSAGES, "metadata": metadata,
            })
            assert response.status_code == 401, (metadata, response.text[:200])
            assert "'default'" in response.text  # the unmapped master key gets the default account


def test_logging_callbacks_never_see_a_token(stack) -> None:  # type: ignore[no-untyped-def]
    """M7: a logger that dumps raw kwargs must not ship the subscription token off-box."""
    proxy, fake, _attacker, dump = stack
    fake.reset_records()
    with proxy.client() as client:
        response = client.post("/v1/chat/completions", json={"model": "claude-haiku-4.5", "messages": MESSAGES,
                                                               "max_tokens": 10, "user": "vip-user"},
                               headers={"x-litellm-tags": "t"})
    # The master key maps to "default" (not logged in); log "vip" in as default too, to get a 200.
    if response.status_code == 401:
        cli_login(proxy.env, fake)
        with proxy.client() as client:
            response = client.post("/v1/chat/completions",
                                   json={"model": "claude-haiku-4.5", "messages": MESSAGES, "max_tokens": 10})
    assert response.status_code == 200, response.text[:300]
    sent = fake.messages_requests()[-1].headers["authorization"].removeprefix("Bearer ")
    assert TOKEN.fullmatch(sent) and sent != PLACEHOLDER  # the real token went upstream…
    logged = dump.read_text()
    assert "success" in logged
    assert sent not in logged  # …and nowhere into the callbacks' kwargs
    assert {m.group(0) for m in TOKEN.finditer(logged)} <= {PLACEHOLDER}


def test_a_bad_plugin_setting_leaves_other_deployments_alone(tmp_path: Path) -> None:
    """M4: one typo in a CLAUDE_ variable used to make every model on the proxy answer 500."""
    with FakeAnthropic(port=0) as fake, FakeAnthropic(port=0) as attacker:
        env = proxy_env(fake, tmp_path, CLAUDE_TOKEN_ENCRYPTION_KEY="typo", KWARGS_DUMP=str(tmp_path / "d.jsonl"))
        proxy = start_proxy(env, tmp_path / "proxy.log", config=config(tmp_path, attacker))
        try:
            with proxy.client() as client:
                mock = client.post("/v1/chat/completions", json={"model": "mock-gpt", "messages": MESSAGES})
                ours = client.post("/v1/chat/completions",
                                   json={"model": "claude-haiku-4.5", "messages": MESSAGES, "max_tokens": 10})
        finally:
            stop_proxy(proxy)
    assert mock.status_code == 200 and "hi from mock" in mock.text
    assert ours.status_code == 503
    assert "CLAUDE_TOKEN_ENCRYPTION_KEY" in json.dumps(ours.json())
