"""What ``status`` shows of an account, read straight from the store.

Kept apart from the manager so ``litellm claude status`` loads only the store, the
token model and the settings: no HTTP client, no OAuth or routing code.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from .errors import TokenStoreError
from .settings import Settings
from .store import TokenStore


class AccountStatus(BaseModel):
    """What ``status`` shows: never a usable secret."""

    account: str
    logged_in: bool
    valid: bool = False
    expires_at: float | None = None
    expires_in_seconds: float | None = None
    refreshable: bool = False
    refresh_expires_at: float | None = None
    refresh_expires_in_seconds: float | None = None
    account_email: str | None = None
    organization_name: str | None = None
    subscription_type: str | None = None
    source: str | None = None
    linked_credentials: str | None = None
    relogin_reason: str | None = None
    cooldown_until: float | None = None
    cooldown_reason: str | None = None
    model_cooldowns: dict[str, float] = {}
    warnings: list[str] = []
    store: str
    encrypted: bool
    error: str | None = None


async def account_status(store: TokenStore, settings: Settings, account: str, now: float) -> AccountStatus:
    base: dict[str, Any] = {"account": account, "store": store.location, "encrypted": store.encrypted}
    try:
        record = await store.load(account)
    except TokenStoreError as exc:
        return AccountStatus(logged_in=False, error=str(exc), **base)
    if record is None:
        return AccountStatus(logged_in=False, **base)
    tokens = record.tokens
    cooling = record.cooldown_until is not None and record.cooldown_until > now
    refresh_end = tokens.refresh_expires(settings.refresh_token_default_days) if tokens.refresh_token else None
    relogin = record.relogin_reason
    warnings = []
    if refresh_end is not None and relogin is None:
        if refresh_end <= now:
            relogin = "the refresh token's lifetime has ended"
        elif refresh_end - now <= settings.refresh_warning_days * 86400:
            flag = "" if account == settings.default_account else f" --account {account}"
            warnings.append(
                f"the refresh token ends in {(refresh_end - now) / 86400:.1f} days; "
                f"log in again before then (`litellm claude login{flag}`)"
            )
    return AccountStatus(
        cooldown_until=record.cooldown_until if cooling else None,
        cooldown_reason=record.cooldown_reason if cooling else None,
        model_cooldowns={f: until for f, (until, _) in record.model_cooldowns.items() if until > now},
        logged_in=True,
        valid=not tokens.is_expired(now) and relogin is None,
        expires_at=tokens.expires_at,
        expires_in_seconds=tokens.expires_in(now),
        refreshable=tokens.refresh_token is not None,
        refresh_expires_at=refresh_end,
        refresh_expires_in_seconds=None if refresh_end is None else refresh_end - now,
        account_email=tokens.account_email,
        organization_name=tokens.organization_name,
        subscription_type=tokens.subscription_type,
        source=tokens.source,
        linked_credentials=record.linked_credentials,
        relogin_reason=relogin,
        warnings=warnings,
        **base,
    )
