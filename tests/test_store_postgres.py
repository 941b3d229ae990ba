"""PostgresTokenStore against a real PostgreSQL.

Set CLAUDE_OAUTH_TEST_DATABASE_URL to point elsewhere, or CLAUDE_OAUTH_SKIP_PG=1 to
skip; without the latter a missing server fails the run on purpose.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import SecretStr

from litellm_claude_oauth.crypto import Cipher, key_id
from litellm_claude_oauth.errors import DecryptionError, TokenStoreError
from litellm_claude_oauth.store.base import AccountRecord, TokenStore
from litellm_claude_oauth.store.postgres import LOCK_PREFIX, PENDING_TABLE, TOKENS_TABLE, PostgresTokenStore
from litellm_claude_oauth.tokens import PendingLogin, TokenSet

from .backends import OUR_TABLES, drop_our_tables
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


@pytest.fixture
def clean_db(pg_dsn: str) -> str:
    assert set(OUR_TABLES) == {TOKENS_TABLE, PENDING_TABLE}
    drop_our_tables(pg_dsn)
    return pg_dsn


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
async def raw(clean_db: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A plain connection for looking behind the store's back."""
    conn = await psycopg.AsyncConnection.connect(clean_db, autocommit=True)
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


async def lock_holder_pid(raw: psycopg.AsyncConnection[Any], account: str) -> int | None:
    # A bigint advisory key is shown split across classid (high half) and objid (low half).
    cur = await raw.execute(
        "SELECT l.pid FROM pg_locks l, (SELECT hashtext(%s)::bigint AS k) key"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND l.classid::bigint = ((key.k >> 32) & 4294967295) AND l.objid::bigint = (key.k & 4294967295)",
        (LOCK_PREFIX + account,),
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
    assert row["expires_at"] == datetime.fromtimestamp(1_900_000_000.5, tz=timezone.utc)
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


async def test_prisma_style_database_url_is_accepted(make_store: StoreFactory, clean_db: str) -> None:
    # LiteLLM's own DATABASE_URL often carries Prisma-only parameters libpq would reject.
    store = make_store(dsn=f"{clean_db}?schema=public&connection_limit=5")
    assert store.location.endswith('(table "public.LiteLLM_ClaudeOAuthTokens")')
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

    found = await rotated.load_with_version("default")
    assert found is not None
    loaded, version = found
    assert loaded.tokens.access == ACCESS
    row = await fetch_row(raw, "default")
    assert row["token_envelope"]["kid"] == key_id(KEY_B)
    # Re-sealing does not change the content, so it must not invalidate a held version.
    assert row["version"] == version == 1

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


# -- optimistic concurrency ----------------------------------------------------------


async def test_save_if_version_detects_conflicts(make_store: StoreFactory) -> None:
    a, b = make_store(), make_store()
    assert await a.save_if_version(record(), 0) is True
    assert await b.save_if_version(record(), 0) is False  # 0 means "create only"

    found_a = await a.load_with_version("default")
    found_b = await b.load_with_version("default")
    assert found_a is not None and found_b is not None and found_a[1] == found_b[1] == 1

    assert await a.save_if_version(record(access="sk-ant-oat01-from-a"), found_a[1]) is True
    assert await b.save_if_version(record(access="sk-ant-oat01-from-b"), found_b[1]) is False

    latest = await b.load_with_version("default")
    assert latest is not None
    assert latest[0].tokens.access == "sk-ant-oat01-from-a" and latest[1] == 2
    assert await b.save_if_version(record(access="sk-ant-oat01-from-b"), latest[1]) is True
    assert await a.save_if_version(record(), 99) is False


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
    make_store: StoreFactory, raw: psycopg.AsyncConnection[Any]
) -> None:
    holder, other = make_store(), make_store()
    held, finish = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with holder.lock("default"):
            held.set()
            await finish.wait()

    task = asyncio.create_task(hold())
    await held.wait()
    pid = await lock_holder_pid(raw, "default")
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
    make_store: StoreFactory, raw: psycopg.AsyncConnection[Any]
) -> None:
    store = make_store()
    with pytest.raises(RuntimeError):
        async with store.lock("default"):
            raise RuntimeError("refresh failed")
    assert await lock_holder_pid(raw, "default") is None


# -- schema and connectivity ---------------------------------------------------------


async def test_tables_created_idempotently_by_concurrent_stores(
    make_store: StoreFactory, raw: psycopg.AsyncConnection[Any]
) -> None:
    stores = [make_store() for _ in range(4)]
    await asyncio.gather(*(s.save(record(f"acct-{i}")) for i, s in enumerate(stores)))
    assert await stores[0].accounts() == [f"acct-{i}" for i in range(4)]

    cur = await raw.execute(
        "SELECT count(*) FROM pg_class WHERE relname = ANY(%s) AND relkind = 'r'", ([TOKENS_TABLE, PENDING_TABLE],)
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
    make_store: StoreFactory, raw: psycopg.AsyncConnection[Any]
) -> None:
    store = make_store()
    await store.save(record())
    await raw.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = 'litellm-claude-oauth'"
        " AND pid <> pg_backend_pid()"
    )
    assert await store.load("default") is not None


async def test_next_call_works_after_the_server_comes_back(make_store: StoreFactory, clean_db: str) -> None:
    params = conninfo_to_dict(clean_db)
    proxy = TcpProxy(str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432), free_port())
    await proxy.start()
    store = make_store(dsn=make_conninfo(clean_db, host="127.0.0.1", port=proxy.port), connect_timeout=1)
    try:
        await store.save(record())

        await proxy.stop()
        with pytest.raises(TokenStoreError, match="cannot reach PostgreSQL"):
            await store.load("default")

        await proxy.start()
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
