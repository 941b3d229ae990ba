"""Cross-process refresh locks.

With Redis configured, a Redis lock (with an expiry, so a process killed mid-refresh
cannot wedge the others) coordinates every worker and replica. Without Redis, or
while Redis is down, the store's own lock serves: a file lock for the file store, an
advisory lock for Postgres.

A waiter must outwait the slowest refresh that can still succeed, or it answers 503
while the holder is about to hand it a fresh token: waits are derived from
:func:`refresh_bound` (every token URL tried, each up to the HTTP timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol

from .errors import TokenStoreError
from .store.base import TokenStore

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger(__name__)

REDIS_KEY_PREFIX = "litellm:claude_oauth"
# What a waiter allows beyond the slowest refresh: the holder's own store read and write.
LOCK_WAIT_MARGIN = 15.0
# refresh_bound() of the default settings (two token URLs, 30 s each).
DEFAULT_REFRESH_BOUND = 60.0


def refresh_bound(settings: Settings) -> float:
    """The longest one refresh can take and still succeed: each token URL tried in turn,
    each up to the HTTP timeout."""
    return len(settings.token_urls) * settings.http_timeout_seconds


def lock_wait(bound: float) -> float:
    """How long a waiter waits for a refresh lock, given :func:`refresh_bound`."""
    return bound + LOCK_WAIT_MARGIN


class RefreshLock(Protocol):
    def __call__(self, account: str) -> AbstractAsyncContextManager[None]: ...


class StoreLock:
    def __init__(self, store: TokenStore):
        self._store = store

    def __call__(self, account: str) -> AbstractAsyncContextManager[None]:
        return self._store.lock(account)


class RedisLock:
    """redis-py's lock, falling back to the store's lock when Redis cannot be reached.

    The lock's TTL is short so that a process killed mid-refresh blocks the others for
    seconds, not minutes; a watchdog keeps extending it while a slow refresh is alive.
    """

    def __init__(
        self,
        redis: Any,
        fallback: TokenStore,
        *,
        ttl: float = 10.0,
        refresh_bound: float = DEFAULT_REFRESH_BOUND,
        wait: float | None = None,
        key_prefix: str = REDIS_KEY_PREFIX,
    ):
        """``wait`` defaults to :func:`lock_wait` of ``refresh_bound``. The Redis client
        belongs to the caller, who closes it."""
        self._redis = redis
        self._fallback = fallback
        self._ttl = ttl
        self._wait = lock_wait(refresh_bound) if wait is None else wait
        self._key_prefix = key_prefix

    @property
    def wait(self) -> float:
        return self._wait

    @contextlib.asynccontextmanager
    async def __call__(self, account: str) -> AsyncIterator[None]:
        from redis.exceptions import LockError, RedisError

        lock = self._redis.lock(f"{self._key_prefix}:refresh:{account}", timeout=self._ttl, blocking_timeout=self._wait)
        try:
            acquired = await lock.acquire()
        except RedisError as exc:
            log.warning("Redis unavailable for the refresh lock (%s); using the store's lock", type(exc).__name__)
            async with self._fallback.lock(account):
                yield
            return
        if not acquired:
            raise TokenStoreError(f"timed out after {self._wait:.0f}s waiting for the refresh lock for '{account}'")
        watchdog = asyncio.get_running_loop().create_task(self._keep_alive(lock))
        try:
            yield
        finally:
            watchdog.cancel()
            # The lock may have expired or Redis may have gone away: neither must turn
            # a successful refresh into an error.
            with contextlib.suppress(LockError, RedisError, asyncio.CancelledError):
                await watchdog
            with contextlib.suppress(LockError, RedisError):
                await lock.release()

    async def _keep_alive(self, lock: Any) -> None:
        from redis.exceptions import LockError, RedisError

        while True:
            await asyncio.sleep(self._ttl / 3)
            try:
                await lock.reacquire()
            except (LockError, RedisError) as exc:
                log.warning("Claude OAuth: could not extend the Redis refresh lock (%s)", type(exc).__name__)
                return
