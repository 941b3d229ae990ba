"""PostgresAccountEvents against a real PostgreSQL: change events between workers without Redis.

Every test listens on a channel of its own, so runs elsewhere on the same database are not disturbed.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest
from psycopg import sql

from litellm_claude_oauth.errors import NotLoggedInError
from litellm_claude_oauth.manager import TokenManager
from litellm_claude_oauth.settings import Settings
from litellm_claude_oauth.store.pg_events import PostgresAccountEvents, pg_channel

from .conftest import FakeTokenEndpoint

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(os.environ.get("CLAUDE_OAUTH_SKIP_PG") == "1", reason="CLAUDE_OAUTH_SKIP_PG=1"),
]


def with_query(dsn: str, **params: str) -> str:
    return dsn + ("&" if "?" in dsn else "?") + urlencode(params)


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def make_events(pg_dsn: str, namespace: str) -> AsyncIterator[Callable[..., PostgresAccountEvents]]:
    made: list[PostgresAccountEvents] = []

    def make(dsn: str = pg_dsn, **kwargs: Any) -> PostgresAccountEvents:
        kwargs.setdefault("namespace", namespace)
        events = PostgresAccountEvents(dsn, **kwargs)
        made.append(events)
        return events

    yield make
    for events in made:
        await events.aclose()


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def until_heard(publisher: PostgresAccountEvents, seen: list[str], account: str = "warm-up") -> None:
    """Publish ``account`` until the listener has it: LISTEN starts in the background."""
    async with asyncio.timeout(5):
        while account not in seen:
            await publisher.publish(account)
            await asyncio.sleep(0.05)


async def test_publish_on_one_reaches_the_others_listener(make_events: Callable[..., PostgresAccountEvents]) -> None:
    worker_a, worker_b = make_events(), make_events()
    seen_b: list[str] = []
    worker_b.listen(seen_b.append)
    worker_b.listen(seen_b.append)  # once per loop: a second call starts nothing
    await until_heard(worker_a, seen_b)

    seen_b.clear()
    await worker_a.publish("alice")
    await worker_a.publish("bob")
    await eventually(lambda: seen_b == ["alice", "bob"])


async def test_other_namespaces_do_not_hear(make_events: Callable[..., PostgresAccountEvents], namespace: str) -> None:
    ours, theirs = make_events(), make_events(namespace=namespace + "-other")
    heard: list[str] = []
    overheard: list[str] = []
    ours.listen(heard.append)
    theirs.listen(overheard.append)
    await until_heard(ours, heard)
    await until_heard(theirs, overheard, "their-warm-up")
    await ours.publish("alice")
    await eventually(lambda: "alice" in heard)
    await asyncio.sleep(0.2)
    assert "alice" not in overheard and "warm-up" not in overheard


async def test_malformed_messages_and_failing_callbacks_do_not_stop_the_listener(
    make_events: Callable[..., PostgresAccountEvents], pg_dsn: str
) -> None:
    events = make_events()
    seen: list[str] = []

    def on_change(account: str) -> None:
        if account == "carol":
            raise RuntimeError("bug in a listener")
        seen.append(account)

    events.listen(on_change)
    await until_heard(events, seen)
    seen.clear()
    # Anyone who can connect can NOTIFY anything.
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as raw:
        for payload in ["not an account!", "", "../../etc", "x" * 500, "carol", "dave"]:
            await raw.execute("SELECT pg_notify(%s, %s)", (events.channel, payload))
    await eventually(lambda: "dave" in seen)
    assert seen == ["dave"]
    assert events._task is not None and not events._task.done()


async def test_listener_reconnects_and_flushes_after_a_disconnect(
    make_events: Callable[..., PostgresAccountEvents], pg_dsn: str, namespace: str
) -> None:
    dsn = with_query(pg_dsn, application_name=namespace)
    listener, publisher = make_events(dsn, reconnect_delay=0.1), make_events()
    seen: list[str] = []
    listener.listen(seen.append)
    await until_heard(publisher, seen)

    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as raw:
        cur = await raw.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s", (namespace,)
        )
        assert (await cur.fetchone()) == (1,)
    # Whatever was published while it was away is unknown: every cached token goes.
    await eventually(lambda: "*" in seen)
    await until_heard(publisher, seen, "after-reconnect")


async def test_publish_without_a_server_only_warns(
    make_events: Callable[..., PostgresAccountEvents], caplog: pytest.LogCaptureFixture
) -> None:
    dead = make_events("postgresql://u:hunter2@127.0.0.1:1/db", connect_timeout=1)
    await dead.publish("alice")
    assert "other workers will see the change to 'alice'" in caplog.text
    assert "hunter2" not in caplog.text


def test_channel_names() -> None:
    assert PostgresAccountEvents("postgresql://h/db?schema=tenant_a").channel == pg_channel("tenant_a")
    assert PostgresAccountEvents("postgresql://h/db").channel == pg_channel("") == "litellm_claude_oauth_events"
    assert pg_channel("a") != pg_channel("b")
    long = pg_channel("n" * 100)
    assert len(long.encode()) <= 63 and long != pg_channel("n" * 99)


async def test_logout_in_one_worker_reaches_the_others_without_redis(
    env: dict[str, str], token_endpoint: FakeTokenEndpoint, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two workers on one Postgres store, no Redis: the manager wires PostgresAccountEvents.
    schema = f"lco_test_{uuid.uuid4().hex[:12]}"
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as raw:
        await raw.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    monkeypatch.setenv("CLAUDE_TOKEN_STORE", "postgres")
    monkeypatch.setenv("CLAUDE_OAUTH_DATABASE_URL", with_query(pg_dsn, schema=schema))
    worker_a = TokenManager.from_settings(Settings.from_env())
    worker_b = TokenManager.from_settings(Settings.from_env())
    try:
        assert isinstance(worker_a._events, PostgresAccountEvents)
        seen_a: list[str] = []
        worker_a.listen_for_changes(seen_a.append)
        worker_b.listen_for_changes()
        await until_heard(worker_b._events, seen_a)  # type: ignore[arg-type]

        start = await worker_a.start_login()
        await worker_b.complete_login(token_endpoint.authorize(start.authorization_url))
        assert await worker_a.get_access_token() == await worker_b.get_access_token()
        await asyncio.sleep(0.2)  # the login's own event has come and gone
        seen_a.clear()
        await worker_b.logout()
        await eventually(lambda: "default" in seen_a)
        with pytest.raises(NotLoggedInError):
            await worker_a.get_access_token()
    finally:
        await worker_a.aclose()
        await worker_b.aclose()
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as raw:
            await raw.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
