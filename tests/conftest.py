"""Shared fixtures: an isolated environment, and a respx stand-in for Anthropic's token endpoint."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
import respx

from .backends import TEST_DSN, ensure_database

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


@dataclass
class FakeTokenEndpoint:
    """Anthropic's token endpoint in miniature: checks PKCE, rotates refresh tokens."""

    rotate: bool = True
    expires_in: int = 3600
    codes: dict[str, tuple[str, str]] = field(default_factory=dict)  # code -> (challenge, state)
    live_refresh: set[str] = field(default_factory=set)
    bodies: list[dict] = field(default_factory=list)
    fail_with: httpx.Response | None = None
    _serial: itertools.count = field(default_factory=lambda: itertools.count(1))

    def authorize(self, authorize_url: str) -> str:
        """What a person's browser does: returns the ``code#state`` the callback page shows."""
        query = {k: v[0] for k, v in parse_qs(urlparse(authorize_url).query).items()}
        assert query["code_challenge_method"] == "S256"
        code = secrets.token_urlsafe(16)
        self.codes[code] = (query["code_challenge"], query["state"])
        return f"{code}#{query['state']}"

    def issue(self) -> dict:
        n = next(self._serial)
        refresh = f"sk-ant-ort01-refresh{n}"
        self.live_refresh.add(refresh)
        return {
            "access_token": f"sk-ant-oat01-access{n}",
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": "user:inference user:profile",
            "account": {"uuid": "acc-1", "email_address": "person@example.com"},
            "organization": {"uuid": "org-1", "name": "Example Org"},
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        if self.fail_with is not None:
            return self.fail_with
        if body.get("grant_type") == "authorization_code":
            bound = self.codes.pop(body.get("code"), None)
            digest = hashlib.sha256(body.get("code_verifier", "").encode()).digest()
            challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            if bound is None or bound != (challenge, body.get("state")):
                return httpx.Response(400, json={"error": "invalid_grant", "error_description": "bad code"})
            return httpx.Response(200, json=self.issue())
        if body.get("grant_type") == "refresh_token":
            token = body.get("refresh_token")
            if token not in self.live_refresh:
                return httpx.Response(400, json={"error": "invalid_grant", "error_description": "refresh token revoked"})
            data = self.issue()
            if self.rotate:
                self.live_refresh.discard(token)
            else:
                self.live_refresh.discard(data.pop("refresh_token"))
            return httpx.Response(200, json=data)
        return httpx.Response(400, json={"error": "unsupported_grant_type"})

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
