"""PostgreSQL token store: for several proxy replicas sharing one set of logins.

Two tables, created on first use (nothing else in the database is touched)::

    "LiteLLM_ClaudeOAuthTokens"  account_id PK, token_envelope JSONB (ciphertext),
                                 plain metadata (expires_at, account_email,
                                 organization_name, needs_relogin), created_at,
                                 updated_at, version (bumped by every write)
    "LiteLLM_ClaudeOAuthPending" state PK, account_id, envelope JSONB, created_at

Only the envelope holds secrets; the metadata columns are deliberately readable so an
admin's ``SELECT *`` shows who is logged in and until when. Envelopes are sealed with
the same associated data as the file store, so an envelope moved between rows (or
between backends) for another account does not decrypt.

Every read-modify-write is :meth:`PostgresTokenStore.update`: one transaction with the
row locked, so a cooldown written by one worker cannot put back a refresh token another
worker has just rotated.

The refresh lock is a session-level advisory lock held on a connection checked out of
the pool for the lock's lifetime: if the process dies, Postgres drops the session and
with it the lock. That needs a real session, so a pgbouncer in transaction-pooling
mode in front of the database would break it.

psycopg is imported when a store is built, not with this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..crypto import Cipher
from ..errors import TokenStoreError
from ..locks import DEFAULT_REFRESH_BOUND, lock_wait
from ..tokens import PendingLogin
from ._dsn import connect_kwargs, conninfo, describe, libpq_dsn, one_line_reason
from .base import AccountRecord, Change
from .sealed import Kind, Sealer

if TYPE_CHECKING:
    import psycopg
    from psycopg import AsyncConnection, sql
    from psycopg.rows import TupleRow
    from psycopg_pool import AsyncConnectionPool

    Conn = AsyncConnection[TupleRow]
    Pool = AsyncConnectionPool[Conn]

log = logging.getLogger(__name__)

TOKENS_TABLE = "LiteLLM_ClaudeOAuthTokens"
PENDING_TABLE = "LiteLLM_ClaudeOAuthPending"
# Advisory locks use the two-key form under class ids of our own, so they never meet
# another application's single-key locks in the same database (Prisma migrate's, say).
REFRESH_LOCK_CLASS = 0x436C4F41  # "ClOA"
WRITE_LOCK_CLASS = 0x436C4F42  # serialises creating an account's row (no row yet to lock)
SCHEMA_LOCK_CLASS = 0x436C4F43
POOL_NAME = "litellm-claude-oauth"
POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 4


@dataclass
class _LoopState:
    """What is bound to one event loop: a pool cannot outlive the loop it runs on."""

    loop: asyncio.AbstractEventLoop
    pool: Pool | None = None
    open_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Every held refresh lock pins a connection; capping holders below the pool size
    # keeps one connection free for the load/save the holder is about to do.
    lock_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(POOL_MAX_SIZE - 1))


@dataclass(frozen=True)
class _Outage:
    message: str
    until: float  # time.monotonic()


class _Queries:
    """Every statement the store runs, composed once with the (schema-qualified) table names."""

    def __init__(self, schema: str | None):
        from psycopg import sql

        def table(name: str) -> sql.Identifier:
            return sql.Identifier(schema, name) if schema else sql.Identifier(name)

        self.tokens, self.pending = table(TOKENS_TABLE), table(PENDING_TABLE)
        t, p = self.tokens, self.pending
        q = sql.SQL
        self.select = q("SELECT token_envelope, version FROM {} WHERE account_id = %s").format(t)
        self.select_for_update = q("SELECT token_envelope, version FROM {} WHERE account_id = %s FOR UPDATE").format(t)
        self.upsert = q(
            "INSERT INTO {} AS t (account_id, token_envelope, expires_at, account_email,"
            " organization_name, needs_relogin)"
            " VALUES (%s, %s, to_timestamp(%s), %s, %s, %s)"
            " ON CONFLICT (account_id) DO UPDATE SET"
            " token_envelope = EXCLUDED.token_envelope, expires_at = EXCLUDED.expires_at,"
            " account_email = EXCLUDED.account_email, organization_name = EXCLUDED.organization_name,"
            " needs_relogin = EXCLUDED.needs_relogin, version = t.version + 1, updated_at = now()"
        ).format(t)
        # Re-sealing does not change the content, so it does not bump the version; the
        # version condition leaves a row alone that someone rewrote since it was read.
        self.reseal = q("UPDATE {} SET token_envelope = %s WHERE account_id = %s AND version = %s").format(t)
        self.delete = q("DELETE FROM {} WHERE account_id = %s").format(t)
        self.accounts = q("SELECT account_id FROM {}").format(t)
        self.put_pending = q(
            "INSERT INTO {} (state, account_id, envelope, created_at) VALUES (%s, %s, %s, to_timestamp(%s))"
            " ON CONFLICT (state) DO UPDATE SET account_id = EXCLUDED.account_id,"
            " envelope = EXCLUDED.envelope, created_at = EXCLUDED.created_at"
        ).format(p)
        # DELETE ... RETURNING is the single-use guarantee: of two concurrent takes
        # exactly one gets the row.
        self.take_pending = q("DELETE FROM {} WHERE state = %s RETURNING envelope").format(p)
        self.pending_for = q("SELECT state, envelope FROM {} WHERE account_id = %s").format(p)
        # Uses the plaintext created_at column, so logins sealed under a lost key go too.
        self.prune_pending = q("DELETE FROM {} WHERE created_at < to_timestamp(%s)").format(p)
        self.create_tokens = q(
            "CREATE TABLE IF NOT EXISTS {} ("
            " account_id TEXT PRIMARY KEY,"
            " token_envelope JSONB NOT NULL,"
            " expires_at TIMESTAMPTZ,"
            " account_email TEXT,"
            " organization_name TEXT,"
            " needs_relogin BOOLEAN NOT NULL DEFAULT false,"
            " created_at TIMESTAMPTZ NOT NULL DEFAULT now(),"
            " updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),"
            " version BIGINT NOT NULL DEFAULT 1)"
        ).format(t)
        self.create_pending = q(
            "CREATE TABLE IF NOT EXISTS {} ("
            " state TEXT PRIMARY KEY,"
            " account_id TEXT NOT NULL,"
            " envelope JSONB NOT NULL,"
            " created_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        ).format(p)


class PostgresTokenStore:
    def __init__(
        self,
        dsn: str,
        cipher: Cipher,
        *,
        lock_timeout: float = lock_wait(DEFAULT_REFRESH_BOUND),
        connect_timeout: float = 10.0,
        outage_backoff: float = 3.0,
    ):
        """``lock_timeout``: how long a refresh lock is waited for; ``locks.lock_wait`` of the
        settings' refresh bound, so a waiter outlasts a slow refresh that still succeeds.
        ``outage_backoff``: after the server could not be reached, calls within this many
        seconds fail at once with the same message instead of each waiting ``connect_timeout``."""
        self.sealer = Sealer(cipher)
        self.lock_timeout = lock_timeout
        self.connect_timeout = connect_timeout
        self.outage_backoff = outage_backoff
        self._dsn, schema, pgbouncer = libpq_dsn(dsn)
        params = conninfo(self._dsn)
        self._kwargs = connect_kwargs(params, connect_timeout=connect_timeout, pgbouncer=pgbouncer)
        self._password = params.get("password") or None
        self._where = describe(params)
        self._q = _Queries(schema)
        self._table_label = f"{schema}.{TOKENS_TABLE}" if schema else TOKENS_TABLE
        # Lock keys carry the schema, so deployments in different schemas of one
        # database do not wait on each other's locks.
        self._lock_scope = f"{schema}/" if schema else ""
        self._state: _LoopState | None = None
        self._schema_ready = False
        self._outage: _Outage | None = None

    @property
    def location(self) -> str:
        return f'postgres://{self._where} (table "{self._table_label}")'

    @property
    def encrypted(self) -> bool:
        return self.sealer.encrypted

    # -- accounts --------------------------------------------------------------------

    async def load(self, account: str) -> AccountRecord | None:
        async with self._connection() as conn:
            row = await _one(conn, self._q.select, (account,))
            if row is None:
                return None
            envelope, version = row
            record = self.sealer.open_account(account, envelope)
            if self.sealer.needs_reseal(envelope):
                # Lazy key rotation: the first read under a new key re-seals the record,
                # only if the row is still at the version read (a write in between wins).
                await conn.execute(self._q.reseal, (self._seal(record), account, version))
            return record

    async def update(self, account: str, change: Change) -> AccountRecord | None:
        """Atomic read-modify-write of one account's record; returns what is stored afterwards.

        One transaction with the row locked (``SELECT … FOR UPDATE``); while the account
        has no row, writers take turns on a transaction-scoped advisory lock instead, so
        two creations cannot race. ``change(current)`` returning ``current`` itself writes
        nothing, returning None deletes the row; if it raises, nothing is written.
        """
        async with self._connection() as conn, conn.transaction():
            row = await _one(conn, self._q.select_for_update, (account,))
            if row is None:
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (WRITE_LOCK_CLASS, self._lock_key(account))
                )
                # Whoever held it may have just created the row.
                row = await _one(conn, self._q.select_for_update, (account,))
            current = None if row is None else self.sealer.open_account(account, row[0])
            new = change(current)
            if new is current:
                if row is not None and self.sealer.needs_reseal(row[0]):
                    await conn.execute(self._q.reseal, (self._seal(current), account, row[1]))  # type: ignore[arg-type]
                return current
            if new is None:
                await conn.execute(self._q.delete, (account,))
                return None
            if new.account != account:
                raise ValueError(f"an update of '{account}' returned a record for '{new.account}'")
            await conn.execute(self._q.upsert, self._row_values(new))
            return new

    async def save(self, record: AccountRecord) -> None:
        """Unconditional write (tests, tools): it does not need to decrypt what it replaces."""
        async with self._connection() as conn:
            await conn.execute(self._q.upsert, self._row_values(record))

    async def delete(self, account: str) -> bool:
        async with self._connection() as conn:
            cur = await conn.execute(self._q.delete, (account,))
            return cur.rowcount > 0

    async def accounts(self) -> list[str]:
        async with self._connection() as conn:
            cur = await conn.execute(self._q.accounts)
            rows = await cur.fetchall()
        # Sorted here, not by ORDER BY, so the order matches the file store's whatever the collation.
        return sorted(row[0] for row in rows)

    # -- pending logins --------------------------------------------------------------

    async def put_pending(self, pending: PendingLogin) -> None:
        from psycopg.types.json import Jsonb

        envelope = self.sealer.seal_pending(pending)
        async with self._connection() as conn:
            await conn.execute(
                self._q.put_pending, (pending.state, pending.account, Jsonb(envelope), pending.created_at)
            )

    async def take_pending(self, state: str) -> PendingLogin | None:
        async with self._connection() as conn:
            row = await _one(conn, self._q.take_pending, (state,))
        if row is None:
            return None
        return self.sealer.open_pending(state, row[0])

    async def pending_for(self, account: str) -> list[PendingLogin]:
        async with self._connection() as conn:
            cur = await conn.execute(self._q.pending_for, (account,))
            rows = await cur.fetchall()
        # The account_id column is a plaintext index; the sealed payload is what counts.
        return self.sealer.pending_of(rows, account)

    async def prune_pending(self, older_than: float) -> int:
        """Drop pending logins started before ``older_than`` (unix seconds)."""
        async with self._connection() as conn:
            cur = await conn.execute(self._q.prune_pending, (float(older_than),))
            return cur.rowcount

    # -- refresh lock ----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lock(self, account: str) -> AsyncIterator[None]:
        deadline = time.monotonic() + self.lock_timeout
        slots = self._loop_state().lock_slots
        await self._take_slot(slots, account, deadline)
        try:
            pool, conn = await self._acquire_advisory(account, deadline)
            try:
                yield
            finally:
                await self._release_advisory(pool, conn, account)
        finally:
            slots.release()

    async def _take_slot(self, slots: asyncio.Semaphore, account: str, deadline: float) -> None:
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0)):
                await slots.acquire()
        except TimeoutError:
            raise self._lock_timeout_error(account) from None

    async def _acquire_advisory(self, account: str, deadline: float) -> tuple[Pool, Conn]:
        import psycopg

        # pg_try_advisory_lock in a loop, rather than a blocking pg_advisory_lock, so a
        # waiter gives its connection back between attempts and the timeout is ours.
        delay = 0.02
        while True:
            pool, conn = await self._checkout()
            try:
                got = await _scalar(
                    conn, "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (REFRESH_LOCK_CLASS, self._lock_key(account))
                )
            except BaseException as exc:
                # We cannot tell whether the lock was granted: ending the session settles it.
                await _discard(pool, conn)
                if isinstance(exc, psycopg.Error):
                    raise self._store_error(exc) from None
                raise
            if got:
                return pool, conn
            await pool.putconn(conn)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._lock_timeout_error(account)
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.25)

    async def _release_advisory(self, pool: Pool, conn: Conn, account: str) -> None:
        import psycopg

        try:
            released = await _scalar(
                conn, "SELECT pg_advisory_unlock(%s, hashtext(%s))", (REFRESH_LOCK_CLASS, self._lock_key(account))
            )
        except BaseException as exc:
            # A session lock left on a pooled connection would be held forever; closing
            # the session is what guarantees Postgres lets go of it.
            await _discard(pool, conn)
            if not isinstance(exc, psycopg.Error):
                raise
            # Usually the connection died while the lock was held, which already freed it.
            log.warning("refresh lock for '%s' was lost with its connection: %s", account, self._reason(exc))
            return
        if not released:
            log.warning("refresh lock for '%s' was no longer held when released", account)
        await pool.putconn(conn)

    def _lock_key(self, account: str) -> str:
        return self._lock_scope + account

    def _lock_timeout_error(self, account: str) -> TokenStoreError:
        return TokenStoreError(
            f"timed out after {self.lock_timeout:g}s waiting for the refresh lock on '{account}' "
            f"in PostgreSQL at {self._where}: another worker is holding it"
        )

    # -- key rotation and lifecycle --------------------------------------------------

    async def rotate_keys(self) -> int:
        async with self._connection() as conn:
            # One transaction, like the file store's single rewrite: a record that cannot
            # be opened aborts the whole rotation rather than leaving it half done.
            async with conn.transaction():
                count = await self._reseal_all(conn, self._q.tokens, "account_id", "token_envelope", "account")
                count += await self._reseal_all(conn, self._q.pending, "state", "envelope", "pending")
            return count

    async def close(self) -> None:
        state, self._state = self._state, None
        if state is not None and state.pool is not None:
            await state.pool.close()

    # -- internals -------------------------------------------------------------------

    def _seal(self, record: AccountRecord) -> Any:
        from psycopg.types.json import Jsonb

        return Jsonb(self.sealer.seal_account(record))

    def _row_values(self, record: AccountRecord) -> tuple[str, Any, float, str | None, str | None, bool]:
        tokens = record.tokens
        return (
            record.account,
            self._seal(record),
            tokens.expires_at,
            tokens.account_email,
            tokens.organization_name,
            record.relogin_reason is not None,
        )

    async def _reseal_all(
        self, conn: Conn, table: sql.Identifier, key_col: str, env_col: str, kind: Kind
    ) -> int:
        from psycopg import sql
        from psycopg.types.json import Jsonb

        key, env = sql.Identifier(key_col), sql.Identifier(env_col)
        cur = await conn.execute(sql.SQL("SELECT {}, {} FROM {} FOR UPDATE").format(key, env, table))
        updates = [
            (Jsonb(self.sealer.reseal(kind, k, envelope)), k)
            for k, envelope in await cur.fetchall()
            if self.sealer.needs_reseal(envelope)
        ]
        if updates:
            async with conn.cursor() as wcur:
                await wcur.executemany(
                    sql.SQL("UPDATE {} SET {} = %s WHERE {} = %s").format(table, env, key), updates
                )
        return len(updates)

    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        if self._state is None or self._state.loop is not loop:
            # A CLI may run each command under its own asyncio.run(): the previous
            # loop's pool died with that loop, so start afresh.
            self._state = _LoopState(loop)
        return self._state

    async def _ready(self) -> Pool:
        state = self._loop_state()
        if state.pool is not None:
            return state.pool
        self._raise_during_outage()
        async with state.open_lock:
            if state.pool is not None:
                return state.pool
            # Callers that queued behind a failed attempt fail now, with its message.
            self._raise_during_outage()
            # One direct connection first: it fails at once (refused, unknown database,
            # bad password) where a pool would retry, and log each retry, until its
            # timeout; and it creates the tables before any pooled connection exists.
            conn = await self._connect_or_fail()
            try:
                if not self._schema_ready:
                    await self._create_tables(conn)
                    self._schema_ready = True
            finally:
                await conn.close()
            state.pool = await self._open_pool()
            return state.pool

    def _raise_during_outage(self) -> None:
        outage = self._outage
        if outage is not None and time.monotonic() < outage.until:
            raise TokenStoreError(outage.message)

    async def _connect_or_fail(self) -> Conn:
        import psycopg

        try:
            async with asyncio.timeout(self.connect_timeout):
                conn = await psycopg.AsyncConnection.connect(self._dsn, **self._kwargs)
        except psycopg.Error as exc:
            reason = self._reason(exc)
        except TimeoutError:
            reason = f"no answer within {self.connect_timeout:g}s"
        else:
            self._outage = None
            return conn
        message = f"cannot reach PostgreSQL at {self._where}: {reason}"
        self._outage = _Outage(message, time.monotonic() + self.outage_backoff)
        raise TokenStoreError(message)

    async def _open_pool(self) -> Pool:
        from psycopg_pool import AsyncConnectionPool

        _quiet_pool_logger()
        pool: Pool = AsyncConnectionPool(
            self._dsn,
            min_size=POOL_MIN_SIZE,
            max_size=POOL_MAX_SIZE,
            open=False,
            kwargs=self._kwargs,
            # A connection that died while idle (server restart, failover) is replaced
            # on checkout instead of failing the caller's query.
            check=AsyncConnectionPool.check_connection,
            timeout=self.connect_timeout,
            name=POOL_NAME,
        )
        # The server answered a moment ago: the first checkout waits for the pool's
        # first connection rather than this call.
        await pool.open(wait=False)
        return pool

    async def _create_tables(self, conn: Conn) -> None:
        if await self._tables_exist(conn):
            return  # also spares a role without CREATE privilege a needless CREATE
        # Concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalogue
        # (duplicate pg_type row), so workers starting together take turns.
        async with self._translate_errors(), conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (SCHEMA_LOCK_CLASS, self._table_label))
            await conn.execute(self._q.create_tokens)
            await conn.execute(self._q.create_pending)

    async def _tables_exist(self, conn: Conn) -> bool:
        names = [self._q.tokens.as_string(conn), self._q.pending.as_string(conn)]
        async with self._translate_errors():
            row = await _one(conn, "SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL", names)
        return bool(row and row[0])

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        async with self._translate_errors():
            pool = await self._ready()
        async with self._translate_errors(pool), pool.connection() as conn:
            yield conn

    async def _checkout(self) -> tuple[Pool, Conn]:
        """A connection outside ``pool.connection()``, for the refresh lock which outlives a block."""
        async with self._translate_errors():
            pool = await self._ready()
        async with self._translate_errors(pool):
            return pool, await pool.getconn()

    @contextlib.asynccontextmanager
    async def _translate_errors(self, pool: Pool | None = None) -> AsyncIterator[None]:
        """psycopg errors become one-line TokenStoreErrors; DecryptionError passes untouched."""
        import psycopg
        from psycopg_pool import PoolClosed, PoolTimeout

        try:
            yield
        except PoolTimeout as exc:
            raise await self._pool_timeout_error(pool, exc) from None
        except PoolClosed:
            # Another caller gave up on this pool while we waited for it: share its verdict.
            raise await self._pool_closed_error() from None
        except psycopg.Error as exc:
            raise self._store_error(exc) from None

    async def _pool_timeout_error(self, pool: Pool | None, exc: Exception) -> TokenStoreError:
        # The pool backs off between reconnection attempts, so after an outage it can
        # still be sleeping when the server is back: a fresh pool makes the next call
        # connect straight away.
        await self._drop_pool(pool)
        # The pool only says it timed out. Opening a new one tells a server that is
        # down (one probe, its answer shared by every caller) from one merely busy.
        try:
            await self._ready()
        except TokenStoreError as down:
            return down
        return TokenStoreError(
            f"cannot reach PostgreSQL at {self._where}: no pooled connection became free within "
            f"{self.connect_timeout:g}s ({self._reason(exc)})"
        )

    async def _pool_closed_error(self) -> TokenStoreError:
        try:
            await self._ready()
        except TokenStoreError as down:
            return down
        return TokenStoreError(f"cannot reach PostgreSQL at {self._where}: the connection pool was reset; try again")

    async def _drop_pool(self, pool: Pool | None) -> None:
        state = self._state
        if pool is None and state is not None:
            pool = state.pool
        if state is not None and state.pool is pool:
            state.pool = None
        if pool is not None:
            await pool.close(timeout=1.0)

    def _store_error(self, exc: psycopg.Error) -> TokenStoreError:
        import psycopg

        if isinstance(exc, psycopg.OperationalError):
            return TokenStoreError(f"cannot reach PostgreSQL at {self._where}: {self._reason(exc)}")
        return TokenStoreError(f"PostgreSQL at {self._where} refused a token store query: {self._reason(exc)}")

    def _reason(self, exc: BaseException) -> str:
        return one_line_reason(exc, self._password)


async def _one(conn: Conn, query: Any, params: Iterable[Any]) -> TupleRow | None:
    cur = await conn.execute(query, tuple(params))
    return await cur.fetchone()


async def _scalar(conn: Conn, query: str, params: tuple[Any, ...]) -> Any:
    row = await _one(conn, query, params)
    return None if row is None else row[0]


async def _discard(pool: Pool, conn: Conn) -> None:
    with contextlib.suppress(Exception):
        await conn.close()
    # A closed connection handed back is dropped and replaced by the pool.
    with contextlib.suppress(Exception):
        await pool.putconn(conn)


class _OurPoolsConnectErrors(logging.Filter):
    """psycopg_pool logs a warning for every failed (re)connection of our pool, before our
    own one-line error and again for each retry: keep them for DEBUG on our logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args and args[0] == POOL_NAME and record.levelno >= logging.WARNING:
            log.debug("connection pool: %s", record.getMessage())
            return False
        return True


_POOL_FILTER = _OurPoolsConnectErrors()


def _quiet_pool_logger() -> None:
    pool_log = logging.getLogger("psycopg.pool")
    if _POOL_FILTER not in pool_log.filters:
        pool_log.addFilter(_POOL_FILTER)
