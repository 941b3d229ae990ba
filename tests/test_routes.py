"""The admin routes in-process (ASGI): quota windows in /status, /metrics in both formats and its token, error mapping."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from litellm_claude_oauth import routes
from litellm_claude_oauth.errors import (
    ConfigError,
    NotLoggedInError,
    RateLimitedError,
    ReloginRequiredError,
    TokenStoreError,
)
from litellm_claude_oauth.manager import TokenManager
from litellm_claude_oauth.quotas import FileQuotaBackend, Quotas
from litellm_claude_oauth.ratelimit import Cooldown
from litellm_claude_oauth.settings import Settings
from litellm_claude_oauth.store import build_store
from litellm_claude_oauth.tokens import TokenSet

MASTER = "sk-master-for-routes"
METRICS_TOKEN = "metrics-read-only-token"
ADMIN = {"Authorization": f"Bearer {MASTER}"}
PROMETHEUS_ACCEPT = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1"


class Env:
    def __init__(self, app: FastAPI, manager: TokenManager, quotas: Quotas, client: httpx.AsyncClient):
        self.app, self.manager, self.quotas, self.client = app, manager, quotas, client


@pytest.fixture
async def api(env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    from litellm.proxy import proxy_server

    monkeypatch.setattr(proxy_server, "master_key", MASTER)
    settings = Settings.from_env(env | {"CLAUDE_OAUTH_METRICS_TOKEN": METRICS_TOKEN})
    manager = TokenManager(settings, build_store(settings))
    quotas = Quotas(settings, FileQuotaBackend(tmp_path / "quotas"), worker="route-worker")
    app = FastAPI()
    routes.mount(app)
    app.dependency_overrides[routes.current_manager] = lambda: manager
    app.dependency_overrides[routes.current_quotas] = lambda: quotas
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy") as client:
        yield Env(app, manager, quotas, client)
    await manager.aclose()


async def login(manager: TokenManager, account: str, **fields: Any) -> None:
    tokens = TokenSet(access_token=SecretStr(f"sk-ant-oat01-{account}-secret"), refresh_token=SecretStr("sk-ant-ort01-x"),
                      expires_at=time.time() + 3600, account_email=f"{account}@example.com", **fields)
    await manager.import_tokens(tokens, account)


async def test_status_carries_quota_windows_warnings_and_model_cooldowns(api: Env, tmp_path: Path) -> None:
    now = time.time()
    await login(api.manager, "alice", refresh_expires_at=now + 2 * 86400)
    await login(api.manager, "bob")
    await api.manager.health.cool_down("alice", Cooldown(until=now + 900, reason="7d_opus", model_family="opus"))
    # Another worker saw alice's windows; this one has seen nothing: /status merges them in.
    other = Quotas(api.manager.settings, FileQuotaBackend(tmp_path / "quotas"), worker="other-worker")
    other.observe("alice", {
        "anthropic-ratelimit-unified-5h-utilization": "0.62",
        "anthropic-ratelimit-unified-5h-status": "allowed",
        "anthropic-ratelimit-unified-5h-reset": str(int(now + 6480)),
        "anthropic-ratelimit-unified-7d-utilization": "0.31",
    })
    await other.sync()

    response = await api.client.get("/auth/claude/oauth/status", headers=ADMIN)
    assert response.status_code == 200, response.text
    accounts = {a["account"]: a for a in response.json()["accounts"]}
    alice = accounts["alice"]
    assert [(w["name"], w["utilization"]) for w in alice["quota"]["windows"]] == [("5h", 0.62), ("7d", 0.31)]
    assert alice["quota"]["windows"][0]["reset"] == int(now + 6480)
    assert alice["refresh_expires_at"] == pytest.approx(now + 2 * 86400)
    assert alice["warnings"] and "refresh token ends in 2.0 days" in alice["warnings"][0]
    assert alice["model_cooldowns"]["opus"] == pytest.approx(now + 900)
    assert accounts["bob"]["quota"] is None and accounts["bob"]["warnings"] == []
    assert "sk-ant-" not in response.text


async def test_metrics_json_by_default_prometheus_when_asked(api: Env) -> None:
    await login(api.manager, "alice")
    api.quotas.observe("alice", {"anthropic-ratelimit-unified-5h-utilization": "0.4"})
    url = "/auth/claude/oauth/metrics"

    plain = await api.client.get(url, headers=ADMIN)  # httpx sends Accept: */*
    assert plain.status_code == 200 and plain.headers["content-type"] == "application/json"
    assert set(plain.json()) == {"cache_hits", "store_reads", "refreshes"}
    assert (await api.client.get(url, headers=ADMIN | {"Accept": "application/json, text/plain, */*"})).json()

    for request in ({"headers": ADMIN | {"Accept": PROMETHEUS_ACCEPT}},
                    {"headers": ADMIN, "params": {"format": "prometheus"}}):
        scrape = await api.client.get(url, **request)  # type: ignore[arg-type]
        assert scrape.status_code == 200 and scrape.headers["content-type"].startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(scrape.text)}
        ratio = families["claude_oauth_quota_utilization_ratio"].samples
        assert [(s.labels, s.value) for s in ratio] == [({"account": "alice", "window": "5h"}, 0.4)]
        assert families["claude_oauth_account_logged_in"].samples[0].value == 1.0

    forced_json = await api.client.get(url, headers=ADMIN | {"Accept": PROMETHEUS_ACCEPT}, params={"format": "json"})
    assert forced_json.json()["cache_hits"] >= 0
    bad = await api.client.get(url, headers=ADMIN, params={"format": "xml"})
    assert bad.status_code == 422 and bad.json()["detail"]


async def test_the_metrics_token_opens_metrics_only(api: Env) -> None:
    token = {"Authorization": f"Bearer {METRICS_TOKEN}", "Accept": PROMETHEUS_ACCEPT}
    scrape = await api.client.get("/auth/claude/oauth/metrics", headers=token)
    assert scrape.status_code == 200 and "claude_oauth_" in scrape.text
    for path in ("/auth/claude/oauth/status", "/auth/claude/oauth/start"):
        refused = await api.client.get(path, headers=token)
        assert refused.status_code == 401 and refused.json()["detail"] == "invalid admin key"
    wrong = await api.client.get("/auth/claude/oauth/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}x"})
    assert wrong.status_code == 401
    assert (await api.client.get("/auth/claude/oauth/metrics")).status_code == 401


async def test_without_a_metrics_token_setting_only_the_admin_key_works(api: Env) -> None:
    api.manager.settings = api.manager.settings.model_copy(update={"metrics_token": None})
    response = await api.client.get("/auth/claude/oauth/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        (NotLoggedInError("ghost"), 404, None),
        (ReloginRequiredError("alice"), 409, None),
        (RateLimitedError("slow down", retry_after=12.2), 429, "13"),
        (TokenStoreError("cannot reach PostgreSQL at db:5432"), 503, None),
        (ConfigError("CLAUDE_TOKEN_STORE must be 'file' or 'postgres'"), 503, None),
    ],
)
async def test_errors_answer_with_their_http_status(
    api: Env, monkeypatch: pytest.MonkeyPatch, error: Exception, status: int, retry_after: str | None
) -> None:
    async def fail(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(api.manager, "force_refresh", fail)
    response = await api.client.post("/auth/claude/oauth/refresh", headers=ADMIN, json={"account": "alice"})
    assert response.status_code == status
    assert response.json() == {"detail": str(error)}
    assert response.headers.get("retry-after") == retry_after


async def test_a_store_outage_listing_accounts_is_503(api: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    async def down() -> list[str]:
        raise TokenStoreError("cannot reach PostgreSQL at db:5432")

    monkeypatch.setattr(api.manager, "accounts", down)
    response = await api.client.get("/auth/claude/oauth/status", headers=ADMIN)
    assert response.status_code == 503 and "cannot reach PostgreSQL" in response.json()["detail"]


async def test_the_key_is_checked_before_the_body_is_parsed(api: Env) -> None:
    response = await api.client.post("/auth/claude/oauth/exchange", content=b"{not json",
                                     headers={"Content-Type": "application/json"})
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    parsed = await api.client.post("/auth/claude/oauth/exchange", content=b"{not json",
                                   headers=ADMIN | {"Content-Type": "application/json"})
    assert parsed.status_code == 422


async def test_routes_go_after_the_apps_own_but_ahead_of_a_catch_all(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.responses import PlainTextResponse
    from litellm.proxy import proxy_server
    from starlette.routing import Mount
    from starlette.types import Receive, Scope, Send

    async def catch_all(scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse("caught", status_code=299)(scope, receive, send)

    monkeypatch.setattr(proxy_server, "master_key", MASTER)
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat() -> dict[str, str]:
        return {"ok": "chat"}

    app.router.routes.append(Mount("/", app=catch_all))
    routes.mount(app)

    def position(path: str, method: str) -> int:
        scope = {"type": "http", "path": path, "root_path": "", "method": method, "headers": [], "query_string": b""}
        return next(i for i, r in enumerate(app.router.routes) if r.matches(scope)[0].name == "FULL")

    # Chat requests no longer try (and fail) our routes first; ours still beat the catch-all.
    assert position("/v1/chat/completions", "POST") < position("/auth/claude/oauth/status", "GET")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy") as client:
        assert (await client.get("/auth/claude/oauth/status")).status_code == 401
        assert (await client.get("/auth/claude/oauth/ui")).status_code == 200
        assert (await client.post("/v1/chat/completions")).json() == {"ok": "chat"}
        assert (await client.get("/elsewhere")).status_code == 299


def test_on_litellms_app_chat_is_matched_before_our_routes() -> None:
    from litellm.proxy.proxy_server import app

    routes.mount(app)
    scope = {"type": "http", "root_path": "", "headers": [], "query_string": b""}

    def position(path: str, method: str) -> int:
        return next(i for i, r in enumerate(app.router.routes)
                    if r.matches({**scope, "path": path, "method": method})[0].name == "FULL")

    # /v1/messages is not here to compare: newer LiteLLM adds it on its first request, after every route it had.
    assert position("/v1/chat/completions", "POST") < position("/auth/claude/oauth/status", "GET")


def test_mounting_does_not_make_fastapi_compile_litellms_routes() -> None:
    """Probing each route with matches() compiled all of LiteLLM's (~130k objects in every full GC's walk).

    In a fresh interpreter: once any test has matched a request on LiteLLM's app, its routes are compiled.
    """
    import subprocess
    import sys

    script = (
        "import gc\n"
        "from litellm.proxy.proxy_server import app\n"
        "from litellm_claude_oauth import routes\n"
        "gc.collect(); before = len(gc.get_objects())\n"
        "routes.mount(app)\n"
        "gc.collect(); print(len(gc.get_objects()) - before)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert int(done.stdout.split()[-1]) < 10_000
