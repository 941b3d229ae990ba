"""Which Claude account serves a request.

A deployment's ``api_key`` marker decides first: ``claude-oauth:<account>`` pins one
account, ``claude-oauth:pool`` spreads over the pool. A plain ``claude-oauth`` follows
``CLAUDE_OAUTH_ACCOUNT_MAP`` (by LiteLLM key, team or user), else the default account.

A pool (``CLAUDE_OAUTH_POOL``, or every stored account) is ordered per request by its
strategy: ``round-robin`` rotates the first choice, ``fill-first`` uses the first
account until it is rate-limited. Accounts cooling down after a 429, or needing a new
login, are skipped.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from .errors import ClaudeOAuthError, NotLoggedInError, ReloginRequiredError
from .manager import TokenManager
from .ratelimit import Cooldown
from .tokens import TokenSet

OAUTH_MARKER = "claude-oauth"
POOL = "pool"
_MEMBERS_TTL = 60.0  # without Redis events, re-list the stored accounts this often


class Route(BaseModel):
    model_config = ConfigDict(frozen=True)

    account: str | None = None  # None: the default account
    pool: bool = False


class AllAccountsCoolingDown(ClaudeOAuthError):
    def __init__(self, cooldown: Cooldown | None):
        self.retry_after = cooldown.retry_after() if cooldown else 60
        super().__init__(
            "every Claude account in the pool is rate-limited"
            + (f" ({cooldown.reason}); retry in {self.retry_after}s" if cooldown else " or needs a new login")
        )


def route_for(api_key: object, metadata: Mapping[str, Any] | None, account_map: Mapping[str, str]) -> Route | None:
    """The route for a deployment's ``api_key`` marker, or None when the deployment is not ours."""
    if not isinstance(api_key, str) or not api_key.startswith(OAUTH_MARKER):
        return None
    prefix, sep, target = api_key.partition(":")
    if prefix != OAUTH_MARKER or (sep and not target):
        return None
    if not target:
        target = _mapped_account(metadata or {}, account_map) or ""
    if target == POOL:
        return Route(pool=True)
    return Route(account=target or None)


def _mapped_account(metadata: Mapping[str, Any], account_map: Mapping[str, str]) -> str | None:
    if not account_map:
        return None
    # Most specific first: a key's own mapping beats its team's, which beats its user's.
    for selector, field_names in (
        ("key", ("user_api_key_alias", "user_api_key_hash", "user_api_key")),
        ("team", ("user_api_key_team_id", "user_api_key_team_alias")),
        ("user", ("user_api_key_user_id",)),
    ):
        for name in field_names:
            value = metadata.get(name)
            if value and (account := account_map.get(f"{selector}:{value}")):
                return account
    return None


class Pool:
    def __init__(self, manager: TokenManager):
        self.manager = manager
        self._turn = itertools.count()
        self._members: list[str] = list(manager.settings.pool_accounts or [])
        self._listed_at = 0.0 if manager.settings.pool_accounts is None else float("inf")

    async def members(self) -> list[str]:
        if time.monotonic() - self._listed_at > _MEMBERS_TTL:
            self._members = await self.manager.accounts()
            self._listed_at = time.monotonic()
        return self._members

    def forget_members(self) -> None:
        """After a login or logout elsewhere, list the stored accounts again."""
        if self.manager.settings.pool_accounts is None:
            self._listed_at = 0.0

    async def order(self, exclude: frozenset[str] = frozenset()) -> list[str]:
        """Usable accounts, best first; raises AllAccountsCoolingDown when none is."""
        members = await self.members()
        if not members:
            raise NotLoggedInError("pool")
        if self.manager.settings.pool_strategy == "round-robin" and members:
            start = next(self._turn) % len(members)
            members = members[start:] + members[:start]
        usable = [
            a for a in members
            if a not in exclude and not self.manager.cooldown(a) and not self.manager.unusable_reason(a)
        ]
        if not usable:
            cooling = [c for a in members if (c := self.manager.cooldown(a)) is not None]
            if not cooling and not exclude:
                raise ReloginRequiredError(members[0], "every account in the pool needs a new login")
            raise AllAccountsCoolingDown(min(cooling, key=lambda c: c.until) if cooling else None)
        return usable

    async def next_tokens(self, exclude: frozenset[str] = frozenset()) -> tuple[str, TokenSet]:
        """The first usable account's fresh tokens, skipping any that turn out unusable."""
        last_error: ClaudeOAuthError | None = None
        for account in await self.order(exclude):
            try:
                tokens = await self.manager.get_tokens(account)
            except (NotLoggedInError, ReloginRequiredError) as exc:
                last_error = exc
                continue
            if self.manager.cooldown(account) is None:  # the store may know of a cooldown we did not
                return account, tokens
        await self.order(exclude)  # raises with the soonest reset, now that the cooldowns are known
        raise last_error or AllAccountsCoolingDown(None)
