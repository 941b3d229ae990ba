"""Fixtures for the end-to-end tests; the machinery lives in harness.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fake_anthropic import FakeAnthropic

from .harness import MASTER_KEY, Proxy, chat, login_via_cli, proxy_env, start_proxy, stop_proxy

__all__ = ["MASTER_KEY", "Proxy", "chat", "login_via_cli", "proxy_env", "start_proxy", "stop_proxy"]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(port=0) as server:
        server.require_claude_code_system = True
        yield server
