"""Tell every worker and replica that an account changed (login, logout, re-login needed).

Each process caches its access token in memory so the hot path does no I/O. A logout
in one worker (or in the CLI) must not leave the others serving the old token until
it expires: with Redis configured, changes are published on one channel and every
process drops its cached token for that account, so its next request re-reads the
store. Without Redis, other processes notice at their next refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from .locks import REDIS_KEY_PREFIX

log = logging.getLogger(__name__)

CHANNEL = f"{REDIS_KEY_PREFIX}:events"


class RedisAccountEvents:
    def __init__(self, redis: Any):
        self._redis = redis
        self._task: asyncio.Task[None] | None = None

    async def publish(self, account: str) -> None:
        from redis.exceptions import RedisError

        try:
            await self._redis.publish(CHANNEL, account)
        except RedisError as exc:
            log.warning("Redis unavailable: other workers will see the change to '%s' at their next refresh (%s)",
                        account, type(exc).__name__)

    def listen(self, on_change: Callable[[str], None]) -> None:
        """Start (once per event loop) a background task calling ``on_change(account)``."""
        if self._task is not None and not self._task.done():
            return
        self._task = asyncio.get_running_loop().create_task(self._listen(on_change), name="claude-oauth-events")

    async def _listen(self, on_change: Callable[[str], None]) -> None:
        from redis.exceptions import RedisError

        delay = 1.0
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    delay = 1.0
                    async for message in pubsub.listen():
                        data = message.get("data")
                        account = data.decode() if isinstance(data, bytes) else str(data)
                        on_change(account)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.debug("Claude OAuth event listener: %s; reconnecting in %.0fs", type(exc).__name__, delay)
            # A missed event costs at most a stale token until the next refresh: drop
            # every cached token after a disconnect so nothing stale outlives it.
            on_change("*")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
