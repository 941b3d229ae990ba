"""Connection strings for the Postgres store: Prisma URL translation, and describing them without secrets."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import TokenStoreError

# LiteLLM's DATABASE_URL is written for Prisma, which accepts query parameters libpq
# rejects outright ("invalid URI query parameter"); they are dropped, and `schema` is
# honoured by qualifying our table names with it.
_PRISMA_ONLY_PARAMS = frozenset(
    {"schema", "connection_limit", "pool_timeout", "pgbouncer", "socket_timeout", "statement_cache_size",
     "sslaccept", "sslidentity"}
)
_BAD_QUERY_PARAM = re.compile(r'^invalid URI query parameter: "\w+"$')


class LibpqDsn(NamedTuple):
    dsn: str
    """What libpq accepts."""
    schema: str | None
    """Prisma's ``schema`` parameter, if any."""
    pgbouncer: bool
    """Whether Prisma was told a pgbouncer sits in front (no server-side prepared statements)."""


def libpq_dsn(dsn: str) -> LibpqDsn:
    if not dsn.startswith(("postgres://", "postgresql://")):
        return LibpqDsn(dsn, None, False)
    parts = urlsplit(dsn)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prisma = {k: v for k, v in query if k in _PRISMA_ONLY_PARAMS}
    kept = [(k, v) for k, v in query if k not in _PRISMA_ONLY_PARAMS]
    clean = urlunsplit(parts._replace(query=urlencode(kept)))
    return LibpqDsn(clean, prisma.get("schema") or None, prisma.get("pgbouncer", "").lower() == "true")


def conninfo(dsn: str) -> dict[str, Any]:
    """The DSN's parameters, or a TokenStoreError that quotes none of it."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        return conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        # libpq may quote a fragment of the DSN, password included: pass on only a
        # message known to be harmless.
        detail = str(exc).strip()
        suffix = f": {detail}" if _BAD_QUERY_PARAM.match(detail) else ""
        raise TokenStoreError(f"the PostgreSQL connection string is malformed{suffix}") from None


def describe(params: Mapping[str, Any]) -> str:
    """host:port/dbname, for messages (never the password)."""
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    dbname = params.get("dbname") or params.get("user") or "postgres"
    return f"{host}:{port}/{dbname}"


# 'connection failed: connection to server at "h" (1.2.3.4), port 5432 failed: FATAL:  '
_LIBPQ_PREAMBLE = re.compile(
    r'^(?:connection failed: )?(?:connection to server (?:at|on socket) "[^"]*"(?: \([^)]*\))?'
    r'(?:, port \d+)? failed: )?(?:FATAL: +)?'
)


def one_line_reason(exc: BaseException, password: str | None) -> str:
    """The first line of a libpq error without its preamble (messages already name host:port)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = _LIBPQ_PREAMBLE.sub("", lines[0]) if lines else type(exc).__name__
    # libpq does not echo passwords, but a reason is printed to users: be sure.
    return reason.replace(password, "***") if password else reason


def connect_kwargs(params: Mapping[str, Any], *, connect_timeout: float, pgbouncer: bool) -> dict[str, Any]:
    """Connection settings every connection of ours gets, on top of the DSN's own."""
    kwargs: dict[str, Any] = {
        "autocommit": True,
        # Text comes back as bytes from a SQL_ASCII database unless the client asks for
        # UTF8 (account ids then compare unequal to str and regexes fail on them).
        "client_encoding": "UTF8",
    }
    if "application_name" not in params:
        kwargs["application_name"] = "litellm-claude-oauth"
    if "connect_timeout" not in params:
        kwargs["connect_timeout"] = max(2, round(connect_timeout))  # libpq's minimum is 2s
    if pgbouncer:
        kwargs["prepare_threshold"] = None  # server-side prepared statements break under pgbouncer
    return kwargs
