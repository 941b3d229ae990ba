"""Which Claude account serves a request.

A deployment's ``api_key`` marker decides first: ``claude-oauth:<account>`` pins one
account, ``claude-oauth:pool`` spreads over the pool. A plain ``claude-oauth`` follows
``CLAUDE_OAUTH_ACCOUNT_MAP`` (by LiteLLM key, team or user), else the default account.

The map is read from the caller's *authenticated* LiteLLM identity (the
``UserAPIKeyAuth`` object LiteLLM attaches after checking the key), never from a
request's ``metadata``: Claude Code sends ``metadata.user_id`` on every request, and a
client could name any key alias there (audit H4).

A pool (``CLAUDE_OAUTH_POOL``, or every stored account) is ordered per request by its
strategy: ``round-robin`` rotates the first choice, ``fill-first`` uses the first
account until it is rate-limited, ``least-used`` takes the lowest 5-hour utilization
Anthropic last reported (ties take turns). Accounts cooling down after a 429 (for the
requested model family, or altogether), or needing a new login, are skipped; an account
at or above ``CLAUDE_OAUTH_QUOTA_THRESHOLD`` goes last, so it is used only when no
other account can serve.

A conversation sticks to the account that served it (keyed on Claude Code's session
header or the request's ``metadata.user_id``, for ``CLAUDE_OAUTH_SESSION_TTL`` seconds):
Anthropic's prompt cache is per account, so moving a conversation re-pays its whole
prompt. It moves only when that account is rejected or exhausted. The map is per
worker; with several workers a session may warm one cache per worker at most.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from .errors import ClaudeOAuthError, NotLoggedInError, ReloginRequiredError, RetryLater
from .manager import TokenManager
from .quotas import prefer
from .ratelimit import Cooldown
from .tokens import TokenSet

OAUTH_MARKER = "claude-oauth"
POOL = "pool"
_MEMBERS_TTL = 60.0  # without change events, re-list the stored accounts this often
# A member that failed for another reason (undecryptable, token endpoint down) is
# skipped this long, so one broken account does not cost every Nth request (audit M5).
_BROKEN_MEMBER_SECONDS = 30.0
_MAX_SESSIONS = 10_000


@dataclass(frozen=True, slots=True)
class Route:
    """Whose tokens a deployment uses; the hook keeps one HTTP client per route."""

    account: str | None = None  # None: the default account
    pool: bool = False


class AllAccountsCoolingDown(RetryLater):
    http_status: ClassVar[int] = 429

    def __init__(self, cooldown: Cooldown | None, *, pool: bool = True):
        self.retry_after = cooldown.retry_after() if cooldown else 60
        subject = "every Claude account in the pool is" if pool else "the Claude account is"
        super().__init__(
            f"{subject} rate-limited"
            + (f" ({cooldown.reason}); retry in {self.retry_after}s" if cooldown else " or needs a new login")
        )


def is_marker(api_key: object) -> bool:
    return isinstance(api_key, str) and api_key.startswith(OAUTH_MARKER)


def route_for(api_key: object, identity: Mapping[str, Any] | None, account_map: Mapping[str, str]) -> Route | None:
    """The route for a deployment's ``api_key`` marker, or None when the deployment is not ours."""
    if not isinstance(api_key, str) or not api_key.startswith(OAUTH_MARKER):
        return None
    prefix, sep, target = api_key.partition(":")
    if prefix != OAUTH_MARKER or (sep and not target):
        return None
    if not target:
        target = _mapped_account(identity or {}, account_map) or ""
    if target == POOL:
        return Route(pool=True)
    return Route(account=target or None)


def caller_identity(litellm_metadata: Mapping[str, Any] | None) -> dict[str, str]:
    """The authenticated LiteLLM key/team/user of a request, from LiteLLM's ``UserAPIKeyAuth``.

    Only the object counts: a JSON body can put any string into a metadata dict, but it
    cannot make an object.
    """
    auth = (litellm_metadata or {}).get("user_api_key_auth")
    if auth is None or isinstance(auth, (str, bytes, Mapping)):
        return {}
    fields = {
        "key_alias": getattr(auth, "key_alias", None),
        "key_hash": getattr(auth, "token", None),
        "team_id": getattr(auth, "team_id", None),
        "team_alias": getattr(auth, "team_alias", None),
        "user_id": getattr(auth, "user_id", None),
    }
    return {k: str(v) for k, v in fields.items() if isinstance(v, str) and v}


def _mapped_account(identity: Mapping[str, str], account_map: Mapping[str, str]) -> str | None:
    if not account_map:
        return None
    # Most specific first: a key's own mapping beats its team's, which beats its user's.
    # Team aliases are not unique and team admins can rename them: a separate, weaker
    # selector ("team_alias:") rather than a second meaning of "team:" (audit L5).
    for selector, field_names in (
        ("key", ("key_alias", "key_hash")),
        ("team", ("team_id",)),
        ("team_alias", ("team_alias",)),
        ("user", ("user_id",)),
    ):
        for name in field_names:
            value = identity.get(name)
            if value and (account := account_map.get(f"{selector}:{value}")):
                return account
    return None


class Pool:
    def __init__(self, manager: TokenManager):
        self.manager = manager
        self._turn = itertools.count()
        self._members: list[str] = list(manager.settings.pool_accounts or [])
        self._listed_at = 0.0 if manager.settings.pool_accounts is None else float("inf")
        self._broken: dict[str, tuple[float, str]] = {}
        self._sessions: dict[str, tuple[str, float]] = {}  # session key -> (account, expiry on the monotonic clock)

    async def members(self) -> list[str]:
        if time.monotonic() - self._listed_at > _MEMBERS_TTL:
            self._members = await self.manager.accounts()
            self._listed_at = time.monotonic()
        return self._members

    def forget_members(self) -> None:
        """After a login or logout elsewhere, list the stored accounts again."""
        if self.manager.settings.pool_accounts is None:
            self._listed_at = 0.0
        self._broken.clear()

    def _usable(self, account: str, family: str | None) -> bool:
        health = self.manager.health
        broken = self._broken.get(account)
        if broken is not None and broken[0] > time.monotonic():
            return False
        return health.cooldown(account, family) is None and health.unusable_reason(account) is None

    async def order(self, exclude: frozenset[str] = frozenset(), family: str | None = None) -> list[str]:
        """Usable accounts, best first; raises AllAccountsCoolingDown when none is."""
        members = await self.members()
        if not members:
            raise NotLoggedInError("pool")
        strategy = self.manager.settings.pool_strategy
        if strategy in ("round-robin", "least-used"):  # least-used: rotated first, so ties take turns
            start = next(self._turn) % len(members)
            members = members[start:] + members[:start]
        usable = [a for a in members if a not in exclude and self._usable(a, family)]
        if usable:
            # An account near its limit goes last (before it hits a 429), least-used sorts by 5h use.
            return prefer(self.manager.quotas, usable, family, least_used=strategy == "least-used")
        health = self.manager.health
        cooling = [c for a in members if (c := health.cooldown(a, family)) is not None]
        if not cooling and not exclude and all(health.unusable_reason(a) for a in members):
            raise ReloginRequiredError(members[0], "every account in the pool needs a new login")
        raise AllAccountsCoolingDown(min(cooling, key=lambda c: c.until) if cooling else None)

    def _sticky(self, session: str | None) -> str | None:
        if not session:
            return None
        entry = self._sessions.get(session)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def _remember(self, session: str | None, account: str) -> None:
        ttl = self.manager.settings.session_ttl_seconds
        if not session or ttl <= 0:
            return
        now = time.monotonic()
        if len(self._sessions) >= _MAX_SESSIONS:
            self._sessions = {k: v for k, v in self._sessions.items() if v[1] > now}
            if len(self._sessions) >= _MAX_SESSIONS:
                self._sessions.pop(next(iter(self._sessions)))
        self._sessions[session] = (account, now + ttl)

    async def next_tokens(
        self, exclude: frozenset[str] = frozenset(), family: str | None = None, session: str | None = None
    ) -> tuple[str, TokenSet]:
        """The first usable account's fresh tokens, skipping members that fail for any reason."""
        last_error: ClaudeOAuthError | None = None
        order = await self.order(exclude, family)
        sticky = self._sticky(session)
        if sticky in order:
            order.remove(sticky)
            order.insert(0, sticky)
        for account in order:
            try:
                tokens = await self.manager.get_tokens(account)
            except (NotLoggedInError, ReloginRequiredError) as exc:
                last_error = exc
                continue
            except ClaudeOAuthError as exc:
                self._broken[account] = (time.monotonic() + _BROKEN_MEMBER_SECONDS, str(exc))
                last_error = exc
                continue
            if self.manager.health.cooldown(account, family) is None:  # the store may know of a cooldown we did not
                self._remember(session, account)
                return account, tokens
        await self.order(exclude, family)  # raises with the soonest reset, now that the cooldowns are known
        raise last_error or AllAccountsCoolingDown(None)
