"""Tell every worker and replica that an account changed (login, logout, re-login needed).

Each process caches its access token in memory so the hot path does no I/O. A logout
in one worker (or in the CLI) must not leave the others serving the old token until
it expires: changes are published on a channel and every process drops its cached
token for that account, so its next request re-reads the store. The channel is Redis
pub/sub here, or PostgreSQL LISTEN/NOTIFY (:mod:`.store.pg_events`) without Redis.

Whoever can publish on the channel can send anything, so each message is checked on
its own: a name that is not an account id is dropped, a failing callback is logged,
and neither stops the listener. ``"*"`` (drop every cached token) is honoured at most
once per :data:`FLUSH_INTERVAL` seconds, so a flood of them costs one reload a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from .locks import REDIS_KEY_PREFIX
from .settings import validate_account_id

log = logging.getLogger(__name__)

ALL = "*"
FLUSH_INTERVAL = 1.0
RECONNECT_DELAY = 1.0
RECONNECT_DELAY_MAX = 30.0


class ChangeDispatcher:
    """Hands channel messages to ``on_change``: validated, isolated, with ``"*"`` rate-limited."""

    def __init__(self, on_change: Callable[[str], None], *, flush_interval: float = FLUSH_INTERVAL):
        self._on_change = on_change
        self._flush_interval = flush_interval
        self._last_flush = float("-inf")
        self._deferred: asyncio.TimerHandle | None = None

    def message(self, data: object) -> None:
        """One message as published: an account id, or ``"*"``."""
        try:
            text = data.decode() if isinstance(data, bytes) else data
            if not isinstance(text, str):
                raise ValueError(f"a {type(data).__name__}, not text")
            if text == ALL:
                self._flush_soon()
                return
            account = validate_account_id(text)
        except (UnicodeDecodeError, ValueError) as exc:
            log.warning("Claude OAuth change feed: ignored a message that is not an account id (%s)", exc)
            return
        self._call(account)

    def lost_messages(self) -> None:
        """The feed was down: anything may have changed meanwhile, so drop every cached token now."""
        self._cancel_deferred()
        self._last_flush = time.monotonic()
        self._call(ALL)

    def close(self) -> None:
        self._cancel_deferred()

    def _flush_soon(self) -> None:
        if self._deferred is not None:
            return  # one flush is already due: this message adds nothing to it
        wait = self._last_flush + self._flush_interval - time.monotonic()
        if wait <= 0:
            self._last_flush = time.monotonic()
            self._call(ALL)
            return
        # Deferred rather than dropped: a "*" sent for a reason still takes effect, once.
        self._deferred = asyncio.get_running_loop().call_later(wait, self._deferred_flush)

    def _deferred_flush(self) -> None:
        self._deferred = None
        self._last_flush = time.monotonic()
        self._call(ALL)

    def _cancel_deferred(self) -> None:
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None

    def _call(self, account: str) -> None:
        try:
            self._on_change(account)
        except Exception:  # a listener's bug must not end the feed for every other account
            log.exception("Claude OAuth change feed: handling the change to '%s' failed", account)


class ChangeFeed:
    """The listening half every channel shares: one background task per event loop that
    subscribes, hands each message to a :class:`ChangeDispatcher`, and after losing the
    connection flushes every cached token, reconnects with back-off and flushes again."""

    _reconnect_delay: float = RECONNECT_DELAY
    _task: asyncio.Task[None] | None = None

    def listen(self, on_change: Callable[[str], None]) -> None:
        """Start (once per event loop) a background task calling ``on_change(account)``."""
        loop = asyncio.get_running_loop()
        if self._task is not None and not self._task.done() and self._task.get_loop() is loop:
            return
        name = f"claude-oauth-{type(self).__name__}"
        self._task = loop.create_task(self._run(ChangeDispatcher(on_change)), name=name)

    def _subscription(self) -> AbstractAsyncContextManager[AsyncIterator[object]]:
        """Subscribed on entry; yields the payloads as they arrive."""
        raise NotImplementedError

    def _describe_error(self, exc: BaseException) -> str | None:
        """A short reason if ``exc`` is the channel being unavailable, else None (a bug: re-raised)."""
        raise NotImplementedError

    async def _run(self, dispatch: ChangeDispatcher) -> None:
        delay, lost = self._reconnect_delay, False
        try:
            while True:
                try:
                    async with self._subscription() as payloads:
                        delay = self._reconnect_delay
                        if lost:
                            dispatch.lost_messages()  # what was published while we were away
                        lost = True
                        async for payload in payloads:
                            dispatch.message(payload)
                except Exception as exc:
                    reason = self._describe_error(exc)
                    if reason is None:
                        raise
                    log.debug(
                        "Claude OAuth change feed (%s): %s; reconnecting in %.0fs", type(self).__name__, reason, delay
                    )
                if lost:
                    dispatch.lost_messages()
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_DELAY_MAX)
        finally:
            dispatch.close()

    async def _stop_listening(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None


def redis_channel(namespace: str) -> str:
    return f"{REDIS_KEY_PREFIX}:events:{namespace}"


def redis_namespace(redis: Any) -> str:
    """The default namespace: the client's database index.

    Pub/sub channels ignore the database number, so deployments on DB 0 and DB 1 of one
    server would otherwise hear each other. Deployments sharing one database already
    share their refresh locks and pending logins, so they share events too.
    """
    kwargs = getattr(getattr(redis, "connection_pool", None), "connection_kwargs", {}) or {}
    return f"db{int(kwargs.get('db') or 0)}"


class RedisAccountEvents(ChangeFeed):
    def __init__(self, redis: Any, *, namespace: str | None = None, reconnect_delay: float = RECONNECT_DELAY):
        """``namespace`` defaults to :func:`redis_namespace`; the channel is :func:`redis_channel` of it."""
        self._redis = redis
        self.channel = redis_channel(namespace if namespace is not None else redis_namespace(redis))
        self._reconnect_delay = reconnect_delay

    async def publish(self, account: str) -> None:
        from redis.exceptions import RedisError

        try:
            await self._redis.publish(self.channel, account)
        except RedisError as exc:
            log.warning("Redis unavailable: other workers will see the change to '%s' at their next refresh (%s)",
                        account, type(exc).__name__)

    @contextlib.asynccontextmanager
    async def _subscription(self) -> AsyncIterator[AsyncIterator[object]]:
        async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(self.channel)
            yield (message.get("data") async for message in pubsub.listen())

    def _describe_error(self, exc: BaseException) -> str | None:
        from redis.exceptions import RedisError

        return type(exc).__name__ if isinstance(exc, (RedisError, OSError)) else None

    async def aclose(self) -> None:
        """Stop listening; the Redis client belongs to the caller, who closes it."""
        await self._stop_listening()
