"""The real PostgreSQL and Redis the tests and benches share: create, and wipe our part of them."""

from __future__ import annotations

import contextlib
import os

TEST_DSN = os.environ.get(
    "CLAUDE_OAUTH_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/litellm_claude_oauth_test"
)
TEST_REDIS_URL = os.environ.get("CLAUDE_OAUTH_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
OUR_TABLES = ("LiteLLM_ClaudeOAuthTokens", "LiteLLM_ClaudeOAuthPending")


def ensure_database(dsn: str = TEST_DSN) -> str:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = str(conninfo_to_dict(dsn)["dbname"])
    with psycopg.connect(make_conninfo(dsn, dbname="postgres"), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            # Another run may create it between our check and CREATE.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return dsn


def drop_our_tables(dsn: str = TEST_DSN) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.SQL(", ").join(map(sql.Identifier, OUR_TABLES))))


def flush_redis(url: str = TEST_REDIS_URL) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()
