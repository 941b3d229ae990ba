"""Token and login-state models, and the expiry arithmetic.

Tokens are ``SecretStr`` so that a stray ``repr`` or log line shows ``**********``;
only :meth:`TokenSet.to_storage` reveals them, for the (encrypted) store.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from .errors import OAuthError

ONE_YEAR = 365 * 24 * 3600
DAY = 24 * 3600
# Used when a token response has no expires_in (Anthropic sends 28800; tests use 3600).
DEFAULT_ACCESS_LIFETIME = 3600.0


def redact(token: str | None) -> str:
    """Enough of a token to tell two apart, never enough to use one."""
    if not token:
        return "-"
    return f"{token[:14]}…{token[-4:]}" if len(token) > 24 else "****"


class TokenSet(BaseModel):
    model_config = ConfigDict(frozen=True)

    access_token: SecretStr
    refresh_token: SecretStr | None = None
    expires_at: float  # unix seconds
    token_type: str = "Bearer"
    scope: str | None = None
    account_uuid: str | None = None
    account_email: str | None = None
    organization_uuid: str | None = None
    organization_name: str | None = None
    subscription_type: str | None = None
    obtained_at: float = Field(default_factory=time.time)
    # Absolute end of the refresh token's life (unix seconds). Refreshing does not extend
    # it; None in records written before this field existed (see refresh_expires).
    refresh_expires_at: float | None = None
    source: Literal["oauth", "claude-code", "setup-token", "import"] = "oauth"

    @property
    def access(self) -> str:
        return self.access_token.get_secret_value()

    @property
    def refresh(self) -> str | None:
        return self.refresh_token.get_secret_value() if self.refresh_token else None

    def expires_in(self, now: float | None = None) -> float:
        return self.expires_at - (time.time() if now is None else now)

    def is_expired(self, now: float | None = None) -> bool:
        return self.expires_in(now) <= 0

    def effective_refresh_margin(self, margin: float) -> float:
        """``margin``, but at most half the token's lifetime.

        A margin as long as the lifetime would make every fresh token "due", so each
        request would rotate the refresh token.
        """
        return max(0.0, min(margin, (self.expires_at - self.obtained_at) / 2))

    def needs_refresh(self, margin: float, now: float | None = None) -> bool:
        return self.expires_in(now) <= self.effective_refresh_margin(margin)

    def refresh_expires(self, default_days: float | None = None) -> float | None:
        """When the refresh token dies: the recorded time, else an estimate.

        Records from before ``refresh_expires_at`` existed get ``obtained_at`` plus
        ``default_days``; that errs early, since ``obtained_at`` is the last refresh,
        not the login. None when there is no refresh token or no way to tell.
        """
        if self.refresh_token is None:
            return None
        if self.refresh_expires_at is not None:
            return self.refresh_expires_at
        if default_days is None:
            return None
        return self.obtained_at + default_days * DAY

    def refresh_expiring(
        self, warn_seconds: float, now: float | None = None, *, default_days: float | None = None
    ) -> bool:
        """True from ``warn_seconds`` before the refresh token's end (and after it)."""
        end = self.refresh_expires(default_days)
        return end is not None and end - (time.time() if now is None else now) <= warn_seconds

    def refresh_expired(self, now: float | None = None, *, default_days: float | None = None) -> bool:
        return self.refresh_expiring(0, now, default_days=default_days)

    @classmethod
    def from_token_response(
        cls,
        data: Mapping[str, Any],
        *,
        previous: TokenSet | None = None,
        now: float | None = None,
        default_refresh_lifetime: float | None = None,
    ) -> TokenSet:
        """Build from Anthropic's token endpoint JSON.

        A refresh response may omit the refresh token (no rotation) or the account:
        both are carried over from ``previous`` so nothing is lost.

        The refresh token's end is ``refresh_token_expires_in`` when the response has
        it; otherwise a refresh keeps the previous end (refreshing does not extend the
        absolute lifetime) and a login gets ``now + default_refresh_lifetime`` seconds.
        Raises :class:`OAuthError` for a response that is not a usable token.
        """
        now = time.time() if now is None else now
        access = data.get("access_token")
        if not isinstance(access, str) or not access:
            raise OAuthError("Claude token endpoint answered without an access_token", reached_server=True)
        account = _mapping(data.get("account"))
        org = _mapping(data.get("organization"))
        refresh = data.get("refresh_token") or (previous.refresh if previous else None)
        expires_in = _seconds(data, "expires_in")
        refresh_expires_in = _seconds(data, "refresh_token_expires_in")
        if not refresh:
            refresh_expires_at = None
        elif refresh_expires_in is not None:
            refresh_expires_at = now + refresh_expires_in
        elif previous is not None:
            refresh_expires_at = previous.refresh_expires(
                None if default_refresh_lifetime is None else default_refresh_lifetime / DAY
            )
        elif default_refresh_lifetime is not None:
            refresh_expires_at = now + default_refresh_lifetime
        else:
            refresh_expires_at = None
        return cls(
            access_token=SecretStr(access),
            refresh_token=SecretStr(str(refresh)) if refresh else None,
            expires_at=now + (DEFAULT_ACCESS_LIFETIME if expires_in is None else expires_in),
            token_type=str(data.get("token_type") or "Bearer"),
            scope=data.get("scope") or (previous.scope if previous else None),
            account_uuid=account.get("uuid") or (previous.account_uuid if previous else None),
            account_email=account.get("email_address") or (previous.account_email if previous else None),
            organization_uuid=org.get("uuid") or (previous.organization_uuid if previous else None),
            organization_name=org.get("name") or (previous.organization_name if previous else None),
            subscription_type=previous.subscription_type if previous else None,
            obtained_at=now,
            refresh_expires_at=refresh_expires_at,
            source="oauth",
        )

    @classmethod
    def from_claude_code(cls, data: Mapping[str, Any]) -> TokenSet:
        """Claude Code's ``~/.claude/.credentials.json`` (``expiresAt`` is in milliseconds)."""
        oauth = data.get("claudeAiOauth", data)
        if not isinstance(oauth, Mapping) or not oauth.get("accessToken"):
            raise ValueError("no claudeAiOauth.accessToken in this file")
        expires_ms = oauth.get("expiresAt")
        scopes = oauth.get("scopes")
        return cls(
            access_token=SecretStr(str(oauth["accessToken"])),
            refresh_token=SecretStr(str(oauth["refreshToken"])) if oauth.get("refreshToken") else None,
            expires_at=float(expires_ms) / 1000 if expires_ms else time.time() + 3600,
            scope=" ".join(scopes) if isinstance(scopes, list) else scopes,
            subscription_type=oauth.get("subscriptionType"),
            source="claude-code",
        )

    @classmethod
    def from_setup_token(cls, token: str, *, now: float | None = None) -> TokenSet:
        """``claude setup-token`` output: a long-lived access token with no refresh token."""
        token = token.strip()
        if not token.startswith("sk-ant-oat"):
            raise ValueError("a setup token starts with sk-ant-oat")
        now = time.time() if now is None else now
        return cls(access_token=SecretStr(token), expires_at=now + ONE_YEAR, obtained_at=now, source="setup-token")

    def to_claude_code(self) -> dict[str, Any]:
        return {
            "claudeAiOauth": {
                "accessToken": self.access,
                "refreshToken": self.refresh,
                "expiresAt": int(self.expires_at * 1000),
                "scopes": self.scope.split() if self.scope else [],
                "subscriptionType": self.subscription_type,
            }
        }

    def to_storage(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["access_token"] = self.access
        data["refresh_token"] = self.refresh
        return data

    def public_view(self, now: float | None = None) -> dict[str, Any]:
        """What status/export show by default: everything but usable secrets."""
        return {
            "access_token": redact(self.access),
            "refresh_token": redact(self.refresh),
            "expires_at": self.expires_at,
            "expires_in_seconds": round(self.expires_in(now)),
            "expired": self.is_expired(now),
            "refreshable": self.refresh_token is not None,
            "refresh_expires_at": self.refresh_expires_at,
            "scope": self.scope,
            "account_email": self.account_email,
            "account_uuid": self.account_uuid,
            "organization_name": self.organization_name,
            "organization_uuid": self.organization_uuid,
            "source": self.source,
        }


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _seconds(data: Mapping[str, Any], key: str) -> float | None:
    """A positive number of seconds from a token response; None when absent or 0."""
    value = data.get(key)
    if value is None or value == "" or value == 0:
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        # The value is a number Anthropic sent, not a secret; still, keep it out of logs.
        raise OAuthError(f"Claude token endpoint sent a malformed {key}", reached_server=True)
    return seconds


class PendingLogin(BaseModel):
    """What ``login`` must remember for ``callback``, possibly in another process."""

    model_config = ConfigDict(frozen=True)

    state: str
    code_verifier: SecretStr
    account: str
    redirect_uri: str
    created_at: float = Field(default_factory=time.time)

    def expired(self, ttl: float, now: float | None = None) -> bool:
        return (time.time() if now is None else now) - self.created_at > ttl

    def to_storage(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["code_verifier"] = self.code_verifier.get_secret_value()
        return data
