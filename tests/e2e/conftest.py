"""Fixtures for the end-to-end tests; the machinery lives in harness.py."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_anthropic import FakeAnthropic

from .harness import (
    MASTER_KEY,
    Proxy,
    chat,
    free_port,
    login_via_cli,
    proxy_env,
    start_proxy,
    stop_proxy,
    wait_for_port,
)

__all__ = ["MASTER_KEY", "Proxy", "chat", "login_via_cli", "proxy_env", "start_proxy", "stop_proxy"]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(port=0) as server:
        server.require_claude_code_system = True
        yield server


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A Redis of our own, so stopping it does not disturb anything else."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is needed (scripts/services.sh installs it)"
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    wait_for_port(port)
    yield f"redis://127.0.0.1:{port}/0", proc
    proc.kill()
    proc.wait(5)
