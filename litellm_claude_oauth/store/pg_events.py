"""Account change events over PostgreSQL LISTEN/NOTIFY: every worker hears of logins and
logouts without Redis, when the tokens live in Postgres anyway.

Same interface as :class:`~litellm_claude_oauth.events.RedisAccountEvents`. NOTIFY
channels are per database; the channel name carries the Prisma ``schema`` (or an
explicit namespace), so two deployments in different schemas of one database do not
hear each other. Like the refresh lock, LISTEN needs a real session: a pgbouncer in
transaction-pooling mode in front of the database would lose notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..events import RECONNECT_DELAY, ChangeFeed
from ._dsn import connect_kwargs, conninfo, describe, libpq_dsn, one_line_reason

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg.rows import TupleRow

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "litellm_claude_oauth_events"
_MAX_IDENTIFIER = 63  # Postgres truncates longer names (NAMEDATALEN - 1 bytes)


def pg_channel(namespace: str) -> str:
    """The channel for ``namespace`` ("" for the default schema), always a valid identifier length."""
    name = f"{CHANNEL_PREFIX}:{namespace}" if namespace else CHANNEL_PREFIX
    if len(name.encode()) > _MAX_IDENTIFIER:
        name = f"{CHANNEL_PREFIX}:{hashlib.sha256(namespace.encode()).hexdigest()[:24]}"
    return name


class PostgresAccountEvents(ChangeFeed):
    def __init__(
        self,
        dsn: str,
        *,
        namespace: str | None = None,
        connect_timeout: float = 10.0,
        reconnect_delay: float = RECONNECT_DELAY,
    ):
        """``namespace`` defaults to the DSN's Prisma ``schema`` ("" without one)."""
        self._dsn, schema, pgbouncer = libpq_dsn(dsn)
        params = conninfo(self._dsn)
        self._kwargs = connect_kwargs(params, connect_timeout=connect_timeout, pgbouncer=pgbouncer)
        self._password = params.get("password") or None
        self._where = describe(params)
        self._connect_timeout = connect_timeout
        self._reconnect_delay = reconnect_delay
        self.channel = pg_channel(namespace if namespace is not None else (schema or ""))
        self._publisher: _Publisher | None = None

    async def publish(self, account: str) -> None:
        """NOTIFY every listener (this process's too); a failure only delays the others."""
        import psycopg

        publisher = self._publisher_for_this_loop()
        try:
            async with publisher.lock:
                if publisher.conn is None or publisher.conn.closed:
                    publisher.conn = await self._connect()
                await publisher.conn.execute("SELECT pg_notify(%s, %s)", (self.channel, account))
        except (psycopg.Error, OSError, TimeoutError) as exc:
            await self._drop_publisher()
            log.warning(
                "PostgreSQL at %s unavailable for change events: other workers will see the change to '%s' "
                "at their next refresh (%s)", self._where, account, self._reason(exc),
            )

    async def aclose(self) -> None:
        await self._stop_listening()
        await self._drop_publisher()

    # -- internals -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _subscription(self) -> AsyncIterator[AsyncIterator[object]]:
        from psycopg import sql

        async with await self._connect() as conn:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            yield (notify.payload async for notify in conn.notifies())

    def _describe_error(self, exc: BaseException) -> str | None:
        import psycopg

        return self._reason(exc) if isinstance(exc, (psycopg.Error, OSError, TimeoutError)) else None

    async def _connect(self) -> AsyncConnection[TupleRow]:
        import psycopg

        async with asyncio.timeout(self._connect_timeout):
            return await psycopg.AsyncConnection.connect(self._dsn, **self._kwargs)

    def _publisher_for_this_loop(self) -> _Publisher:
        loop = asyncio.get_running_loop()
        if self._publisher is None or self._publisher.loop is not loop:
            # A CLI may run each command under its own asyncio.run(): what the previous
            # loop opened cannot be used (or closed) from this one.
            self._publisher = _Publisher(loop)
        return self._publisher

    async def _drop_publisher(self) -> None:
        publisher = self._publisher
        if publisher is not None and publisher.conn is not None and publisher.loop is asyncio.get_running_loop():
            conn, publisher.conn = publisher.conn, None
            with contextlib.suppress(Exception):
                await conn.close()

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return f"no answer within {self._connect_timeout:g}s"
        return one_line_reason(exc, self._password)


@dataclass
class _Publisher:
    """The connection NOTIFY goes out on, kept open between publishes, bound to one loop."""

    loop: asyncio.AbstractEventLoop
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    conn: AsyncConnection[TupleRow] | None = None
