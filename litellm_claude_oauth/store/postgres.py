"""PostgreSQL token store: for several proxy replicas sharing one set of logins.

Two tables, created on first use (nothing else in the database is touched)::

    "LiteLLM_ClaudeOAuthTokens"  account_id PK, token_envelope JSONB (ciphertext),
                                 plain metadata (expires_at, account_email,
                                 organization_name, needs_relogin), created_at,
                                 updated_at, version (bumped by every save)
    "LiteLLM_ClaudeOAuthPending" state PK, account_id, envelope JSONB, created_at

Only the envelope holds secrets; the metadata columns are deliberately readable so an
admin's ``SELECT *`` shows who is logged in and until when. Envelopes are sealed with
the same associated data as the file store, so an envelope moved between rows (or
between backends) for another account does not decrypt.

The refresh lock is a session-level advisory lock held on a connection checked out of
the pool for the lock's lifetime: if the process dies, Postgres drops the session and
with it the lock. That needs a real session, so a pgbouncer in transaction-pooling
mode in front of the database would break it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ..crypto import Cipher
from ..errors import TokenStoreError
from ..tokens import PendingLogin
from .base import AccountRecord, aad_account, aad_pending, open_pending_for

log = logging.getLogger(__name__)

TOKENS_TABLE = "LiteLLM_ClaudeOAuthTokens"
PENDING_TABLE = "LiteLLM_ClaudeOAuthPending"
LOCK_PREFIX = "litellm-claude-oauth:"
# Account ids cannot contain '/', so this key never equals an account's lock key.
SCHEMA_LOCK_KEY = "litellm-claude-oauth/schema"
POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 4

# LiteLLM's DATABASE_URL is written for Prisma, which accepts query parameters libpq
# rejects outright ("invalid URI query parameter"); they are dropped, and `schema` is
# honoured by qualifying our table names with it.
_PRISMA_ONLY_PARAMS = frozenset(
    {"schema", "connection_limit", "pool_timeout", "pgbouncer", "socket_timeout", "statement_cache_size",
     "sslaccept", "sslidentity"}
)

# 'connection failed: connection to server at "h" (1.2.3.4), port 5432 failed: FATAL:  '
_LIBPQ_PREAMBLE = re.compile(
    r'^(?:connection failed: )?(?:connection to server (?:at|on socket) "[^"]*"(?: \([^)]*\))?'
    r'(?:, port \d+)? failed: )?(?:FATAL: +)?'
)
_BAD_QUERY_PARAM = re.compile(r'^invalid URI query parameter: "\w+"$')

Conn = AsyncConnection[TupleRow]
Pool = AsyncConnectionPool[Conn]


@dataclass
class _LoopState:
    """What is bound to one event loop: a pool cannot outlive the loop it runs on."""

    loop: asyncio.AbstractEventLoop
    pool: Pool | None = None
    open_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Every held refresh lock pins a connection; capping holders below the pool size
    # keeps one connection free for the load/save the holder is about to do.
    lock_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(POOL_MAX_SIZE - 1))


class PostgresTokenStore:
    def __init__(
        self,
        dsn: str,
        cipher: Cipher,
        *,
        lock_timeout: float = 30.0,
        connect_timeout: float = 10.0,
    ):
        self.cipher = cipher
        self.lock_timeout = lock_timeout
        self.connect_timeout = connect_timeout
        self._dsn, schema, self._pgbouncer = _libpq_dsn(dsn)
        params = _conninfo(self._dsn)
        self._password = params.get("password") or None
        self._where = _describe(params)
        self._tokens = _table(schema, TOKENS_TABLE)
        self._pending = _table(schema, PENDING_TABLE)
        self._table_label = f"{schema}.{TOKENS_TABLE}" if schema else TOKENS_TABLE
        self._app_name_set = "application_name" in params
        self._connect_timeout_set = "connect_timeout" in params
        self._state: _LoopState | None = None
        self._schema_ready = False

    @property
    def location(self) -> str:
        return f'postgres://{self._where} (table "{self._table_label}")'

    @property
    def encrypted(self) -> bool:
        return self.cipher.enabled

    # -- accounts --------------------------------------------------------------------

    async def load(self, account: str) -> AccountRecord | None:
        found = await self.load_with_version(account)
        return None if found is None else found[0]

    async def load_with_version(self, account: str) -> tuple[AccountRecord, int] | None:
        """The record and the version to hand to :meth:`save_if_version`."""
        async with self._connection() as conn:
            row = await _one(
                conn,
                sql.SQL("SELECT token_envelope, version FROM {} WHERE account_id = %s").format(self._tokens),
                (account,),
            )
            if row is None:
                return None
            envelope, version = row
            aad = aad_account(account)
            record = AccountRecord.from_storage(self.cipher.open(envelope, aad), account)
            if not self.cipher.is_current(envelope):
                await self._reseal_account(conn, account, record, version)
            return record, int(version)

    async def save(self, record: AccountRecord) -> None:
        async with self._connection() as conn:
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {} AS t (account_id, token_envelope, expires_at, account_email,"
                    " organization_name, needs_relogin)"
                    " VALUES (%s, %s, to_timestamp(%s), %s, %s, %s)"
                    " ON CONFLICT (account_id) DO UPDATE SET"
                    " token_envelope = EXCLUDED.token_envelope, expires_at = EXCLUDED.expires_at,"
                    " account_email = EXCLUDED.account_email, organization_name = EXCLUDED.organization_name,"
                    " needs_relogin = EXCLUDED.needs_relogin, version = t.version + 1, updated_at = now()"
                ).format(self._tokens),
                self._row_values(record),
            )

    async def save_if_version(self, record: AccountRecord, expected_version: int) -> bool:
        """Write only if the row is still at ``expected_version``; False when someone else won.

        ``expected_version=0`` means "only if the account has no row yet".
        """
        account, envelope, expires, email, org, relogin = self._row_values(record)
        async with self._connection() as conn:
            if expected_version == 0:
                cur = await conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (account_id, token_envelope, expires_at, account_email,"
                        " organization_name, needs_relogin)"
                        " VALUES (%s, %s, to_timestamp(%s), %s, %s, %s) ON CONFLICT (account_id) DO NOTHING"
                    ).format(self._tokens),
                    (account, envelope, expires, email, org, relogin),
                )
            else:
                cur = await conn.execute(
                    sql.SQL(
                        "UPDATE {} SET token_envelope = %s, expires_at = to_timestamp(%s), account_email = %s,"
                        " organization_name = %s, needs_relogin = %s, version = version + 1, updated_at = now()"
                        " WHERE account_id = %s AND version = %s"
                    ).format(self._tokens),
                    (envelope, expires, email, org, relogin, account, expected_version),
                )
            return cur.rowcount == 1

    async def delete(self, account: str) -> bool:
        async with self._connection() as conn:
            cur = await conn.execute(
                sql.SQL("DELETE FROM {} WHERE account_id = %s").format(self._tokens), (account,)
            )
            return cur.rowcount > 0

    async def accounts(self) -> list[str]:
        async with self._connection() as conn:
            cur = await conn.execute(sql.SQL("SELECT account_id FROM {}").format(self._tokens))
            rows = await cur.fetchall()
        # Sorted here, not by ORDER BY, so the order matches the file store's whatever the collation.
        return sorted(row[0] for row in rows)

    # -- pending logins --------------------------------------------------------------

    async def put_pending(self, pending: PendingLogin) -> None:
        envelope = self.cipher.seal(pending.to_storage(), aad_pending(pending.state))
        async with self._connection() as conn:
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {} (state, account_id, envelope, created_at) VALUES (%s, %s, %s, to_timestamp(%s))"
                    " ON CONFLICT (state) DO UPDATE SET account_id = EXCLUDED.account_id,"
                    " envelope = EXCLUDED.envelope, created_at = EXCLUDED.created_at"
                ).format(self._pending),
                (pending.state, pending.account, Jsonb(envelope), pending.created_at),
            )

    async def take_pending(self, state: str) -> PendingLogin | None:
        async with self._connection() as conn:
            # DELETE ... RETURNING is the single-use guarantee: of two concurrent takes
            # exactly one gets the row.
            row = await _one(
                conn, sql.SQL("DELETE FROM {} WHERE state = %s RETURNING envelope").format(self._pending), (state,)
            )
        if row is None:
            return None
        return PendingLogin.model_validate(self.cipher.open(row[0], aad_pending(state)))

    async def pending_for(self, account: str) -> list[PendingLogin]:
        async with self._connection() as conn:
            cur = await conn.execute(
                sql.SQL("SELECT state, envelope FROM {} WHERE account_id = %s").format(self._pending), (account,)
            )
            rows = await cur.fetchall()
        # The account_id column is a plaintext index; the sealed payload is what counts.
        return open_pending_for(self.cipher, rows, account)

    async def prune_pending(self, older_than: float) -> int:
        """Drop pending logins started before ``older_than`` (unix seconds)."""
        async with self._connection() as conn:
            # Uses the plaintext created_at column, so logins sealed under a lost key go too.
            cur = await conn.execute(
                sql.SQL("DELETE FROM {} WHERE created_at < to_timestamp(%s)").format(self._pending),
                (float(older_than),),
            )
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
        # pg_try_advisory_lock in a loop, rather than a blocking pg_advisory_lock, so a
        # waiter gives its connection back between attempts and the timeout is ours.
        delay = 0.02
        while True:
            pool, conn = await self._checkout()
            try:
                got = await _scalar(conn, "SELECT pg_try_advisory_lock(hashtext(%s))", (LOCK_PREFIX + account,))
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
        try:
            released = await _scalar(conn, "SELECT pg_advisory_unlock(hashtext(%s))", (LOCK_PREFIX + account,))
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
                count = await self._reseal_all(conn, self._tokens, "account_id", "token_envelope", aad_account)
                count += await self._reseal_all(conn, self._pending, "state", "envelope", aad_pending)
            return count

    async def close(self) -> None:
        state, self._state = self._state, None
        if state is not None and state.pool is not None:
            await state.pool.close()

    # -- internals -------------------------------------------------------------------

    def _row_values(self, record: AccountRecord) -> tuple[str, Jsonb, float, str | None, str | None, bool]:
        envelope = self.cipher.seal(record.to_storage(), aad_account(record.account))
        tokens = record.tokens
        return (
            record.account,
            Jsonb(envelope),
            tokens.expires_at,
            tokens.account_email,
            tokens.organization_name,
            record.relogin_reason is not None,
        )

    async def _reseal_account(self, conn: Conn, account: str, record: AccountRecord, version: int) -> None:
        # Lazy key rotation: the first read under a new key re-seals the record. The
        # content is unchanged, so the version is not bumped (a concurrent
        # save_if_version must not fail over it), and a row someone rewrote meanwhile is
        # left alone.
        envelope = self.cipher.seal(record.to_storage(), aad_account(account))
        await conn.execute(
            sql.SQL("UPDATE {} SET token_envelope = %s WHERE account_id = %s AND version = %s").format(self._tokens),
            (Jsonb(envelope), account, version),
        )

    async def _reseal_all(
        self, conn: Conn, table: sql.Composable, key_col: str, env_col: str, aad: Callable[[str], str]
    ) -> int:
        key, env = sql.Identifier(key_col), sql.Identifier(env_col)
        cur = await conn.execute(sql.SQL("SELECT {}, {} FROM {} FOR UPDATE").format(key, env, table))
        updates = [
            (Jsonb(self.cipher.seal(self.cipher.open(envelope, aad(k)), aad(k))), k)
            for k, envelope in await cur.fetchall()
            if not self.cipher.is_current(envelope)
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
        if state.pool is not None and self._schema_ready:
            return state.pool
        async with state.open_lock:
            if state.pool is None:
                state.pool = await self._open_pool()
            if not self._schema_ready:
                async with state.pool.connection() as conn:
                    await self._create_tables(conn)
                self._schema_ready = True
            return state.pool

    async def _open_pool(self) -> Pool:
        kwargs: dict[str, Any] = {"autocommit": True}
        if not self._app_name_set:
            kwargs["application_name"] = "litellm-claude-oauth"
        if not self._connect_timeout_set:
            kwargs["connect_timeout"] = max(2, round(self.connect_timeout))  # libpq's minimum is 2s
        if self._pgbouncer:
            kwargs["prepare_threshold"] = None  # server-side prepared statements break under pgbouncer
        pool: Pool = AsyncConnectionPool(
            self._dsn,
            min_size=POOL_MIN_SIZE,
            max_size=POOL_MAX_SIZE,
            open=False,
            kwargs=kwargs,
            # A connection that died while idle (server restart, failover) is replaced
            # on checkout instead of failing the caller's query.
            check=AsyncConnectionPool.check_connection,
            timeout=self.connect_timeout,
            name="litellm-claude-oauth",
        )
        # On timeout wait() closes the pool itself; the next call builds a new one.
        await pool.open(wait=True, timeout=self.connect_timeout)
        return pool

    async def _create_tables(self, conn: Conn) -> None:
        if await self._tables_exist(conn):
            return  # also spares a role without CREATE privilege a needless CREATE
        # Concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalogue
        # (duplicate pg_type row), so workers starting together take turns.
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (SCHEMA_LOCK_KEY,))
            await conn.execute(
                sql.SQL(
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
                ).format(self._tokens)
            )
            await conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} ("
                    " state TEXT PRIMARY KEY,"
                    " account_id TEXT NOT NULL,"
                    " envelope JSONB NOT NULL,"
                    " created_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                ).format(self._pending)
            )

    async def _tables_exist(self, conn: Conn) -> bool:
        names = [self._tokens.as_string(conn), self._pending.as_string(conn)]
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
        try:
            yield
        except PoolTimeout as exc:
            await self._drop_pool(pool)
            raise TokenStoreError(await self._unreachable_message(exc)) from None
        except psycopg.Error as exc:
            raise self._store_error(exc) from None

    async def _drop_pool(self, pool: Pool | None) -> None:
        # The pool backs off between reconnection attempts, so after an outage it can
        # still be sleeping when the server is back: a fresh pool makes the next call
        # connect straight away. ``None`` means whichever pool is current (a pool whose
        # open() timed out was never installed and has already closed itself).
        state = self._state
        if pool is None and state is not None:
            pool = state.pool
        if state is not None and state.pool is pool:
            state.pool = None
        if pool is not None:
            await pool.close(timeout=1.0)

    async def _unreachable_message(self, exc: PoolTimeout) -> str:
        # The pool only says it timed out; one direct attempt tells refused from
        # unresolvable from bad password from "server fine, pool busy".
        try:
            async with asyncio.timeout(self.connect_timeout + 1):
                probe = await psycopg.AsyncConnection.connect(
                    self._dsn, connect_timeout=max(2, round(self.connect_timeout))
                )
                await probe.close()
        except psycopg.Error as probe_exc:
            return f"cannot reach PostgreSQL at {self._where}: {self._reason(probe_exc)}"
        except TimeoutError:
            return f"cannot reach PostgreSQL at {self._where}: connection attempt timed out"
        return (
            f"cannot reach PostgreSQL at {self._where}: no pooled connection became free within "
            f"{self.connect_timeout:g}s ({self._reason(exc)})"
        )

    def _store_error(self, exc: psycopg.Error) -> TokenStoreError:
        if isinstance(exc, psycopg.OperationalError):
            return TokenStoreError(f"cannot reach PostgreSQL at {self._where}: {self._reason(exc)}")
        return TokenStoreError(f"PostgreSQL at {self._where} refused a token store query: {self._reason(exc)}")

    def _reason(self, exc: BaseException) -> str:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        # The message already names host:port, so libpq's own preamble is noise.
        reason = _LIBPQ_PREAMBLE.sub("", lines[0]) if lines else type(exc).__name__
        # libpq does not echo passwords, but a reason is printed to users: be sure.
        if self._password:
            reason = reason.replace(self._password, "***")
        return reason


async def _one(conn: Conn, query: str | sql.Composed, params: Iterable[Any]) -> TupleRow | None:
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


def _libpq_dsn(dsn: str) -> tuple[str, str | None, bool]:
    """(dsn libpq accepts, Prisma ``schema`` if any, whether Prisma was told of pgbouncer)."""
    if not dsn.startswith(("postgres://", "postgresql://")):
        return dsn, None, False
    parts = urlsplit(dsn)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prisma = {k: v for k, v in query if k in _PRISMA_ONLY_PARAMS}
    kept = [(k, v) for k, v in query if k not in _PRISMA_ONLY_PARAMS]
    clean = urlunsplit(parts._replace(query=urlencode(kept)))
    return clean, prisma.get("schema") or None, prisma.get("pgbouncer", "").lower() == "true"


def _conninfo(dsn: str) -> dict[str, Any]:
    try:
        return conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        # libpq may quote a fragment of the DSN, password included: pass on only a
        # message known to be harmless.
        detail = str(exc).strip()
        suffix = f": {detail}" if _BAD_QUERY_PARAM.match(detail) else ""
        raise TokenStoreError(f"the PostgreSQL connection string is malformed{suffix}") from None


def _describe(params: Mapping[str, Any]) -> str:
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    dbname = params.get("dbname") or params.get("user") or "postgres"
    return f"{host}:{port}/{dbname}"


def _table(schema: str | None, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name) if schema else sql.Identifier(name)

