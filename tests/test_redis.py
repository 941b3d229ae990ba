"""Redis coordination against a real Redis: refresh lock, shared pending logins, change events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from litellm_claude_oauth.crypto import Cipher
from litellm_claude_oauth.errors import NotLoggedInError
from litellm_claude_oauth.events import RedisAccountEvents
from litellm_claude_oauth.locks import RedisLock
from litellm_claude_oauth.manager import TokenManager
from litellm_claude_oauth.pending import RedisPendingLogins
from litellm_claude_oauth.settings import Settings
from litellm_claude_oauth.store.file import FileTokenStore
from litellm_claude_oauth.tokens import PendingLogin

from .backends import TEST_REDIS_URL as REDIS_URL
from .conftest import FakeTokenEndpoint

pytestmark = pytest.mark.redis

DEAD_REDIS = "redis://127.0.0.1:1/0"
A = bytes.fromhex("a1" * 32)


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.fixture
def store(tmp_path: Path) -> FileTokenStore:
    return FileTokenStore(tmp_path / "tokens.json", Cipher(A))


def pending(state: str, account: str = "default") -> PendingLogin:
    return PendingLogin(state=state, code_verifier="v" * 43, account=account, redirect_uri="http://cb")


async def test_lock_excludes_other_holders_and_releases(redis: Redis, store: FileTokenStore) -> None:
    first, second = RedisLock(redis, store, ttl=5), RedisLock(redis, store, ttl=5, wait=0.3)
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


async def test_watchdog_keeps_a_slow_holder_locked(redis: Redis, store: FileTokenStore) -> None:
    holder, waiter = RedisLock(redis, store, ttl=0.6), RedisLock(redis, store, ttl=0.6, wait=0.2)
    async with holder("default"):
        await asyncio.sleep(1.5)  # longer than the TTL: only the watchdog keeps the lock alive
        with pytest.raises(Exception, match="timed out"):
            async with waiter("default"):
                pass


async def test_lock_of_a_dead_holder_expires(redis: Redis, store: FileTokenStore) -> None:
    # A holder killed mid-refresh never releases: its key simply expires.
    await redis.set("litellm:claude_oauth:refresh:default", "dead-process-token", px=500)
    async with RedisLock(redis, store, ttl=5, wait=3)("default"):
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


async def test_pending_login_started_on_one_replica_finishes_on_another(redis: Redis, tmp_path: Path) -> None:
    replica_a = RedisPendingLogins(redis, Cipher(A), FileTokenStore(tmp_path / "a.json", Cipher(A)), ttl=600)
    replica_b = RedisPendingLogins(redis, Cipher(A), FileTokenStore(tmp_path / "b.json", Cipher(A)), ttl=600)
    await replica_a.put_pending(pending("s1"))
    assert 0 < await redis.ttl("litellm:claude_oauth:pending:s1") <= 600  # expires by itself
    assert [p.state for p in await replica_b.pending_for("default")] == ["s1"]
    raw = await redis.get("litellm:claude_oauth:pending:s1")
    assert raw is not None and b"v" * 43 not in raw  # sealed like the token store
    taken = await asyncio.gather(replica_a.take_pending("s1"), replica_b.take_pending("s1"))
    assert sum(t is not None for t in taken) == 1  # single use, even racing


async def test_pending_logins_survive_redis_outage_via_store(store: FileTokenStore) -> None:
    dead = Redis.from_url(DEAD_REDIS, socket_connect_timeout=0.5)
    logins = RedisPendingLogins(dead, Cipher(A), store, ttl=600)
    await logins.put_pending(pending("s2"))
    assert [p.state for p in await logins.pending_for("default")] == ["s2"]
    assert (await logins.take_pending("s2")) is not None


async def test_events_reach_every_listener(redis: Redis) -> None:
    seen_a: list[str] = []
    seen_b: list[str] = []
    a = RedisAccountEvents(Redis.from_url(REDIS_URL))
    b = RedisAccountEvents(Redis.from_url(REDIS_URL))
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
