"""The proxy keeps serving through a Redis outage and recovers from a PostgreSQL outage."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.backends import drop_our_tables
from tests.fake_anthropic import FakeAnthropic
from tests.tcp_proxy import ThreadedTcpProxy

from .harness import Proxy, chat, login_via_cli, proxy_env, start_proxy, stop_proxy

pytestmark = pytest.mark.e2e


def test_redis_stopped_mid_run_requests_keep_working(
    fake: FakeAnthropic, private_redis: tuple[str, subprocess.Popen], tmp_path: Path
) -> None:
    url, redis_proc = private_redis
    proxy: Proxy = start_proxy(proxy_env(fake, tmp_path, REDIS_URL=url), tmp_path / "proxy.log", "--num_workers", "2")
    try:
        login_via_cli(proxy, fake)
        with proxy.client() as client:
            assert chat(client).status_code == 200
            redis_proc.kill()
            redis_proc.wait(5)
            for _ in range(4):
                assert chat(client).status_code == 200
            before = fake.refresh_count
            fake.force_401_next(1)  # a refresh now needs a lock: the file lock stands in
            assert chat(client).status_code == 200
            assert fake.refresh_count == before + 1
            start = client.get("/auth/claude/oauth/start").json()  # logins fall back to the store too
            code, state = fake.authorize(start["authorization_url"])
            done = client.post("/auth/claude/oauth/exchange", json={"code": f"{code}#{state}"})
            assert done.status_code == 200, done.text
        assert "Redis unavailable" in proxy.log()
    finally:
        stop_proxy(proxy)


def test_postgres_outage_gives_clear_errors_then_recovers(
    fake: FakeAnthropic, pg_dsn: str, tmp_path: Path
) -> None:
    drop_our_tables(pg_dsn)
    params = conninfo_to_dict(pg_dsn)
    forwarder = ThreadedTcpProxy(str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432))
    forwarder.up()
    dsn = make_conninfo(pg_dsn, host="127.0.0.1", port=str(forwarder.port))
    env = proxy_env(fake, tmp_path, CLAUDE_TOKEN_STORE="postgres", CLAUDE_OAUTH_DATABASE_URL=dsn)
    proxy = start_proxy(env, tmp_path / "proxy.log")
    try:
        login_via_cli(proxy, fake)
        with proxy.client() as client:
            assert chat(client).status_code == 200
            forwarder.down()
            assert chat(client).status_code == 200  # a valid token is served from memory
            refresh = client.post("/auth/claude/oauth/refresh")
            assert refresh.status_code == 503 and "PostgreSQL" in refresh.json()["detail"]
            status = client.get("/auth/claude/oauth/status")
            assert status.status_code == 503 and "PostgreSQL" in status.json()["detail"]
            cli = proxy.cli("status")
            assert cli.returncode != 0 and "PostgreSQL" in cli.stdout + cli.stderr
            forwarder.up()
            deadline = time.monotonic() + 30
            while (refresh := client.post("/auth/claude/oauth/refresh")).status_code != 200:
                assert time.monotonic() < deadline, refresh.text
                time.sleep(0.5)
            assert chat(client).status_code == 200
    finally:
        stop_proxy(proxy)
        forwarder.down()
        forwarder.close()
