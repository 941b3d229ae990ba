"""TokenManager: the one object the CLI, the proxy hook and the HTTP routes share.

The hot path (:meth:`TokenManager.get_access_token` with a valid cached token) is a
dict lookup and a clock read: no store, lock or network I/O. Everything else (refresh,
login, logout) goes through the store, under locks, in this order:

1. in-process single flight: N concurrent callers share one refresh task;
2. cross-process lock (Redis, or the store's own lock);
3. re-read the store: another worker, replica or the CLI may have refreshed already;
4. refresh, persist the (possibly rotated) refresh token, and only then hand out the
   new access token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict

from .errors import (
    InvalidGrantError,
    LoginStateError,
    NotLoggedInError,
    OAuthError,
    ReloginRequiredError,
    TokenStoreError,
)
from .locks import RefreshLock, StoreLock
from .oauth import OAuthClient, build_authorize_url, parse_authorization_input
from .pkce import create_s256_code_challenge, generate_code_verifier, generate_state
from .settings import Settings, validate_account_id
from .events import RedisAccountEvents
from .pending import PendingLogins
from .ratelimit import Cooldown
from .store import AccountRecord, TokenStore, build_store, cipher_for
from .tokens import PendingLogin, TokenSet

log = logging.getLogger(__name__)


class LoginStart(BaseModel):
    model_config = ConfigDict(frozen=True)

    authorization_url: str
    state: str
    account: str
    expires_at: float


class AccountStatus(BaseModel):
    """What ``status`` shows: never a usable secret."""

    account: str
    logged_in: bool
    valid: bool = False
    expires_at: float | None = None
    expires_in_seconds: float | None = None
    refreshable: bool = False
    account_email: str | None = None
    organization_name: str | None = None
    subscription_type: str | None = None
    source: str | None = None
    relogin_reason: str | None = None
    cooldown_until: float | None = None
    cooldown_reason: str | None = None
    store: str
    encrypted: bool
    error: str | None = None


class ManagerStats(BaseModel):
    """Counters for benchmarks and operators: the hot path should only ever bump ``cache_hits``."""

    cache_hits: int = 0
    store_reads: int = 0
    refreshes: int = 0


class TokenManager:
    def __init__(
        self,
        settings: Settings,
        store: TokenStore,
        oauth: OAuthClient | None = None,
        lock: RefreshLock | None = None,
        pending: PendingLogins | None = None,
        events: RedisAccountEvents | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.settings = settings
        self.store = store
        self.oauth = oauth or OAuthClient(settings)
        self._lock = lock or StoreLock(store)
        self.pending: PendingLogins = pending or store  # type: ignore[assignment]
        self._events = events
        self._clock = clock
        self._cache: dict[str, TokenSet] = {}
        self._inflight: dict[str, asyncio.Future[TokenSet]] = {}
        # Refreshed tokens we could not persist: kept so a rotated refresh token is
        # never lost, and retried before anything else touches that account.
        self._unsaved: dict[str, AccountRecord] = {}
        # What pools must skip without asking the store: rate-limited or dead accounts.
        self._cooldowns: dict[str, Cooldown] = {}
        self._unusable: dict[str, str] = {}
        self.stats = ManagerStats()

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> TokenManager:
        settings = settings or Settings.from_env()
        store = build_store(settings)
        if settings.redis is None:
            return cls(settings, store)
        from redis.asyncio import Redis

        from .events import RedisAccountEvents
        from .locks import RedisLock
        from .pending import RedisPendingLogins

        redis = Redis.from_url(settings.redis.url.get_secret_value(), socket_timeout=2, socket_connect_timeout=2)
        return cls(
            settings,
            store,
            lock=RedisLock(redis, store, ttl=settings.lock_ttl_seconds),
            pending=RedisPendingLogins(redis, cipher_for(settings), store, ttl=settings.login_state_ttl_seconds),
            # Pub/sub blocks on reads: it gets its own connection without a read timeout.
            events=RedisAccountEvents(Redis.from_url(settings.redis.url.get_secret_value(), socket_connect_timeout=2)),
        )

    def account_id(self, account: str | None) -> str:
        return validate_account_id(account) if account else self.settings.default_account

    async def aclose(self) -> None:
        if self._events is not None:
            await self._events.aclose()
        await self.oauth.aclose()
        await self.store.close()

    def listen_for_changes(self, on_change: Callable[[str], None] | None = None) -> None:
        """In a long-running process (the proxy): follow other processes' logins and logouts."""
        if self._events is not None:
            self._events.listen(lambda account: self._on_change(account, on_change))

    def _on_change(self, account: str, also: Callable[[str], None] | None) -> None:
        self.invalidate(None if account == "*" else account)
        if also is not None:
            also(account)

    async def _announce(self, account: str) -> None:
        if self._events is not None:
            await self._events.publish(account)

    # -- tokens ----------------------------------------------------------------------

    async def get_access_token(self, account: str | None = None) -> str:
        return (await self.get_tokens(account)).access

    async def get_tokens(self, account: str | None = None) -> TokenSet:
        account = self.account_id(account)
        tokens = self._cache.get(account)
        if tokens is not None and not tokens.needs_refresh(self.settings.refresh_margin_seconds, self._clock()):
            self.stats.cache_hits += 1
            return tokens
        return await self._single_flight(account, force=False, stale_access=None)

    async def force_refresh(self, account: str | None = None, *, stale_access: str | None = None) -> TokenSet:
        """Refresh now. With ``stale_access``, only if that token is still the current one.

        The proxy passes the token Anthropic just rejected, so a burst of 401s from
        concurrent requests triggers one refresh, not one each.
        """
        account = self.account_id(account)
        cached = self._cache.get(account)
        if stale_access is not None and cached is not None and cached.access != stale_access:
            if not cached.is_expired(self._clock()):
                return cached
        return await self._single_flight(account, force=True, stale_access=stale_access)

    async def _single_flight(self, account: str, *, force: bool, stale_access: str | None) -> TokenSet:
        future = self._inflight.get(account)
        if future is None:
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
            return await self._persist(self._unsaved[account])

        # Cheap unlocked read first: after a login or another process's refresh, the
        # store already has what we need and no lock is taken.
        record = await self._load(account)
        if record is None:
            self._cache.pop(account, None)
            raise NotLoggedInError(account)
        if record.relogin_reason is None and self._fresh(record.tokens, force=force, stale_access=stale_access):
            self._cache[account] = record.tokens
            return record.tokens

        async with self._lock(account):
            record = await self._load(account)
            if record is None:
                self._cache.pop(account, None)
                raise NotLoggedInError(account)
            tokens = record.tokens
            if record.relogin_reason is None and self._fresh(tokens, force=force, stale_access=stale_access):
                self._cache[account] = tokens
                return tokens
            if record.relogin_reason is not None:
                self._cache.pop(account, None)
                self._unusable[account] = record.relogin_reason
                raise ReloginRequiredError(account, record.relogin_reason)
            if tokens.refresh is None:
                if not tokens.is_expired(self._clock()) and not force:
                    self._cache[account] = tokens
                    return tokens
                raise ReloginRequiredError(account, "this token has no refresh token and has expired")
            return await self._refresh_locked(record)

    async def _load(self, account: str) -> AccountRecord | None:
        self.stats.store_reads += 1
        record = await self.store.load(account)
        if record is not None:
            self._note_health(record)
        return record

    def _note_health(self, record: AccountRecord) -> None:
        if record.cooldown_until is not None and record.cooldown_until > self._clock():
            self._cooldowns[record.account] = Cooldown(
                until=record.cooldown_until, reason=record.cooldown_reason or "rate limited"
            )
        else:
            self._cooldowns.pop(record.account, None)
        if record.relogin_reason is not None:
            self._unusable[record.account] = record.relogin_reason
        else:
            self._unusable.pop(record.account, None)

    async def _refresh_locked(self, record: AccountRecord) -> TokenSet:
        account, tokens = record.account, record.tokens
        try:
            self.stats.refreshes += 1
            new_tokens = await self.oauth.refresh(tokens)
        except InvalidGrantError as exc:
            # Someone outside our locks (Claude Code itself, a second install) may have
            # rotated the refresh token: their credential is newer, keep it.
            latest = await self._load(account)
            if latest is not None and latest.tokens.refresh != tokens.refresh:
                self._cache[account] = latest.tokens
                return latest.tokens
            reason = "the refresh token was rejected (invalid_grant)"
            log.warning("Claude account '%s' needs a new login: %s", account, exc)
            await self.store.save(record.model_copy(update={"relogin_reason": reason, "updated_at": self._clock()}))
            self._cache.pop(account, None)
            self._unusable[account] = reason
            await self._announce(account)
            raise ReloginRequiredError(account, reason) from None
        except OAuthError as exc:
            if not tokens.is_expired(self._clock()):
                # Proactive refresh failed (network, 5xx, 429): the current token still
                # works, so keep serving it and try again on a later request.
                log.warning("Claude token refresh for '%s' failed, still valid, will retry: %s", account, exc)
                self._cache[account] = tokens
                return tokens
            raise
        log.info("Claude OAuth token refreshed for account '%s'", account)
        tokens = await self._persist(
            record.model_copy(update={"tokens": new_tokens, "relogin_reason": None, "updated_at": self._clock()})
        )
        # Other workers switch to the new token now rather than at their own expiry.
        await self._announce(account)
        return tokens

    async def _persist(self, record: AccountRecord) -> TokenSet:
        try:
            await self.store.save(record)
        except TokenStoreError:
            self._unsaved[record.account] = record
            log.error(
                "Refreshed Claude tokens for '%s' could not be saved; kept in memory, will retry", record.account
            )
            raise
        self._unsaved.pop(record.account, None)
        self._cache[record.account] = record.tokens
        return record.tokens

    # -- login -----------------------------------------------------------------------

    async def start_login(self, account: str | None = None) -> LoginStart:
        account = self.account_id(account)
        verifier = generate_code_verifier()
        state = generate_state()
        now = self._clock()
        pending = PendingLogin(
            state=state,
            code_verifier=verifier,
            account=account,
            redirect_uri=self.settings.redirect_uri,
            created_at=now,
        )
        await self.pending.prune_pending(now - self.settings.login_state_ttl_seconds)
        await self.pending.put_pending(pending)
        url = build_authorize_url(self.settings, code_challenge=create_s256_code_challenge(verifier), state=state)
        return LoginStart(
            authorization_url=url, state=state, account=account, expires_at=now + self.settings.login_state_ttl_seconds
        )

    async def complete_login(
        self, code_input: str, *, state: str | None = None, account: str | None = None
    ) -> AccountRecord:
        try:
            code, pasted_state = parse_authorization_input(code_input)
        except ValueError as exc:
            raise LoginStateError(str(exc)) from None
        if state and pasted_state and state != pasted_state:
            raise LoginStateError("the state in the pasted code does not match the login being completed")
        state = state or pasted_state
        if state is None:
            state = await self._latest_pending_state(self.account_id(account))

        pending = await self.pending.take_pending(state)
        if pending is None:
            raise LoginStateError(
                "this login is unknown or was already used; start a new one with `litellm claude login`"
            )
        if account is not None and pending.account != self.account_id(account):
            await self.pending.put_pending(pending)
            raise LoginStateError(f"this login was started for account '{pending.account}', not '{account}'")
        if pending.expired(self.settings.login_state_ttl_seconds, self._clock()):
            raise LoginStateError("this login expired (codes are good for 10 minutes); run `litellm claude login` again")

        try:
            tokens = await self.oauth.exchange_code(
                code=code, state=state, code_verifier=pending.code_verifier.get_secret_value()
            )
        except OAuthError as exc:
            if exc.status_code is None:
                # Never reached Anthropic: the code is unspent, let the user retry.
                await self.pending.put_pending(pending)
            raise
        record = AccountRecord(account=pending.account, tokens=tokens, updated_at=self._clock())
        await self.store.save(record)
        self._cache[record.account] = tokens
        self._note_health(record)
        await self._announce(record.account)
        return record

    async def _latest_pending_state(self, account: str) -> str:
        now = self._clock()
        live = [
            p for p in await self.pending.pending_for(account) if not p.expired(self.settings.login_state_ttl_seconds, now)
        ]
        if not live:
            raise LoginStateError(
                f"no login in progress for account '{account}' (or it expired); run `litellm claude login` first"
            )
        return live[-1].state

    # -- account health (pools) -------------------------------------------------------

    def account_of(self, access_token: str) -> str | None:
        """Which cached account an access token belongs to (the 429 handler sees only the token)."""
        for account, tokens in self._cache.items():
            if tokens.access == access_token:
                return account
        return None

    def cooldown(self, account: str) -> Cooldown | None:
        cooldown = self._cooldowns.get(account)
        if cooldown is not None and cooldown.until <= self._clock():
            del self._cooldowns[account]
            return None
        return cooldown

    def unusable_reason(self, account: str) -> str | None:
        return self._unusable.get(account)

    async def cool_down(self, account: str, cooldown: Cooldown) -> None:
        """Rest a rate-limited account until its window resets; every worker and ``status`` see it."""
        current = self._cooldowns.get(account)
        if current is not None and current.until >= cooldown.until:
            return
        self._cooldowns[account] = cooldown
        log.warning("Claude account '%s' %s; resting it until %s", account, cooldown.reason,
                    time.strftime("%H:%M:%S", time.gmtime(cooldown.until)))
        try:
            record = await self.store.load(account)
            if record is not None:
                await self.store.save(record.model_copy(
                    update={"cooldown_until": cooldown.until, "cooldown_reason": cooldown.reason}))
        except TokenStoreError as exc:
            log.warning("could not record the cooldown of '%s' in the store: %s", account, exc)
        await self._announce(account)

    # -- account management ----------------------------------------------------------

    async def import_tokens(self, tokens: TokenSet, account: str | None = None) -> AccountRecord:
        record = AccountRecord(account=self.account_id(account), tokens=tokens, updated_at=self._clock())
        await self.store.save(record)
        self._cache[record.account] = tokens
        self._note_health(record)
        await self._announce(record.account)
        return record

    async def load(self, account: str | None = None) -> AccountRecord:
        account = self.account_id(account)
        record = await self.store.load(account)
        if record is None:
            raise NotLoggedInError(account)
        return record

    async def logout(self, account: str | None = None) -> bool:
        account = self.account_id(account)
        self._cache.pop(account, None)
        self._unsaved.pop(account, None)
        deleted = await self.store.delete(account)
        await self._announce(account)
        return deleted

    async def accounts(self) -> list[str]:
        return await self.store.accounts()

    async def status(self, account: str | None = None) -> AccountStatus:
        account = self.account_id(account)
        base = {"account": account, "store": self.store.location, "encrypted": self.store.encrypted}
        try:
            record = await self.store.load(account)
        except TokenStoreError as exc:
            return AccountStatus(logged_in=False, error=str(exc), **base)
        if record is None:
            return AccountStatus(logged_in=False, **base)
        tokens, now = record.tokens, self._clock()
        cooling = record.cooldown_until is not None and record.cooldown_until > now
        return AccountStatus(
            cooldown_until=record.cooldown_until if cooling else None,
            cooldown_reason=record.cooldown_reason if cooling else None,
            logged_in=True,
            valid=not tokens.is_expired(now) and record.relogin_reason is None,
            expires_at=tokens.expires_at,
            expires_in_seconds=tokens.expires_in(now),
            refreshable=tokens.refresh_token is not None,
            account_email=tokens.account_email,
            organization_name=tokens.organization_name,
            subscription_type=tokens.subscription_type,
            source=tokens.source,
            relogin_reason=record.relogin_reason,
            **base,
        )

    def invalidate(self, account: str | None = None) -> None:
        """Forget the cached token so the next request re-reads the store."""
        if account is None:
            self._cache.clear()
        else:
            self._cache.pop(self.account_id(account), None)


_manager: TokenManager | None = None


def get_manager() -> TokenManager:
    """The process-wide manager, built on first use from the environment."""
    global _manager
    if _manager is None:
        _manager = TokenManager.from_settings()
    return _manager
