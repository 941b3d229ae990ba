"""test_oauth_docker.sh --url: the seed's whole workflow against a locally started proxy (no Docker)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.fake_anthropic import FakeAnthropic

from .harness import MASTER_KEY, ROOT, proxy_env, start_proxy, stop_proxy

pytestmark = pytest.mark.e2e


def run_script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "test_oauth_docker.sh"), *args],
        env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, cwd=ROOT,
    )


def test_script_passes_against_local_proxy_and_fake_anthropic(fake: FakeAnthropic, tmp_path: Path) -> None:
    proxy = start_proxy(proxy_env(fake, tmp_path), tmp_path / "proxy.log")
    env = {**os.environ, "FAKE_AUTHORIZE_URL": f"{fake.url}/_fake/authorize", "NO_PROXY": "127.0.0.1,localhost"}
    try:
        result = run_script("--url", proxy.url, "--key", MASTER_KEY, "--non-interactive", env=env)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "0 failed" in output
        # It really logged in through the OAuth endpoints and chatted through the proxy.
        assert fake.exchange_count == 1 and fake.messages_count >= 2

        wrong_key = run_script("--url", proxy.url, "--key", "sk-wrong", "--non-interactive", env=env)
        assert wrong_key.returncode != 0
    finally:
        stop_proxy(proxy)


def test_script_usage_errors_exit_2() -> None:
    result = run_script("--no-such-option", env=dict(os.environ))
    assert result.returncode == 2
