"""Shared fixtures: an isolated environment, and a respx stand-in for Anthropic's token endpoint."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
import respx

from .backends import TEST_DSN, ensure_database

if TYPE_CHECKING:
    from litellm_claude_oauth.manager import TokenManager
    from litellm_claude_oauth.store.base import AccountRecord
from .fake_anthropic.oauth_state import CodeView, LiveRefreshView, OAuthState, delegated, parse_body

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS", "True")

TOKEN_URL = "https://auth.test/v1/oauth/token"

KEY_A = "a1" * 32
KEY_B = "b2" * 32

_ENV_PREFIXES = ("CLAUDE_", "REDIS_", "DATABASE_URL", "USER_ID")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A clean, offline environment: tokens under tmp_path, encryption on, a fake token URL."""
    for name in list(os.environ):
        if name.startswith(_ENV_PREFIXES):
            monkeypatch.delenv(name)
    values = {
        "CLAUDE_TOKEN_FILE": str(tmp_path / "tokens" / "claude_tokens.json"),
        "CLAUDE_TOKEN_ENCRYPTION_KEY": KEY_A,
        "CLAUDE_OAUTH_TOKEN_URL": TOKEN_URL,
        "CLAUDE_OAUTH_AUTHORIZE_URL": "https://auth.test/oauth/authorize",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


class FakeTokenEndpoint:
    """Anthropic's token endpoint for respx: the same state machine as the aiohttp fake.

    Rules (PKCE, redirect binding, single-use rotating refresh tokens, User-Agent edge) live
    in :class:`tests.fake_anthropic.oauth_state.OAuthState`. What unit tests rely on stays:
    tokens are numbered (``sk-ant-oat01-access1``, ``sk-ant-ort01-refresh1``, …), the account
    is person@example.com, ``expires_in`` defaults to 3600 and no ``refresh_token_expires_in``
    is sent (so the configured refresh lifetime applies); ``codes[code] = (challenge, state)``
    plants a code that is not bound to a client or redirect.
    """

    def __init__(self, *, rotate: bool = True, expires_in: int = 3600) -> None:
        self.state = OAuthState(access_ttl=expires_in, rotate=rotate, report_refresh_ttl=False,
                                default_email="person@example.com", token_style="serial")  # fmt: skip
        self.bodies: list[dict] = []
        self.fail_with: httpx.Response | None = None
        self.codes = CodeView(self.state)
        self.live_refresh = LiveRefreshView(self.state)

    rotate = delegated("state", "rotate")
    expires_in = delegated("state", "access_ttl")

    def authorize(self, authorize_url: str) -> str:
        """What a person's browser does: returns the ``code#state`` the callback page shows."""
        query = {k: v[0] for k, v in parse_qs(urlparse(authorize_url).query).items()}
        code, state = self.state.authorize(query)
        return f"{code}#{state}"

    def issue(self) -> dict:
        """The token response of a fresh login, without the browser dance."""
        return self.state.issue(scope="user:inference user:profile")

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = parse_body(request.headers.get("content-type", ""), request.content)
        self.bodies.append(body if body is not None else {})
        if self.fail_with is not None:
            return self.fail_with
        reply = self.state.handle(request.headers, request.headers.get("content-type", ""), request.content)
        if reply.is_json:
            return httpx.Response(reply.status, json=reply.body, headers=dict(reply.headers))
        return httpx.Response(reply.status, text=reply.body, headers=dict(reply.headers))

    @property
    def refreshes(self) -> int:
        return sum(1 for b in self.bodies if b.get("grant_type") == "refresh_token")


@pytest.fixture
def token_endpoint() -> Iterator[FakeTokenEndpoint]:
    fake = FakeTokenEndpoint()
    with respx.mock(assert_all_called=False) as router:
        router.post(TOKEN_URL).mock(side_effect=fake)
        yield fake


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """The test database (created on first use) on the real PostgreSQL."""
    return ensure_database(TEST_DSN)


# -- a manager on the respx token endpoint, with a clock the test moves ---------------------


class Clock:
    """A clock tests move by hand (``clock.now += 3600``)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def manager(env: dict[str, str], clock: Clock) -> TokenManager:
    from litellm_claude_oauth.manager import TokenManager
    from litellm_claude_oauth.settings import Settings

    return TokenManager.from_settings(Settings.from_env(), clock=clock)


async def logged_in(manager: TokenManager, endpoint: FakeTokenEndpoint, account: str | None = None) -> AccountRecord:
    start = await manager.start_login(account)
    return await manager.complete_login(endpoint.authorize(start.authorization_url))
