"""PostgresTokenStore against a real PostgreSQL.

Set CLAUDE_OAUTH_TEST_DATABASE_URL to point elsewhere, or CLAUDE_OAUTH_SKIP_PG=1 to
skip; without the latter a missing server fails the run on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from pydantic import SecretStr

from litellm_claude_oauth.crypto import Cipher, key_id
from litellm_claude_oauth.errors import DecryptionError, TokenStoreError
from litellm_claude_oauth.store.base import AccountRecord, TokenStore
from litellm_claude_oauth.store.postgres import (
    PENDING_TABLE,
    REFRESH_LOCK_CLASS,
    TOKENS_TABLE,
    PostgresTokenStore,
)
from litellm_claude_oauth.tokens import PendingLogin, TokenSet

from .tcp_proxy import TcpProxy, free_port

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(os.environ.get("CLAUDE_OAUTH_SKIP_PG") == "1", reason="CLAUDE_OAUTH_SKIP_PG=1"),
]

KEY_A = bytes.fromhex("11" * 32)
KEY_B = bytes.fromhex("22" * 32)
ACCESS = "sk-ant-oat01-ACCESS-do-not-leak-0123456789"
REFRESH = "sk-ant-ort01-REFRESH-do-not-leak-9876543210"

StoreFactory = Callable[..., PostgresTokenStore]


# -- fixtures ------------------------------------------------------------------------


def with_query(dsn: str, **params: str) -> str:
    return dsn + ("&" if "?" in dsn else "?") + urlencode(params)


def at_port(dsn: str, port: int) -> str:
    """``dsn`` (a URL) pointed at 127.0.0.1:``port``."""
    parts = urlsplit(dsn)
    userinfo = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"))


@pytest.fixture
def schema(pg_dsn: str) -> Iterator[str]:
    """A schema of this test's own, dropped afterwards: tests running elsewhere on the
    same database (other engineers, the e2e suite) keep their tables and locks."""
    name = f"lco_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def clean_db(pg_dsn: str, schema: str) -> str:
    """The store's DSN: Prisma's ``schema`` parameter puts its tables in the test's schema,
    and the application name marks its sessions as this test's."""
    return with_query(pg_dsn, schema=schema, application_name=schema)


@pytest.fixture
async def make_store(clean_db: str) -> AsyncIterator[StoreFactory]:
    stores: list[PostgresTokenStore] = []

    def make(cipher: Cipher | None = None, dsn: str = clean_db, **kwargs: Any) -> PostgresTokenStore:
        store = PostgresTokenStore(dsn, cipher or Cipher(KEY_A), **kwargs)
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


@pytest.fixture
async def raw(pg_dsn: str, schema: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A plain connection for looking behind the store's back (unqualified names are the test's schema)."""
    conn = await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True)
    await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    yield conn
    await conn.close()


def record(account: str = "default", *, access: str = ACCESS, relogin: str | None = None) -> AccountRecord:
    return AccountRecord(
        account=account,
        tokens=TokenSet(
            access_token=SecretStr(access),
            refresh_token=SecretStr(REFRESH),
            expires_at=1_900_000_000.5,
            account_email="ada@example.com",
            organization_name="Analytical Engines",
            scope="user:inference",
        ),
        relogin_reason=relogin,
    )


def pending(state: str, account: str = "default", created_at: float | None = None) -> PendingLogin:
    return PendingLogin(
        state=state,
        code_verifier=SecretStr(f"verifier-{state}"),
        account=account,
        redirect_uri="https://console.anthropic.com/oauth/code/callback",
        created_at=time.time() if created_at is None else created_at,
    )


async def fetch_row(raw: psycopg.AsyncConnection[Any], account: str) -> dict[str, Any]:
    cur = await raw.execute(
        sql.SQL("SELECT * FROM {} WHERE account_id = %s").format(sql.Identifier(TOKENS_TABLE)), (account,)
    )
    row = await cur.fetchone()
    assert row is not None and cur.description is not None
    return dict(zip([c.name for c in cur.description], row, strict=True))


async def lock_holder_pid(raw: psycopg.AsyncConnection[Any], schema: str, account: str) -> int | None:
    # The two-key form shows as classid = key 1, objid = key 2 (as an unsigned oid), objsubid = 2.
    cur = await raw.execute(
        "SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND l.classid::bigint = %s AND l.objid::bigint = (hashtext(%s)::bigint & 4294967295)",
        (REFRESH_LOCK_CLASS, f"{schema}/{account}"),
    )
    row = await cur.fetchone()
    return None if row is None else int(row[0])


# -- basics --------------------------------------------------------------------------


async def test_round_trip(make_store: StoreFactory) -> None:
    store = make_store()
    assert isinstance(store, TokenStore)
    assert await store.load("default") is None
    assert await store.accounts() == []

    work = record("work")
    await store.save(work)
    await store.save(record("default", relogin="refresh token revoked"))

    assert await store.load("work") == work
    loaded = await store.load("default")
    assert loaded is not None
    assert loaded.tokens.access == ACCESS and loaded.tokens.refresh == REFRESH
    assert loaded.tokens.account_email == "ada@example.com"
    assert loaded.relogin_reason == "refresh token revoked"
    assert await store.accounts() == ["default", "work"]

    assert await store.delete("work") is True
    assert await store.delete("work") is False
    assert await store.load("work") is None
    assert await store.accounts() == ["default"]


async def test_save_overwrites_and_bumps_version(make_store: StoreFactory, raw: psycopg.AsyncConnection[Any]) -> None:
    store = make_store()
    await store.save(record())
    first = await fetch_row(raw, "default")
    await store.save(record(access="sk-ant-oat01-second"))
    second = await fetch_row(raw, "default")

    assert (first["version"], second["version"]) == (1, 2)
    assert second["created_at"] == first["created_at"]
    assert second["updated_at"] >= first["updated_at"]
    loaded = await store.load("default")
    assert loaded is not None and loaded.tokens.access == "sk-ant-oat01-second"


async def test_tokens_are_encrypted_at_rest_and_metadata_is_plain(
    make_store: StoreFactory, raw: psycopg.AsyncConnection[Any]
) -> None:
    store = make_store()
    await store.save(record(relogin="revoked"))
    await store.put_pending(pending("state-1"))

    row = await fetch_row(raw, "default")
    stored = json.dumps(row["token_envelope"])
    assert ACCESS not in stored and REFRESH not in stored
    assert row["token_envelope"]["kid"] == key_id(KEY_A)
    assert row["expires_at"] == datetime.fromtimestamp(1_900_000_000.5, tz=UTC)
    assert row["account_email"] == "ada@example.com"
    assert row["organization_name"] == "Analytical Engines"
    assert row["needs_relogin"] is True

    cur = await raw.execute(sql.SQL("SELECT envelope::text FROM {}").format(sql.Identifier(PENDING_TABLE)))
    (pending_text,) = await cur.fetchone()  # type: ignore[misc]
    assert "verifier-state-1" not in pending_text


async def test_plaintext_mode_when_no_key(make_store: StoreFactory, raw: psycopg.AsyncConnection[Any]) -> None:
    store = make_store(Cipher(None))
    assert store.encrypted is False
    await store.save(record())
    assert (await fetch_row(raw, "default"))["token_envelope"]["alg"] == "none"
    loaded = await store.load("default")
    assert loaded is not None and loaded.tokens.access == ACCESS


async def test_location_has_no_password(make_store: StoreFactory) -> None:
    store = make_store(dsn="postgresql://alice:hunter2-secret@db.internal:6543/tokens?sslmode=disable")
    assert store.location == 'postgres://db.internal:6543/tokens (table "LiteLLM_ClaudeOAuthTokens")'
    assert "hunter2" not in store.location


async def test_prisma_style_database_url_is_accepted(make_store: StoreFactory, pg_dsn: str, schema: str) -> None:
    # LiteLLM's own DATABASE_URL often carries Prisma-only parameters libpq would reject.
    store = make_store(dsn=with_query(pg_dsn, schema=schema, connection_limit="5", pgbouncer="true"))
    assert store.location.endswith(f'(table "{schema}.LiteLLM_ClaudeOAuthTokens")')
    await store.save(record())
    assert await store.accounts() == ["default"]


# -- keys ----------------------------------------------------------------------------


async def test_wrong_key_raises_decryption_error(make_store: StoreFactory) -> None:
    await make_store(Cipher(KEY_A)).save(record())
    with pytest.raises(DecryptionError):
        await make_store(Cipher(KEY_B)).load("default")


async def test_lazy_rotation_reseals_on_load(make_store: StoreFactory, raw: psycopg.AsyncConnection[Any]) -> None:
    await make_store(Cipher(KEY_A)).save(record())
    rotated = make_store(Cipher(KEY_B, (KEY_A,)))

    loaded = await rotated.load("default")
    assert loaded is not None and loaded.tokens.access == ACCESS
    row = await fetch_row(raw, "default")
    assert row["token_envelope"]["kid"] == key_id(KEY_B)
    # Re-sealing does not change the content, so it does not count as a write.
    assert row["version"] == 1

    only_b = await make_store(Cipher(KEY_B)).load("default")
    assert only_b is not None and only_b.tokens.access == ACCESS


async def test_rotate_keys_reseals_everything_once(
    make_store: StoreFactory, raw: psycopg.AsyncConnection[Any]
) -> None:
    old = make_store(Cipher(KEY_A))
    await old.save(record("default"))
    await old.save(record("work"))
    await old.put_pending(pending("state-1"))

    rotated = make_store(Cipher(KEY_B, (KEY_A,)))
    assert await rotated.rotate_keys() == 3
    assert await rotated.rotate_keys() == 0

    only_b = make_store(Cipher(KEY_B))
    assert (await only_b.load("work")) is not None
    assert (await only_b.take_pending("state-1")) is not None
    assert (await fetch_row(raw, "default"))["token_envelope"]["kid"] == key_id(KEY_B)


async def test_rotate_keys_is_all_or_nothing(make_store: StoreFactory, raw: psycopg.AsyncConnection[Any]) -> None:
    await make_store(Cipher(KEY_A)).save(record("a"))
    await make_store(Cipher(KEY_B)).save(record("b"))  # a key the rotating store lacks

    with pytest.raises(DecryptionError):
        await make_store(Cipher(bytes.fromhex("33" * 32), (KEY_A,))).rotate_keys()
    assert (await fetch_row(raw, "a"))["token_envelope"]["kid"] == key_id(KEY_A)


# -- pending logins ------------------------------------------------------------------


async def test_pending_is_single_use(make_store: StoreFactory) -> None:
    store = make_store()
    login = pending("state-1", "work")
    await store.put_pending(login)
    await store.put_pending(pending("state-2", "default"))

    assert await store.pending_for("work") == [login]
    assert await store.pending_for("nobody") == []
    assert await store.take_pending("state-1") == login
    assert await store.take_pending("state-1") is None
    assert await store.pending_for("work") == []


async def test_concurrent_takes_get_the_pending_login_once(make_store: StoreFactory) -> None:
    stores = [make_store() for _ in range(4)]
    await stores[0].put_pending(pending("contested"))
    results = await asyncio.gather(*(s.take_pending("contested") for s in stores))
    assert sum(r is not None for r in results) == 1


async def test_pending_for_skips_logins_under_another_key(make_store: StoreFactory) -> None:
    await make_store(Cipher(KEY_B)).put_pending(pending("foreign"))
    mine = pending("mine", created_at=time.time() + 1)
    store = make_store(Cipher(KEY_A))
    await store.put_pending(mine)
    assert await store.pending_for("default") == [mine]


async def test_prune_pending(make_store: StoreFactory) -> None:
    store = make_store()
    now = time.time()
    await store.put_pending(pending("old", created_at=now - 3600))
    await store.put_pending(pending("new", created_at=now))
    assert await store.prune_pending(older_than=now - 600) == 1
    assert [p.state for p in await store.pending_for("default")] == ["new"]


# -- read-modify-write ---------------------------------------------------------------


def with_mark(current: AccountRecord | None, mark: str, account: str = "default") -> AccountRecord:
    """``current`` plus one more entry in a field writers never set wholesale: lost writes show."""
    base = current or record(account)
    marks = dict(base.model_cooldowns)
    marks[mark] = (1.0, mark)
    return base.model_copy(update={"model_cooldowns": marks})


async def test_update_creates_changes_and_deletes(make_store: StoreFactory, raw: psycopg.AsyncConnection[Any]) -> None:
    store = make_store()
    seen: list[AccountRecord | None] = []
    first = record()

    def create(current: AccountRecord | None) -> AccountRecord:
        seen.append(current)
        return first

    assert await store.update("default", create) == first
    assert seen == [None]
    assert (await fetch_row(raw, "default"))["version"] == 1

    relogin = await store.update("default", lambda cur: cur.model_copy(update={"relogin_reason": "revoked"}))  # type: ignore[union-attr]
    assert relogin is not None and relogin.relogin_reason == "revoked"
    row = await fetch_row(raw, "default")
    assert row["version"] == 2 and row["needs_relogin"] is True
    assert await make_store().load("default") == relogin

    assert await store.update("default", lambda cur: None) is None
    assert await store.load("default") is None
    assert await store.update("default", lambda cur: None) is None  # deleting nothing is fine


async def test_update_returning_the_current_record_writes_nothing(
    make_store: StoreFactory, raw: psycopg.AsyncConnection[Any]
) -> None:
    store = make_store()
    stored = record()
    await store.save(stored)
    before = await fetch_row(raw, "default")
    assert await store.update("default", lambda cur: cur) == stored
    assert await store.update("missing", lambda cur: cur) is None
    assert await fetch_row(raw, "default") == before
    assert await store.accounts() == ["default"]


async def test_update_that_raises_writes_nothing(make_store: StoreFactory, raw: psycopg.AsyncConnection[Any]) -> None:
    store = make_store()
    await store.save(record())
    before = await fetch_row(raw, "default")

    def refuse(current: AccountRecord | None) -> AccountRecord:
        raise RuntimeError("stale refresh token")

    with pytest.raises(RuntimeError, match="stale refresh token"):
        await store.update("default", refuse)
    with pytest.raises(RuntimeError):
        await store.update("new-account", refuse)
    assert await fetch_row(raw, "default") == before
    assert await store.accounts() == ["default"]
    # The connection went back to the pool clean (no transaction left open).
    assert await store.update("default", lambda cur: with_mark(cur, "after")) is not None


async def test_update_rejects_a_record_for_another_account(make_store: StoreFactory) -> None:
    store = make_store()
    with pytest.raises(ValueError, match="record for 'other'"):
        await store.update("default", lambda cur: record("other"))
    assert await store.accounts() == []


async def test_concurrent_updates_lose_nothing(make_store: StoreFactory, raw: psycopg.AsyncConnection[Any]) -> None:
    # Several workers, each its own store (own pool), change the same record at once,
    # as a cooldown and a refresh commit can.
    stores = [make_store() for _ in range(6)]
    await stores[0].save(record())
    await asyncio.gather(
        *(s.update("default", lambda cur, m=f"w{i}-{n}": with_mark(cur, m)) for n in range(3) for i, s in enumerate(stores))
    )
    final = await stores[0].load("default")
    assert final is not None
    assert sorted(final.model_cooldowns) == sorted(f"w{i}-{n}" for n in range(3) for i in range(6))
    assert (await fetch_row(raw, "default"))["version"] == 1 + 18


async def test_concurrent_creations_of_one_account_are_serialised(make_store: StoreFactory) -> None:
    # No row yet, so nothing to lock: the second creator must wait and then see the first's row.
    stores = [make_store() for _ in range(5)]
    await asyncio.gather(*(s.update("fresh", lambda cur, m=f"w{i}": with_mark(cur, m, "fresh")) for i, s in enumerate(stores)))
    final = await stores[0].load("fresh")
    assert final is not None and sorted(final.model_cooldowns) == [f"w{i}" for i in range(5)]


async def test_lazy_reseal_on_read_does_not_undo_writes(make_store: StoreFactory) -> None:
    # A reader under a new key re-seals what it read; a write landing in between must win.
    # The writer still seals with the old key, so every write leaves a record to re-seal.
    writer = make_store(Cipher(KEY_A, (KEY_B,)))
    readers = [make_store(Cipher(KEY_B, (KEY_A,))) for _ in range(3)]
    await writer.save(record())

    async def write(n: int) -> None:
        await writer.update("default", lambda cur: with_mark(cur, f"m{n}"))

    async def read() -> None:
        for reader in readers:
            await reader.load("default")

    await asyncio.gather(*(f for n in range(15) for f in (write(n), read())))
    final = await readers[0].load("default")
    assert final is not None and sorted(final.model_cooldowns) == sorted(f"m{n}" for n in range(15))


async def test_update_under_a_new_key_reseals_an_unchanged_record(
    make_store: StoreFactory, raw: psycopg.AsyncConnection[Any]
) -> None:
    stored = record()
    await make_store(Cipher(KEY_A)).save(stored)
    rotated = make_store(Cipher(KEY_B, (KEY_A,)))
    assert await rotated.update("default", lambda cur: cur) == stored
    row = await fetch_row(raw, "default")
    assert row["token_envelope"]["kid"] == key_id(KEY_B) and row["version"] == 1


# -- refresh lock --------------------------------------------------------------------


async def test_lock_is_mutually_exclusive_across_stores(make_store: StoreFactory) -> None:
    first, second = make_store(), make_store()
    events: list[str] = []
    first_in, release_first = asyncio.Event(), asyncio.Event()
    second_in = asyncio.Event()

    async def hold() -> None:
        async with first.lock("default"):
            events.append("first acquired")
            first_in.set()
            await release_first.wait()
            events.append("first releasing")

    async def wait_turn() -> None:
        await first_in.wait()
        async with second.lock("default"):
            events.append("second acquired")
            second_in.set()

    tasks = [asyncio.create_task(hold()), asyncio.create_task(wait_turn())]
    await first_in.wait()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(second_in.wait(), 0.5)
    release_first.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert events == ["first acquired", "first releasing", "second acquired"]


async def test_locks_of_different_accounts_do_not_block(make_store: StoreFactory) -> None:
    store = make_store()
    async with store.lock("default"):
        async with asyncio.timeout(5):
            async with make_store().lock("work"):
                pass


async def test_store_is_usable_while_holding_its_lock(make_store: StoreFactory) -> None:
    # The refresh flow loads and saves under the lock: that must not starve the pool.
    store = make_store()
    async with asyncio.timeout(15):
        async with store.lock("a"), store.lock("b"), store.lock("c"):
            await store.save(record("a"))
            assert await store.load("a") is not None


async def test_lock_times_out_with_a_clear_error(make_store: StoreFactory) -> None:
    holder, waiter = make_store(), make_store(lock_timeout=0.3)
    async with holder.lock("default"):
        started = time.monotonic()
        with pytest.raises(TokenStoreError, match="refresh lock on 'default'"):
            async with waiter.lock("default"):
                pass
        assert time.monotonic() - started < 5
    async with waiter.lock("default"):  # free again once the holder leaves
        pass


async def test_lock_is_released_when_its_connection_dies(
    make_store: StoreFactory, raw: psycopg.AsyncConnection[Any], schema: str
) -> None:
    holder, other = make_store(), make_store()
    held, finish = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with holder.lock("default"):
            held.set()
            await finish.wait()

    task = asyncio.create_task(hold())
    await held.wait()
    pid = await lock_holder_pid(raw, schema, "default")
    assert pid is not None
    await raw.execute("SELECT pg_terminate_backend(%s)", (pid,))

    async with asyncio.timeout(10):
        async with other.lock("default"):
            pass
    # Leaving a lock whose session is gone is not an error, and the store recovers.
    finish.set()
    await asyncio.wait_for(task, 10)
    await holder.save(record())
    assert await holder.load("default") is not None


async def test_lock_is_released_on_exit_even_after_an_error(
    make_store: StoreFactory, raw: psycopg.AsyncConnection[Any], schema: str
) -> None:
    store = make_store()
    with pytest.raises(RuntimeError):
        async with store.lock("default"):
            raise RuntimeError("refresh failed")
    assert await lock_holder_pid(raw, schema, "default") is None


# -- schema and connectivity ---------------------------------------------------------


async def test_tables_created_idempotently_by_concurrent_stores(
    make_store: StoreFactory, raw: psycopg.AsyncConnection[Any]
) -> None:
    stores = [make_store() for _ in range(4)]
    await asyncio.gather(*(s.save(record(f"acct-{i}")) for i, s in enumerate(stores)))
    assert await stores[0].accounts() == [f"acct-{i}" for i in range(4)]

    cur = await raw.execute(
        "SELECT count(*) FROM pg_class WHERE relname = ANY(%s) AND relkind = 'r'"
        " AND relnamespace = to_regnamespace(current_schema())",
        ([TOKENS_TABLE, PENDING_TABLE],),
    )
    assert (await cur.fetchone()) == (2,)
    await make_store().accounts()  # and again, once they exist


async def test_unreachable_server_is_a_token_store_error_without_password(make_store: StoreFactory) -> None:
    port = free_port()
    store = make_store(dsn=f"postgresql://alice:hunter2-secret@127.0.0.1:{port}/tokens", connect_timeout=1)
    with pytest.raises(TokenStoreError, match=rf"cannot reach PostgreSQL at 127\.0\.0\.1:{port}/tokens: ") as info:
        await store.load("default")
    assert "hunter2" not in str(info.value)
    with pytest.raises(TokenStoreError, match="cannot reach PostgreSQL"):
        async with store.lock("default"):
            pass


async def test_recovers_when_idle_connections_are_killed(
    make_store: StoreFactory, raw: psycopg.AsyncConnection[Any], schema: str
) -> None:
    store = make_store()
    await store.save(record())
    await raw.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = %s"
        " AND pid <> pg_backend_pid()",
        (schema,),
    )
    assert await store.load("default") is not None


async def test_next_call_works_after_the_server_comes_back(
    make_store: StoreFactory, pg_dsn: str, schema: str
) -> None:
    params = conninfo_to_dict(pg_dsn)
    proxy = TcpProxy(str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432), free_port())
    await proxy.start()
    dsn = with_query(at_port(pg_dsn, proxy.port), schema=schema)
    store = make_store(dsn=dsn, connect_timeout=1, outage_backoff=0.2)
    try:
        await store.save(record())

        await proxy.stop()
        with pytest.raises(TokenStoreError, match="cannot reach PostgreSQL"):
            await store.load("default")

        await proxy.start()
        await asyncio.sleep(0.3)  # past the outage back-off
        loaded = await store.load("default")
        assert loaded is not None and loaded.tokens.access == ACCESS
    finally:
        await store.close()
        await proxy.stop()


async def test_close_then_reuse(make_store: StoreFactory) -> None:
    store = make_store()
    await store.save(record())
    await store.close()
    assert await store.load("default") is not None  # reopens lazily, like the file store never closed


# -- outages, encodings, noise -------------------------------------------------------


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung server): the kernel
    completes the handshakes into the listen backlog, and nobody ever reads."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize("server", ["silent", "closed"])
async def test_concurrent_callers_during_an_outage_share_one_attempt(make_store: StoreFactory, server: str) -> None:
    # Each caller used to wait its turn for a full connect_timeout (and a probe): N callers, N x the wait.
    with contextlib.ExitStack() as stack:
        port = stack.enter_context(silent_server()) if server == "silent" else free_port()
        store = make_store(dsn=f"postgresql://u:pw@127.0.0.1:{port}/tokens", connect_timeout=1, outage_backoff=5)
        started = time.monotonic()
        results = await asyncio.gather(*(store.load(f"acct-{i}") for i in range(4)), return_exceptions=True)
        elapsed = time.monotonic() - started
        assert all(isinstance(r, TokenStoreError) for r in results), results
        messages = {str(r) for r in results}
        assert len(messages) == 1 and next(iter(messages)).startswith(f"cannot reach PostgreSQL at 127.0.0.1:{port}/tokens: ")
        assert elapsed < 1.9, f"4 callers took {elapsed:.1f}s with connect_timeout=1"

        # Within the back-off window the next call does not even try.
        started = time.monotonic()
        with pytest.raises(TokenStoreError) as info:
            async with store.lock("default"):
                pass
        assert str(info.value) in messages and time.monotonic() - started < 0.2


async def test_missing_database_is_one_clear_line(
    make_store: StoreFactory, pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"lco_missing_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(pg_dsn)
    store = make_store(dsn=urlunsplit(parts._replace(path=f"/{name}")), connect_timeout=2)
    with caplog.at_level(logging.DEBUG, logger="psycopg"), pytest.raises(TokenStoreError) as info:
        await store.accounts()
    assert str(info.value) == f'cannot reach PostgreSQL at {parts.hostname}:{parts.port or 5432}/{name}: database "{name}" does not exist'
    # psycopg_pool's own retry warnings used to come first, several times.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_pool_reconnect_warnings_stay_out_of_the_log(
    make_store: StoreFactory, pg_dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    params = conninfo_to_dict(pg_dsn)
    proxy = TcpProxy(str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432), free_port())
    await proxy.start()
    store = make_store(dsn=with_query(at_port(pg_dsn, proxy.port), schema=schema), connect_timeout=1)
    try:
        await store.accounts()
        with caplog.at_level(logging.INFO, logger="psycopg.pool"):
            await proxy.stop()
            with pytest.raises(TokenStoreError, match="cannot reach PostgreSQL"):
                await store.load("default")
            await asyncio.sleep(0.5)  # the old pool's background reconnects, if any were left
        pool_warnings = [r.getMessage() for r in caplog.records if r.name == "psycopg.pool" and r.levelno >= logging.WARNING]
        assert not [m for m in pool_warnings if "litellm-claude-oauth" in m]
    finally:
        await store.close()
        await proxy.stop()


async def test_sql_ascii_database_gives_back_text(pg_dsn: str) -> None:
    # `status` crashed on such a database: text columns came back as bytes.
    name = f"lco_sqlascii_{uuid.uuid4().hex[:8]}"
    admin = urlunsplit(urlsplit(pg_dsn)._replace(path="/postgres"))
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("CREATE DATABASE {} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0").format(
                sql.Identifier(name)
            )
        )
    store = PostgresTokenStore(urlunsplit(urlsplit(pg_dsn)._replace(path=f"/{name}")), Cipher(KEY_A))
    try:
        await store.save(record("ada"))
        await store.put_pending(pending("state-1", "ada"))
        assert await store.accounts() == ["ada"]
        loaded = await store.load("ada")
        assert loaded is not None and loaded.account == "ada" and loaded.tokens.account_email == "ada@example.com"
        assert [p.state for p in await store.pending_for("ada")] == ["state-1"]
    finally:
        await store.close()
        async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
            await conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


async def test_concurrent_callers_when_the_server_goes_away_get_one_answer(
    make_store: StoreFactory, pg_dsn: str, schema: str
) -> None:
    params = conninfo_to_dict(pg_dsn)
    proxy = TcpProxy(str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432), free_port())
    await proxy.start()
    store = make_store(dsn=with_query(at_port(pg_dsn, proxy.port), schema=schema), connect_timeout=1, outage_backoff=5)
    try:
        await store.save(record())
        await proxy.stop()
        started = time.monotonic()
        results = await asyncio.gather(*(store.load("default") for _ in range(6)), return_exceptions=True)
        elapsed = time.monotonic() - started
        assert all(isinstance(r, TokenStoreError) for r in results), results
        messages = {str(r) for r in results}
        assert len(messages) == 1, messages
        assert next(iter(messages)).startswith(f"cannot reach PostgreSQL at 127.0.0.1:{proxy.port}/")
        assert elapsed < 3.5, f"6 callers took {elapsed:.1f}s with connect_timeout=1"
    finally:
        await store.close()
        await proxy.stop()


async def test_a_caller_waiting_on_a_pool_that_is_dropped_gets_a_clear_error(
    make_store: StoreFactory, raw: psycopg.AsyncConnection[Any]
) -> None:
    store = make_store(connect_timeout=5)
    await store.save(record())
    async with contextlib.AsyncExitStack() as stack:
        for account in ("a", "b", "c"):  # three pooled connections pinned by refresh locks
            await stack.enter_async_context(store.lock(account))
        async with raw.transaction():
            await raw.execute(sql.SQL("SELECT 1 FROM {} WHERE account_id = 'default' FOR UPDATE").format(
                sql.Identifier(TOKENS_TABLE)))
            blocked = asyncio.create_task(store.update("default", lambda cur: cur))  # the fourth, waiting on the row
            await asyncio.sleep(0.3)
            waiting = asyncio.create_task(store.load("default"))  # no connection left: queued in the pool
            await asyncio.sleep(0.3)
            await store._drop_pool(None)  # what a caller whose wait timed out does
            with pytest.raises(TokenStoreError, match=r"^cannot reach PostgreSQL at .*: the connection pool was reset; try again$"):
                await asyncio.wait_for(waiting, 5)
        with contextlib.suppress(Exception):
            await blocked
    assert await store.load("default") is not None  # and the next call just works
