"""TokenManager: the one object the CLI, the proxy hook and the HTTP routes share.

It keeps tokens: a cached get, refresh ahead of expiry, single flight. Browser login
lives in :mod:`.login` and account health (cooldowns, re-login) in :mod:`.health`; the
manager wires them to one store, one lock and one change feed.

The hot path (:meth:`TokenManager.get_tokens` with a valid cached token) is a dict
lookup and a clock read: no store, lock or network I/O. A refresh goes:

1. in-process single flight: N concurrent callers share one refresh task;
2. cross-process lock (Redis, or the store's own lock);
3. re-read the store: another worker, replica or the CLI may have refreshed already;
4. refresh, then commit with compare-and-set: the new tokens are written only if the
   stored credential is still the one this refresh started from. A logout or a new
   login that happened meanwhile wins, so a spent refresh token is never written back.
   Only then is the new access token handed out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import (
    InvalidGrantError,
    NotLoggedInError,
    OAuthError,
    RateLimitedError,
    ReloginRequiredError,
    TokenStoreError,
)
from .health import AccountHealth
from .locks import RefreshLock, StoreLock
from .login import LoginFlow, LoginStart, replace_credentials
from .oauth import OAuthClient
from .pending import PendingLogins
from .settings import Settings, validate_account_id
from .status import AccountStatus, account_status
from .store import AccountRecord, TokenStore, build_store, cipher_for
from .tokens import TokenSet

if TYPE_CHECKING:
    from .alerts import Alerts
    from .quotas import Quotas

log = logging.getLogger(__name__)

__all__ = ["AccountStatus", "LoginStart", "ManagerStats", "TokenManager", "get_manager"]

# Saving a rotated refresh token failed: retry with this back-off (seconds), capped.
_UNSAVED_RETRY = (1.0, 60.0)


@dataclass(slots=True)
class ManagerStats:
    """Counters for benchmarks and operators: the hot path should only ever bump ``cache_hits``.

    A plain dataclass: bumped on every request, where a pydantic model's ``__setattr__`` costs more.
    """

    cache_hits: int = 0
    store_reads: int = 0
    refreshes: int = 0


class _Superseded(Exception):
    """The stored credential is no longer the one a refresh started from."""

    def __init__(self, current: AccountRecord | None):
        self.current = current


@dataclass(frozen=True)
class _Unsaved:
    started_from: str  # AccountRecord.credential the refresh began with
    tokens: TokenSet


class TokenManager:
    def __init__(
        self,
        settings: Settings,
        store: TokenStore,
        oauth: OAuthClient | None = None,
        lock: RefreshLock | None = None,
        pending: PendingLogins | None = None,
        events: object | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.settings = settings
        self.store = store
        self.oauth = oauth or OAuthClient(settings)
        self._lock = lock or StoreLock(store)
        self._events = events
        self._clock = clock
        self._cache: dict[str, TokenSet] = {}
        # Tokens a change event told us to re-check: served only while the store cannot be read.
        self._stale: dict[str, TokenSet] = {}
        self._inflight: dict[str, asyncio.Future[TokenSet]] = {}
        # Refreshed tokens we could not persist: kept (and served) so a rotated refresh
        # token is never lost, and saved again with the same compare-and-set.
        self._unsaved: dict[str, _Unsaved] = {}
        self._retry_tasks: dict[str, asyncio.Task[None]] = {}
        self._listeners: list[Callable[[str], None]] = []
        self._closers: list[Callable[[], Awaitable[None]]] = []  # clients the manager made (Redis)
        self.health = AccountHealth(store, self._announce, clock)
        self._quotas: Quotas | None = None
        self._alerts: Alerts | None = None
        self.login = LoginFlow(settings, store, pending or store, self.oauth, self._logged_in, clock)
        self.stats = ManagerStats()

    @classmethod
    def from_settings(cls, settings: Settings | None = None, *, clock: Callable[[], float] = time.time) -> TokenManager:
        settings = settings or Settings.from_env()
        store = build_store(settings)
        if settings.redis is not None:
            from redis.asyncio import Redis

            from .events import RedisAccountEvents
            from .locks import RedisLock, refresh_bound
            from .pending import RedisPendingLogins

            url = settings.redis.url.get_secret_value()
            redis = Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
            # Pub/sub blocks on reads: it gets its own connection without a read timeout.
            subscriber = Redis.from_url(url, socket_connect_timeout=2)
            manager = cls(
                settings,
                store,
                lock=RedisLock(redis, store, ttl=settings.lock_ttl_seconds, refresh_bound=refresh_bound(settings)),
                pending=RedisPendingLogins(redis, cipher_for(settings), store, ttl=settings.login_state_ttl_seconds),
                events=RedisAccountEvents(subscriber),
                clock=clock,
            )
            manager._closers = [redis.aclose, subscriber.aclose]
            return manager
        if settings.store == "postgres":
            from .store.pg_events import PostgresAccountEvents

            assert settings.database_url is not None  # Settings.from_env guarantees it
            events = PostgresAccountEvents(settings.database_url.get_secret_value())
            return cls(settings, store, events=events, clock=clock)
        from .store.file_watch import FileWatchEvents

        return cls(settings, store, events=FileWatchEvents(settings.token_file), clock=clock)

    @property
    def alerts(self) -> Alerts:
        """Built on first use: the CLI never needs it."""
        if self._alerts is None:
            from .alerts import Alerts

            self._alerts = Alerts.from_settings(self.settings)
        return self._alerts

    @property
    def quotas(self) -> Quotas:
        """Each account's rate-limit windows as Anthropic last reported them; built on first use."""
        if self._quotas is None:
            from .quotas import Quotas

            self._quotas = Quotas.from_settings(self.settings, on_high=self.alerts.utilization_high)
        return self._quotas

    def account_id(self, account: str | None) -> str:
        return validate_account_id(account) if account else self.settings.default_account

    async def aclose(self) -> None:
        for task in self._retry_tasks.values():
            task.cancel()
        for account in list(self._unsaved):
            # Last chance: a process about to exit must not take a rotated refresh token with it.
            with contextlib.suppress(TokenStoreError):
                await self._save_unsaved(account)
        if self._events is not None:
            await self._events.aclose()  # type: ignore[attr-defined]
        for part in (self._quotas, self._alerts):
            if part is not None:
                with contextlib.suppress(Exception):
                    await part.aclose()
        for close in self._closers:
            with contextlib.suppress(Exception):
                await close()
        await self.oauth.aclose()
        await self.store.close()
        if self._unsaved:
            raise TokenStoreError(
                "refreshed Claude tokens for " + ", ".join(sorted(self._unsaved)) + " could not be saved"
            )

    # -- change feed ------------------------------------------------------------------

    def listen_for_changes(self, on_change: Callable[[str], None] | None = None) -> None:
        """In a long-running process (the proxy): follow other processes' logins, logouts and refreshes."""
        # Called on every request: the same (bound-method) listener is registered once.
        if on_change is not None and on_change not in self._listeners:
            self._listeners.append(on_change)
        if self._events is not None:
            self._events.listen(self._on_change)  # type: ignore[attr-defined]

    def _on_change(self, account: str) -> None:
        self.invalidate(None if account == "*" else account)
        for listener in self._listeners:
            listener(account)

    async def _announce(self, account: str) -> None:
        if self._events is not None:
            await self._events.publish(account)  # type: ignore[attr-defined]

    async def _logged_in(self, record: AccountRecord) -> None:
        self._unsaved.pop(record.account, None)
        self._cache[record.account] = record.tokens
        self.health.note(record)
        await self._announce(record.account)

    # -- tokens ----------------------------------------------------------------------

    async def get_access_token(self, account: str | None = None) -> str:
        return (await self.get_tokens(account)).access

    def cached_tokens(self, account: str | None = None) -> TokenSet | None:
        """The account's tokens if this process holds them fresh, without a coroutine (the hook's common case)."""
        # A name found in the cache was validated when it got there.
        tokens = self._cache.get(account or self.settings.default_account)
        if tokens is not None and not tokens.needs_refresh(self.settings.refresh_margin_seconds, self._clock()):
            self.stats.cache_hits += 1
            return tokens
        return None

    async def get_tokens(self, account: str | None = None) -> TokenSet:
        tokens = self.cached_tokens(account)
        if tokens is not None:
            return tokens
        return await self._single_flight(self.account_id(account), force=False, stale_access=None)

    async def force_refresh(self, account: str | None = None, *, stale_access: str | None = None) -> TokenSet:
        """Refresh now. With ``stale_access``, only if that token is still the current one.

        The proxy passes the token Anthropic just rejected, so a burst of 401s from
        concurrent requests triggers one refresh, not one each.
        """
        account = self.account_id(account)
        cached = self._cache.get(account)
        if (
            stale_access is not None
            and cached is not None
            and cached.access != stale_access
            and not cached.is_expired(self._clock())
        ):
            return cached
        tokens = await self._single_flight(account, force=True, stale_access=stale_access)
        if stale_access is not None and tokens.access == stale_access:
            # We joined a plain load that re-read the rejected token (audit L4): refresh for real.
            tokens = await self._single_flight(account, force=True, stale_access=stale_access)
        return tokens

    async def _single_flight(self, account: str, *, force: bool, stale_access: str | None) -> TokenSet:
        future = self._inflight.get(account)
        if future is None or future.done():
            future = asyncio.ensure_future(self._refresh(account, force=force, stale_access=stale_access))
            self._inflight[account] = future
            future.add_done_callback(lambda f: self._forget_inflight(account, f))
        # shield: one impatient caller being cancelled must not cancel everyone's refresh.
        return await asyncio.shield(future)

    def _forget_inflight(self, account: str, future: asyncio.Future[TokenSet]) -> None:
        if self._inflight.get(account) is future:
            del self._inflight[account]

    def _fresh(self, tokens: TokenSet, *, force: bool, stale_access: str | None) -> bool:
        if tokens.needs_refresh(self.settings.refresh_margin_seconds, self._clock()):
            return False
        if not force:
            return True
        # A forced refresh is already done if the stored token is not the one that failed.
        return stale_access is not None and tokens.access != stale_access

    async def _refresh(self, account: str, *, force: bool, stale_access: str | None) -> TokenSet:
        if account in self._unsaved:
            with contextlib.suppress(TokenStoreError):
                await self._save_unsaved(account)
            unsaved = self._unsaved.get(account)
            if unsaved is not None and self._fresh(unsaved.tokens, force=force, stale_access=stale_access):
                return unsaved.tokens  # still unsaved: keep serving it, the retry goes on

        try:
            # Cheap unlocked read first: after a login or another process's refresh, the
            # store already has what we need and no lock is taken.
            record = await self._load_required(account)
            if record.relogin_reason is None and self._fresh(record.tokens, force=force, stale_access=stale_access):
                self._cache[account] = record.tokens
                return record.tokens
            async with self._lock(account):
                record = await self._load_required(account)
                return await self._refresh_under_lock(record, force=force, stale_access=stale_access)
        except TokenStoreError:
            # The store is down but the token we hold still works (audit M8): keep serving it.
            # No refresh without the store: it could spend a refresh token another worker rotated.
            cached = self._cache.get(account) or self._stale.get(account)
            if cached is not None and not force and not cached.is_expired(self._clock()):
                log.warning("Claude token store unavailable; serving the cached token for '%s'", account)
                return cached
            raise

    async def _refresh_under_lock(self, record: AccountRecord, *, force: bool, stale_access: str | None) -> TokenSet:
        account, tokens = record.account, record.tokens
        if record.relogin_reason is not None:
            self._cache.pop(account, None)
            raise ReloginRequiredError(account, record.relogin_reason)
        if self._fresh(tokens, force=force, stale_access=stale_access):
            self._cache[account] = tokens
            return tokens
        if tokens.refresh is None:
            if not tokens.is_expired(self._clock()) and not force:
                self._cache[account] = tokens
                return tokens
            raise ReloginRequiredError(account, "this token has no refresh token and has expired")
        return await self._refresh_locked(record)

    async def _load_required(self, account: str) -> AccountRecord:
        record = await self._load(account)
        if record is None:
            self._cache.pop(account, None)
            raise NotLoggedInError(account)
        return record

    async def _load(self, account: str) -> AccountRecord | None:
        self.stats.store_reads += 1
        record = await self.store.load(account)
        self._stale.pop(account, None)  # the store answered: it, not the old token, is the truth
        if record is not None:
            self.health.note(record)
        return record

    async def _refresh_locked(self, record: AccountRecord) -> TokenSet:
        account, tokens = record.account, record.tokens
        unsaved = self._unsaved.get(account)
        if unsaved is not None and unsaved.started_from == record.credential:
            # The store still holds the refresh token we already spent; ours is the live one.
            tokens = unsaved.tokens
            record = record.model_copy(update={"tokens": tokens})
            started_from = unsaved.started_from
        else:
            started_from = record.credential
        linked = None
        if record.linked_credentials:
            from .claude_code import LinkedCredentials

            linked = LinkedCredentials(record.linked_credentials)
            newer = await linked.before_refresh(tokens)
            if newer is not None and not newer.needs_refresh(self.settings.refresh_margin_seconds, self._clock()):
                # Claude Code refreshed the shared grant itself: adopt its tokens, spend nothing.
                return await self._commit(account, started_from, newer)
            if newer is not None and newer.refresh:
                record = record.model_copy(update={"tokens": newer})
                tokens = newer
        started = time.perf_counter()
        try:
            self.stats.refreshes += 1
            new_tokens = await self.oauth.refresh(tokens)
        except InvalidGrantError as exc:
            self._refresh_finished(account, "invalid_grant", started, exc)
            return await self._refresh_rejected(account, started_from, exc)
        except OAuthError as exc:
            result = "rate_limited" if isinstance(exc, RateLimitedError) else "error"
            self._refresh_finished(account, result, started, exc)
            if not tokens.is_expired(self._clock()):
                # Proactive refresh failed (network, 5xx, 429): the current token still
                # works, so keep serving it and try again on a later request.
                log.warning("Claude token refresh for '%s' failed, still valid, will retry: %s", account, exc)
                self._cache[account] = tokens
                return tokens
            raise
        log.info("Claude OAuth token refreshed for account '%s'", account)
        self._refresh_finished(account, "ok", started)
        committed = await self._commit(account, started_from, new_tokens)
        if linked is not None and committed.access == new_tokens.access:
            await linked.after_refresh(new_tokens)
        return committed

    def _refresh_finished(self, account: str, result: str, started: float, error: Exception | None = None) -> None:
        from . import metrics

        metrics.refresh_finished(result, time.perf_counter() - started)
        if self._alerts is not None or result != "ok":
            self.alerts.refresh_finished(account, result == "ok", None if error is None else str(error))

    async def _refresh_rejected(self, account: str, started_from: str, exc: InvalidGrantError) -> TokenSet:
        """invalid_grant: flag the account, unless the stored credential has moved on meanwhile."""
        reason = "the refresh token was rejected (invalid_grant)"

        def flag(current: AccountRecord | None) -> AccountRecord | None:
            if current is None or current.credential != started_from:
                return current  # logged out, or someone (Claude Code, another install) holds newer tokens
            if current.relogin_reason == reason:
                return current
            return current.model_copy(update={"relogin_reason": reason, "updated_at": self._clock()})

        latest = await self.store.update(account, flag)
        if latest is None:
            self._cache.pop(account, None)
            raise NotLoggedInError(account) from None
        self.health.note(latest)
        self._unsaved.pop(account, None)
        if latest.credential != started_from and latest.relogin_reason is None:
            self._cache[account] = latest.tokens
            return latest.tokens
        log.warning("Claude account '%s' needs a new login: %s", account, exc)
        from .alerts import Condition

        message = f"Claude account '{account}' needs a new login ({reason})"
        self.alerts.notify_soon(Condition.RELOGIN_REQUIRED, account, message)
        self._cache.pop(account, None)
        await self._announce(account)
        raise ReloginRequiredError(account, reason) from None

    async def _commit(self, account: str, started_from: str, tokens: TokenSet) -> TokenSet:
        """Store refreshed tokens iff the stored credential is still ``started_from``; return what to use."""
        try:
            stored = await self._compare_and_set(account, started_from, tokens)
        except _Superseded as superseded:
            return self._adopt(account, superseded.current)
        except Exception as exc:  # any saving error: the rotated refresh token must survive (audit H2)
            self._unsaved[account] = _Unsaved(started_from=started_from, tokens=tokens)
            self._cache[account] = tokens
            self._schedule_save_retry(account)
            log.error("Refreshed Claude tokens for '%s' could not be saved (%s); kept in memory, retrying",
                      account, exc)
            return tokens
        self._unsaved.pop(account, None)
        self._cache[account] = stored.tokens
        self.health.note(stored)
        # Other workers switch to the new token now rather than at their own expiry.
        await self._announce(account)
        return stored.tokens

    async def _compare_and_set(self, account: str, started_from: str, tokens: TokenSet) -> AccountRecord:
        now = self._clock()

        def commit(current: AccountRecord | None) -> AccountRecord | None:
            if current is None or current.credential != started_from:
                raise _Superseded(current)
            return current.model_copy(update={"tokens": tokens, "relogin_reason": None, "updated_at": now})

        stored = await self.store.update(account, commit)
        assert stored is not None
        return stored

    def _adopt(self, account: str, current: AccountRecord | None) -> TokenSet:
        """A logout or a new login happened while we refreshed: what is stored now wins."""
        self._unsaved.pop(account, None)
        if current is None:
            self._cache.pop(account, None)
            log.info("Claude account '%s' was logged out during a refresh; the refreshed tokens were dropped", account)
            raise NotLoggedInError(account)
        self.health.note(current)
        if current.relogin_reason is not None:
            self._cache.pop(account, None)
            raise ReloginRequiredError(account, current.relogin_reason)
        self._cache[account] = current.tokens
        return current.tokens

    async def _save_unsaved(self, account: str) -> None:
        unsaved = self._unsaved.get(account)
        if unsaved is None:
            return
        try:
            stored = await self._compare_and_set(account, unsaved.started_from, unsaved.tokens)
        except _Superseded as superseded:
            with contextlib.suppress(NotLoggedInError, ReloginRequiredError):
                self._adopt(account, superseded.current)
            return
        self._unsaved.pop(account, None)
        self._cache[account] = stored.tokens
        log.info("Refreshed Claude tokens for '%s' saved after an earlier failure", account)
        await self._announce(account)

    def _schedule_save_retry(self, account: str) -> None:
        task = self._retry_tasks.get(account)
        if task is not None and not task.done():
            return
        with contextlib.suppress(RuntimeError):  # no running loop: the next refresh retries
            self._retry_tasks[account] = asyncio.get_running_loop().create_task(self._retry_save(account))

    async def _retry_save(self, account: str) -> None:
        delay, cap = _UNSAVED_RETRY
        while account in self._unsaved:
            await asyncio.sleep(delay)
            try:
                await self._save_unsaved(account)
            except Exception as exc:
                log.warning("Saving refreshed Claude tokens for '%s' failed again: %s", account, exc)
            delay = min(delay * 2, cap)

    # -- login (see .login) ----------------------------------------------------------

    async def start_login(self, account: str | None = None) -> LoginStart:
        return await self.login.start(account)

    async def complete_login(
        self, code_input: str, *, state: str | None = None, account: str | None = None
    ) -> AccountRecord:
        return await self.login.complete(code_input, state=state, account=account)

    # -- account management ----------------------------------------------------------

    async def import_tokens(
        self, tokens: TokenSet, account: str | None = None, *, linked_path: str | None = None
    ) -> AccountRecord:
        account = self.account_id(account)
        now = self._clock()
        record = await self.store.update(
            account, lambda current: replace_credentials(current, account, tokens, now, linked=linked_path)
        )
        assert record is not None
        await self._logged_in(record)
        return record

    async def load(self, account: str | None = None) -> AccountRecord:
        account = self.account_id(account)
        record = await self.store.load(account)
        if record is None:
            raise NotLoggedInError(account)
        return record

    async def logout(self, account: str | None = None) -> bool:
        account = self.account_id(account)
        # No lock needed: a refresh in flight anywhere commits by compare-and-set, which
        # fails on the deleted record, so the account cannot come back.
        self._cache.pop(account, None)
        self._stale.pop(account, None)
        self._unsaved.pop(account, None)
        deleted = await self.store.delete(account)
        self.health.forget(account)
        if self._quotas is not None:
            self._quotas.forget(account)
        await self._announce(account)
        return deleted

    async def accounts(self) -> list[str]:
        return await self.store.accounts()

    async def status(self, account: str | None = None) -> AccountStatus:
        return await account_status(self.store, self.settings, self.account_id(account), self._clock())

    async def rotate_keys(self) -> int:
        """Re-seal every stored record with the current key; how many were rewritten."""
        return await self.store.rotate_keys()

    def invalidate(self, account: str | None = None) -> None:
        """Forget what we know of an account so the next request re-reads the store.

        The token is kept aside, not dropped: a change feed also reports its own outage
        (a flush when the connection is lost), and if the store went down with it, the
        token we held is still the best answer (audit M8).
        """
        accounts = list(self._cache) if account is None else [self.account_id(account)]
        for name in accounts:
            if (tokens := self._cache.pop(name, None)) is not None:
                self._stale[name] = tokens
        self.health.forget(None if account is None else accounts[0])


_manager: TokenManager | None = None


def get_manager() -> TokenManager:
    """The process-wide manager, built on first use from the environment."""
    global _manager
    if _manager is None:
        _manager = TokenManager.from_settings()
    return _manager
