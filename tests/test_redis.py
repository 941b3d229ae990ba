"""Redis coordination against a real Redis: refresh lock, shared pending logins, change events.

Each test uses keys under a prefix and a channel of its own, removed afterwards: other
runs on the same Redis database are not disturbed (no FLUSHDB).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from litellm_claude_oauth.crypto import Cipher
from litellm_claude_oauth.errors import NotLoggedInError, TokenStoreError
from litellm_claude_oauth.events import ChangeDispatcher, RedisAccountEvents, redis_channel, redis_namespace
from litellm_claude_oauth.locks import DEFAULT_REFRESH_BOUND, RedisLock, lock_wait, refresh_bound
from litellm_claude_oauth.manager import TokenManager
from litellm_claude_oauth.pending import RedisPendingLogins
from litellm_claude_oauth.settings import DEFAULT_TOKEN_URLS, Settings
from litellm_claude_oauth.store.file import FileTokenStore
from litellm_claude_oauth.tokens import PendingLogin

from .backends import TEST_REDIS_URL as REDIS_URL
from .conftest import FakeTokenEndpoint

pytestmark = pytest.mark.redis

DEAD_REDIS = "redis://127.0.0.1:1/0"
A = bytes.fromhex("a1" * 32)


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def redis(prefix: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
def store(tmp_path: Path) -> FileTokenStore:
    return FileTokenStore(tmp_path / "tokens.json", Cipher(A))


def pending(state: str, account: str = "default") -> PendingLogin:
    return PendingLogin(state=state, code_verifier="v" * 43, account=account, redirect_uri="http://cb")


async def test_lock_excludes_other_holders_and_releases(redis: Redis, store: FileTokenStore, prefix: str) -> None:
    first, second = RedisLock(redis, store, ttl=5, key_prefix=prefix), RedisLock(redis, store, ttl=5, wait=0.3, key_prefix=prefix)
    order: list[str] = []
    async with first("default"):
        order.append("first")
        with pytest.raises(Exception, match="timed out"):
            async with second("default"):
                order.append("second-too-early")
        async with second("other"):  # other accounts are independent
            order.append("other")
    async with second("default"):
        order.append("second")
    assert order == ["first", "other", "second"]


async def test_watchdog_keeps_a_slow_holder_locked(redis: Redis, store: FileTokenStore, prefix: str) -> None:
    holder, waiter = RedisLock(redis, store, ttl=0.6, key_prefix=prefix), RedisLock(redis, store, ttl=0.6, wait=0.2, key_prefix=prefix)
    async with holder("default"):
        await asyncio.sleep(1.5)  # longer than the TTL: only the watchdog keeps the lock alive
        with pytest.raises(Exception, match="timed out"):
            async with waiter("default"):
                pass


async def test_lock_of_a_dead_holder_expires(redis: Redis, store: FileTokenStore, prefix: str) -> None:
    # A holder killed mid-refresh never releases: its key simply expires.
    await redis.set(f"{prefix}:refresh:default", "dead-process-token", px=500)
    async with RedisLock(redis, store, ttl=5, wait=3, key_prefix=prefix)("default"):
        pass


async def test_lock_falls_back_to_the_store_when_redis_is_down(
    store: FileTokenStore, caplog: pytest.LogCaptureFixture
) -> None:
    dead = Redis.from_url(DEAD_REDIS, socket_connect_timeout=0.5)
    entered = False
    with caplog.at_level(logging.WARNING):
        async with RedisLock(dead, store)("default"):
            entered = True
            # The store's own lock is really held: a second store instance cannot take it.
            other = FileTokenStore(store.path, Cipher(A), lock_timeout=0.2)
            with pytest.raises(Exception, match="refresh lock"):
                async with other.lock("default"):
                    pass
    assert entered and "Redis unavailable" in caplog.text


async def test_pending_login_started_on_one_replica_finishes_on_another(
    redis: Redis, tmp_path: Path, prefix: str
) -> None:
    replica_a = RedisPendingLogins(redis, Cipher(A), FileTokenStore(tmp_path / "a.json", Cipher(A)), ttl=600, key_prefix=prefix)
    replica_b = RedisPendingLogins(redis, Cipher(A), FileTokenStore(tmp_path / "b.json", Cipher(A)), ttl=600, key_prefix=prefix)
    await replica_a.put_pending(pending("s1"))
    assert 0 < await redis.ttl(f"{prefix}:pending:s1") <= 600  # expires by itself
    assert [p.state for p in await replica_b.pending_for("default")] == ["s1"]
    raw = await redis.get(f"{prefix}:pending:s1")
    assert raw is not None and b"v" * 43 not in raw  # sealed like the token store
    taken = await asyncio.gather(replica_a.take_pending("s1"), replica_b.take_pending("s1"))
    assert sum(t is not None for t in taken) == 1  # single use, even racing


async def test_pending_logins_survive_redis_outage_via_store(store: FileTokenStore) -> None:
    dead = Redis.from_url(DEAD_REDIS, socket_connect_timeout=0.5)
    logins = RedisPendingLogins(dead, Cipher(A), store, ttl=600)
    await logins.put_pending(pending("s2"))
    assert [p.state for p in await logins.pending_for("default")] == ["s2"]
    assert (await logins.take_pending("s2")) is not None


async def test_events_reach_every_listener(redis: Redis, prefix: str) -> None:
    seen_a: list[str] = []
    seen_b: list[str] = []
    a = RedisAccountEvents(Redis.from_url(REDIS_URL), namespace=prefix)
    b = RedisAccountEvents(Redis.from_url(REDIS_URL), namespace=prefix)
    a.listen(seen_a.append)
    b.listen(seen_b.append)
    await asyncio.sleep(0.3)  # subscriptions established
    await a.publish("alice")
    for _ in range(50):
        if "alice" in seen_a and "alice" in seen_b:
            break
        await asyncio.sleep(0.05)
    assert "alice" in seen_a and "alice" in seen_b
    await a.aclose()
    await b.aclose()
    await a._redis.aclose()
    await b._redis.aclose()


# -- lock waits (L10) ---------------------------------------------------------------


def test_lock_waits_outlast_the_slowest_refresh(env: dict[str, str], store: FileTokenStore) -> None:
    settings = Settings.from_env()
    bound = refresh_bound(settings)
    assert bound == len(settings.token_urls) * settings.http_timeout_seconds
    # The default bound is what default settings give: every default token URL, default timeout.
    assert len(DEFAULT_TOKEN_URLS) * Settings.model_fields["http_timeout_seconds"].default == DEFAULT_REFRESH_BOUND
    assert RedisLock(None, store, refresh_bound=bound).wait == lock_wait(bound) > bound
    assert RedisLock(None, store).wait > DEFAULT_REFRESH_BOUND


async def test_a_waiter_outwaits_a_slow_refresh(redis: Redis, store: FileTokenStore, prefix: str) -> None:
    # The holder's refresh takes its full (short, for the test) bound; the waiter gets the lock after it.
    holder = RedisLock(redis, store, ttl=1, refresh_bound=0.8, key_prefix=prefix)
    waiter = RedisLock(redis, store, ttl=1, refresh_bound=0.8, key_prefix=prefix)
    holding = asyncio.Event()
    order: list[str] = []

    async def slow_refresh() -> None:
        async with holder("default"):
            holding.set()
            await asyncio.sleep(0.8)
            order.append("refreshed")

    task = asyncio.create_task(slow_refresh())
    await holding.wait()
    async with waiter("default"):
        order.append("waiter in")
    await task
    assert order == ["refreshed", "waiter in"]


# -- pending logins on old or unavailable Redis (L8) ----------------------------------


class WithoutGetdel:
    """A Redis client as Redis < 6.2 answers it: GETDEL is an unknown command."""

    def __init__(self, client: Redis):
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def getdel(self, *args: Any) -> Any:
        raise ResponseError("unknown command 'GETDEL'")

    async def execute_command(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if str(name).upper() == "GETDEL":
            raise ResponseError("unknown command 'GETDEL'")
        return await self._client.execute_command(name, *args, **kwargs)


async def test_pending_take_works_without_getdel(redis: Redis, tmp_path: Path, prefix: str) -> None:
    old_redis: Any = WithoutGetdel(redis)
    replicas = [
        RedisPendingLogins(old_redis, Cipher(A), FileTokenStore(tmp_path / f"{n}.json", Cipher(A)), ttl=600, key_prefix=prefix)
        for n in range(3)
    ]
    await replicas[0].put_pending(pending("s1"))
    taken = await asyncio.gather(*(r.take_pending("s1") for r in replicas))
    assert [t.state for t in taken if t is not None] == ["s1"]  # found, and once only
    assert await redis.exists(f"{prefix}:pending:s1") == 0


async def test_redis_error_on_take_is_not_an_unknown_login(redis: Redis, tmp_path: Path, prefix: str) -> None:
    started = RedisPendingLogins(redis, Cipher(A), FileTokenStore(tmp_path / "a.json", Cipher(A)), ttl=600, key_prefix=prefix)
    await started.put_pending(pending("s1"))

    dead = Redis.from_url(DEAD_REDIS, socket_connect_timeout=0.5)
    cut_off = RedisPendingLogins(dead, Cipher(A), FileTokenStore(tmp_path / "b.json", Cipher(A)), ttl=600, key_prefix=prefix)
    with pytest.raises(TokenStoreError, match="Redis, where it may be kept, is unavailable"):
        await cut_off.take_pending("s1")
    await dead.aclose()
    # Nothing was lost: once Redis answers, the same code finishes the login.
    taken = await started.take_pending("s1")
    assert taken is not None and taken.state == "s1"


# -- change events (L1) ---------------------------------------------------------------


async def listening(events: RedisAccountEvents, client: Redis, seen: list[str], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while "warm-up" not in seen:
            await client.publish(events.channel, "warm-up")
            await asyncio.sleep(0.05)


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def test_malformed_messages_and_failing_callbacks_do_not_stop_the_listener(redis: Redis, prefix: str) -> None:
    events = RedisAccountEvents(Redis.from_url(REDIS_URL), namespace=prefix)
    seen: list[str] = []

    def on_change(account: str) -> None:
        if account == "carol":
            raise RuntimeError("bug in a listener")
        seen.append(account)

    events.listen(on_change)
    try:
        await listening(events, redis, seen)
        seen.clear()
        for payload in [b"\xff\xfe", "not an account!", "", "x" * 500, "carol", "dave"]:
            await redis.publish(events.channel, payload)
        await eventually(lambda: "dave" in seen)
        assert seen == ["dave"]
        assert events._task is not None and not events._task.done()
    finally:
        await events.aclose()
        await events._redis.aclose()


async def test_channels_are_namespaced_by_database(redis: Redis, prefix: str) -> None:
    assert redis_namespace(redis) == "db" + REDIS_URL.rsplit("/", 1)[1]  # the test URL names its DB
    assert redis_namespace(Redis.from_url("redis://127.0.0.1:6379/3")) == "db3"
    assert redis_namespace(Redis.from_url("redis://127.0.0.1:6379")) == "db0"
    assert RedisAccountEvents(redis).channel == redis_channel(redis_namespace(redis))

    ours = RedisAccountEvents(Redis.from_url(REDIS_URL), namespace=f"{prefix}-db1")
    theirs = RedisAccountEvents(Redis.from_url(REDIS_URL), namespace=f"{prefix}-db2")
    heard: list[str] = []
    overheard: list[str] = []
    ours.listen(heard.append)
    theirs.listen(overheard.append)
    try:
        await listening(ours, redis, heard)
        await listening(theirs, redis, overheard)
        await ours.publish("alice")
        await eventually(lambda: "alice" in heard)
        await asyncio.sleep(0.2)
        assert "alice" not in overheard
    finally:
        for events in (ours, theirs):
            await events.aclose()
            await events._redis.aclose()


async def test_listener_flushes_after_losing_its_connection(redis: Redis, prefix: str) -> None:
    events = RedisAccountEvents(Redis.from_url(REDIS_URL, client_name=prefix), namespace=prefix, reconnect_delay=0.1)
    seen: list[str] = []
    events.listen(seen.append)
    try:
        await listening(events, redis, seen)
        clients = await redis.client_list()
        ids = [c["id"] for c in clients if c.get("name") == prefix]
        assert ids
        for client_id in ids:
            await redis.client_kill_filter(_id=client_id)
        await eventually(lambda: "*" in seen)
        seen.clear()
        await listening(events, redis, seen)  # and it is back
    finally:
        await events.aclose()
        await events._redis.aclose()


async def test_flush_all_is_rate_limited_but_never_lost() -> None:
    calls: list[str] = []
    dispatch = ChangeDispatcher(calls.append, flush_interval=0.3)
    for _ in range(50):
        dispatch.message("*")
    assert calls == ["*"]  # the first at once; the flood costs one more, later
    await asyncio.sleep(0.45)
    assert calls == ["*", "*"]
    dispatch.message("alice")  # account changes are never held back
    assert calls == ["*", "*", "alice"]
    dispatch.close()


async def test_logout_in_one_worker_reaches_the_others(
    env: dict[str, str], token_endpoint: FakeTokenEndpoint, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    worker_a = TokenManager.from_settings(Settings.from_env())
    worker_b = TokenManager.from_settings(Settings.from_env())
    worker_a.listen_for_changes()
    worker_b.listen_for_changes()
    await asyncio.sleep(0.3)
    start = await worker_a.start_login()
    await worker_b.complete_login(token_endpoint.authorize(start.authorization_url))  # other replica finishes it
    assert await worker_a.get_access_token() == await worker_b.get_access_token()
    await worker_b.logout()
    for _ in range(50):
        try:
            await worker_a.get_access_token()
        except NotLoggedInError:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("worker A kept serving a logged-out account")
    await worker_a.aclose()
    await worker_b.aclose()
