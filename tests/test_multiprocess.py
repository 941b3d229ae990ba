"""Several processes sharing one store: one refresh for all, and no damage from kill -9.

Runs against every store/lock combination: file store with its file lock, file store
with Redis, Postgres with its advisory lock, Postgres with Redis.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from litellm_claude_oauth.manager import TokenManager
from litellm_claude_oauth.settings import Settings
from tests.fake_anthropic import FakeAnthropic

from .backends import TEST_REDIS_URL, drop_our_tables, flush_redis

ROOT = Path(__file__).resolve().parents[1]

WORKER = """
import asyncio, os, sys, time
from litellm_claude_oauth.manager import TokenManager
go = sys.argv[1]
while not os.path.exists(go):
    time.sleep(0.005)
async def main():
    m = TokenManager.from_settings()
    try:
        print(await m.get_access_token(), flush=True)
    finally:
        await m.aclose()
asyncio.run(main())
"""


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(port=0) as server:
        yield server


def _reset_backends(kind: str, pg_dsn: str) -> None:
    if "postgres" in kind:
        drop_our_tables(pg_dsn)
    if "redis" in kind:
        flush_redis(TEST_REDIS_URL)


@pytest.fixture(params=["file", "file+redis", "postgres", "postgres+redis"])
def shared_env(request: pytest.FixtureRequest, env: dict[str, str], fake: FakeAnthropic,
               monkeypatch: pytest.MonkeyPatch, pg_dsn: str) -> dict[str, str]:
    kind = request.param
    _reset_backends(kind, pg_dsn)
    values = dict(env, CLAUDE_OAUTH_TOKEN_URL=fake.token_url, CLAUDE_OAUTH_AUTHORIZE_URL=fake.authorize_url,
                  CLAUDE_OAUTH_LOCK_TTL_SECONDS="2")
    if "postgres" in kind:
        values.update(CLAUDE_TOKEN_STORE="postgres", CLAUDE_OAUTH_DATABASE_URL=pg_dsn)
    if "redis" in kind:
        values["REDIS_URL"] = TEST_REDIS_URL
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def login(fake: FakeAnthropic, access_ttl: int) -> str:
    async def go() -> str:
        manager = TokenManager.from_settings(Settings.from_env())
        try:
            start = await manager.start_login()
            code, state = fake.authorize(start.authorization_url)
            fake.access_ttl = access_ttl
            record = await manager.complete_login(f"{code}#{state}")
            return record.tokens.access
        finally:
            await manager.aclose()

    token = asyncio.run(go())
    fake.access_ttl = 3600
    return token


def spawn(go_file: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(go_file)],
        env={**os.environ, **env}, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_four_processes_at_expiry_share_one_refresh(
    shared_env: dict[str, str], fake: FakeAnthropic, tmp_path: Path
) -> None:
    # A 2 s token is due for refresh after 1 s (the margin is capped at half the lifetime).
    old = login(fake, access_ttl=2)
    fake.token_delay = 0.3  # widen the race window
    go = tmp_path / "go"
    procs = [spawn(go, shared_env) for _ in range(4)]
    time.sleep(1.2)  # let every process import and reach the start line; the token is now due
    refreshes_before = fake.refresh_count
    go.touch()
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    tokens = {out.strip() for out, _ in outputs}
    assert fake.refresh_count - refreshes_before == 1
    assert len(tokens) == 1 and tokens != {old}


def test_kill_9_during_refresh_leaves_a_usable_store(
    shared_env: dict[str, str], fake: FakeAnthropic, tmp_path: Path
) -> None:
    login(fake, access_ttl=2)
    time.sleep(1.1)  # due for refresh (the margin is capped at half the 2 s lifetime)
    # The server finishes the killed client's request; without rotation its refresh
    # token stays good, so what we check is our side: lock freed, store intact.
    fake.rotate_refresh_tokens = False
    fake.token_delay = 3.0
    go = tmp_path / "go"
    go.touch()
    victim = spawn(go, shared_env)
    deadline = time.monotonic() + 30
    while fake.refresh_count == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.refresh_count == 1, "the victim should be mid-refresh"
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)

    fake.token_delay = 0
    survivor = spawn(go, shared_env)
    out, err = survivor.communicate(timeout=60)
    assert survivor.returncode == 0, err
    assert out.strip().startswith("sk-ant-oat01-")
    status = subprocess.run(
        [str(Path(sys.executable).parent / "litellm"), "claude", "status", "--json"],
        env={**os.environ, **shared_env}, capture_output=True, text=True, timeout=30,
    )
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)["accounts"][0]["valid"] is True
