"""End to end: the real proxy process, logins from the CLI and over HTTP, chat, streaming, refresh."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest

from tests.backends import TEST_REDIS_URL, drop_our_tables, flush_redis
from tests.fake_anthropic import FakeAnthropic

from .harness import Proxy, chat, login_via_cli, proxy_env, start_proxy, stop_proxy

pytestmark = pytest.mark.e2e

SEED_MODELS = {"claude-opus-4.1", "claude-opus-4", "claude-sonnet-4", "claude-sonnet-3.7", "claude-haiku-3.5"}
IDENTITY = "You are Claude Code, Anthropic's official CLI for Claude."


@pytest.fixture(scope="module", params=["file-store", "postgres-redis-4-workers"])
def proxy(
    request: pytest.FixtureRequest, fake: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory, pg_dsn: str
) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("proxy")
    fake.access_ttl = 3600
    # DEBUG logging on purpose: stop_proxy() fails the run if the log holds a token.
    extra: dict[str, str] = {}
    args = ["--detailed_debug"]
    if request.param == "postgres-redis-4-workers":
        reset_shared_backends(pg_dsn)
        extra.update(CLAUDE_TOKEN_STORE="postgres", CLAUDE_OAUTH_DATABASE_URL=pg_dsn, REDIS_URL=TEST_REDIS_URL)
        args += ["--num_workers", "4"]
    running = start_proxy(proxy_env(fake, tmp, **extra), tmp / "proxy.log", *args)
    yield running
    stop_proxy(running)


def reset_shared_backends(pg_dsn: str) -> None:
    drop_our_tables(pg_dsn)
    flush_redis(TEST_REDIS_URL)


def test_not_logged_in_is_a_clear_401(proxy: Proxy) -> None:
    with proxy.client() as client:
        response = chat(client)
    assert response.status_code == 401
    assert "litellm claude login" in response.json()["error"]["message"]


def test_management_routes_are_admin_only(proxy: Proxy) -> None:
    for key in (None, "sk-not-the-master-key"):
        with proxy.client(key) as client:
            for method, path in [
                ("GET", "/auth/claude/oauth/start"),
                ("POST", "/auth/claude/oauth/exchange"),
                ("GET", "/auth/claude/oauth/status"),
                ("POST", "/auth/claude/oauth/refresh"),
                ("POST", "/auth/claude/oauth/logout"),
            ]:
                response = client.request(method, path, json={"code": "x"} if "exchange" in path else None)
                assert response.status_code == 401, (key, path, response.text)


def test_login_via_cli_is_seen_by_the_running_proxy(proxy: Proxy, fake: FakeAnthropic) -> None:
    login_via_cli(proxy, fake)
    status = proxy.cli("status")
    assert status.returncode == 0 and "✅ Valid" in status.stdout
    with proxy.client() as client:
        response = chat(client)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"].startswith("Hello from fake Claude")
    sent = fake.messages_requests()[-1]
    assert sent.headers["authorization"].startswith("Bearer sk-ant-oat01-")
    assert "oauth-2025-04-20" in sent.headers["anthropic-beta"]
    assert "x-api-key" not in sent.headers
    assert sent.body["model"] == "claude-haiku-4-5-20251001"  # claude-haiku-3.5 now names its successor


def test_identity_block_is_first_and_not_duplicated(proxy: Proxy, fake: FakeAnthropic) -> None:
    with proxy.client() as client:
        response = client.post(
            "/v1/chat/completions",
            json={
                "model": "claude-sonnet-4",
                "messages": [
                    {"role": "system", "content": IDENTITY},
                    {"role": "system", "content": "Answer in French."},
                    {"role": "user", "content": "Hi"},
                ],
            },
        )
    assert response.status_code == 200, response.text
    system = fake.messages_requests()[-1].body["system"]
    texts = [block["text"] if isinstance(block, dict) else block for block in system]
    assert texts[0] == IDENTITY and texts.count(IDENTITY) == 1 and "Answer in French." in texts


def test_models_list_and_other_models(proxy: Proxy) -> None:
    with proxy.client() as client:
        models = {m["id"] for m in client.get("/v1/models").json()["data"]}
        assert models >= SEED_MODELS and {"claude-haiku", "claude-sonnet", "claude-opus"} <= models
        for model in ("claude-opus-4.1", "claude-sonnet-3.7", "claude-opus"):
            response = chat(client, model, "What is 2+2?")
            assert response.status_code == 200, response.text


def read_stream(proxy: Proxy, model: str = "claude-haiku") -> tuple[str, list[str]]:
    with proxy.client() as client, client.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "Count to 5"}], "stream": True},
    ) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    text = "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content") or "" for line in lines[:-1]
    )
    return text, lines


def test_streaming(proxy: Proxy) -> None:
    text, lines = read_stream(proxy)
    assert len(lines) > 3 and text.startswith("Hello from fake Claude")


def test_forced_401_refreshes_once_and_retries(proxy: Proxy, fake: FakeAnthropic) -> None:
    for streaming in (False, True):
        before = fake.refresh_count
        fake.force_401_next(1)
        if streaming:
            text, _ = read_stream(proxy)
            assert text.startswith("Hello from fake Claude")
        else:
            with proxy.client() as client:
                assert chat(client).status_code == 200
        assert fake.refresh_count == before + 1


def test_expired_token_is_refreshed_before_use(proxy: Proxy, fake: FakeAnthropic) -> None:
    fake.access_ttl = 2
    with proxy.client() as client:
        assert client.post("/auth/claude/oauth/refresh").status_code == 200  # now holds a 2s token
        time.sleep(2.5)
        before_refresh, before_401 = fake.refresh_count, sum(r.status == 401 for r in fake.messages_requests())
        fake.access_ttl = 3600
        assert chat(client).status_code == 200
    assert fake.refresh_count == before_refresh + 1
    assert sum(r.status == 401 for r in fake.messages_requests()) == before_401  # refreshed ahead, no 401 seen


def test_login_via_http_and_logout(proxy: Proxy, fake: FakeAnthropic) -> None:
    with proxy.client() as client:
        start = client.get("/auth/claude/oauth/start", params={"account": "web"}).json()
        assert start["authorization_url"].startswith(fake.authorize_url) and start["state"]
        code, state = fake.authorize(start["authorization_url"])
        bad = client.post("/auth/claude/oauth/exchange", json={"code": code, "state": "forged"})
        assert bad.status_code == 400 and "unknown" in bad.json()["detail"]
        done = client.post("/auth/claude/oauth/exchange", json={"code": code, "state": state})
        assert done.status_code == 200 and done.json()["valid"] is True and done.json()["account"] == "web"
        again = client.post("/auth/claude/oauth/exchange", json={"code": code, "state": state})
        assert again.status_code == 400  # single use
        accounts = client.get("/auth/claude/oauth/status").json()["accounts"]
        assert {a["account"] for a in accounts} == {"default", "web"}
        assert all("sk-ant" not in json.dumps(a) for a in accounts)
        assert client.post("/auth/claude/oauth/logout", json={"account": "web"}).json()["logged_out"] is True
        status = client.get("/auth/claude/oauth/status", params={"account": "web"}).json()
        assert status["accounts"][0]["logged_in"] is False


@pytest.mark.parametrize(
    "body",
    [{"code": ""}, {"code": 5}, {"code": "x" * 5000}, {"code": "x", "account": "../../etc"}, {"unexpected": 1}, []],
)
def test_malformed_bodies_get_4xx_with_a_message(proxy: Proxy, body: object) -> None:
    with proxy.client() as client:
        response = client.post("/auth/claude/oauth/exchange", json=body)
    assert 400 <= response.status_code < 500 and response.json()["detail"]


def test_logout_via_cli_stops_requests(proxy: Proxy, fake: FakeAnthropic) -> None:
    assert proxy.cli("logout").returncode == 0
    with proxy.client() as client:
        client.post("/auth/claude/oauth/logout")  # the proxy's own cache goes too
        response = chat(client)
    assert response.status_code == 401 and "litellm claude login" in response.text
    login_via_cli(proxy, fake)
    with proxy.client() as client:
        assert chat(client).status_code == 200


def test_no_token_appears_in_the_debug_log(proxy: Proxy) -> None:
    log = proxy.log()
    assert "DEBUG" in log or "debug" in log.lower()  # the log really is at DEBUG
    leaked = sorted(set(re.findall(r"sk-ant-o[ar]t01-[A-Za-z0-9_\-]{6,}", log)))
    assert leaked == []
