"""The kill loop's world: an in-process fake Anthropic, the encrypted token file, and how to read both."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from collections.abc import Iterable
from pathlib import Path

from litellm_claude_oauth.manager import TokenManager
from litellm_claude_oauth.settings import Settings
from litellm_claude_oauth.store import AccountRecord, cipher_for
from litellm_claude_oauth.store.file import FileTokenStore
from tests.fake_anthropic import FakeAnthropic

from .classify import Stored

ENCRYPTION_KEY = "c3" * 32


def store_env(token_file: Path, fake: FakeAnthropic) -> dict[str, str]:
    return {
        "CLAUDE_TOKEN_FILE": str(token_file),
        "CLAUDE_TOKEN_ENCRYPTION_KEY": ENCRYPTION_KEY,
        "CLAUDE_OAUTH_TOKEN_URL": fake.token_url,
        "CLAUDE_OAUTH_AUTHORIZE_URL": fake.authorize_url,
        "CLAUDE_OAUTH_HTTP_TIMEOUT": "10",
    }


def login(settings: Settings, fake: FakeAnthropic, account: str) -> str:
    """Log ``account`` in through the fake's authorize step; returns the stored refresh token."""

    async def go() -> str:
        manager = TokenManager.from_settings(settings)
        try:
            start = await manager.start_login(account)
            code, state = fake.authorize(start.authorization_url, email=f"{account}@example.com")
            record = await manager.complete_login(f"{code}#{state}", account=account)
            assert record.tokens.refresh is not None
            return record.tokens.refresh
        finally:
            await manager.aclose()

    return asyncio.run(go())


class Alive:
    """The refresh tokens the fake would accept now, as a container (asked without spending them)."""

    def __init__(self, fake: FakeAnthropic):
        self._fake = fake

    def __contains__(self, token: object) -> bool:
        return isinstance(token, str) and self._fake.refresh_token_alive(token)


def spent_tokens(fake: FakeAnthropic) -> set[str]:
    """Refresh tokens a recorded request spent successfully (the server rotated them)."""
    return {
        str(r.body["refresh_token"])
        for r in fake.token_requests()
        if isinstance(r.body, dict) and r.body.get("grant_type") == "refresh_token" and r.status == 200
    }  # fmt: skip


def wait_arrival(fake: FakeAnthropic, before: int, timeout: float = 5.0) -> float | None:
    """When (monotonic clock) the fake's refresh counter passed ``before``: a request's arrival, to ~1 ms.

    The counter goes up as the token endpoint admits a request, before its answer.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fake.refresh_count > before:
            return time.monotonic()
        time.sleep(0.0005)
    return None


def settle_upstream(fake: FakeAnthropic, timeout: float = 5.0) -> bool:
    """Wait until the fake has answered every token request and no new one came for 50 ms.

    A killed client's request still runs to completion on the server (aiohttp does not
    cancel handlers when the peer goes away), so the rotation may land after the kill.
    """
    deadline = time.monotonic() + timeout
    last: tuple[int, int] | None = None
    since = time.monotonic()
    while time.monotonic() < deadline:
        requests = fake.token_requests()
        now = (len(requests), fake.refresh_count)
        if now != last or any(r.status is None for r in requests):
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= 0.05:
            return True
        time.sleep(0.005)
    return False


def stored(record: AccountRecord) -> Stored:
    return Stored(record.tokens.refresh, record.relogin_reason, record.cooldown_until)


def read_store(path: Path, settings: Settings, accounts: Iterable[str]) -> tuple[dict[str, AccountRecord], str | None]:
    """Every account's record through a fresh FileTokenStore, or what is wrong with the file.

    A missing account is reported as a problem: use :func:`read_account` where absence is fine.
    """
    loaded, problem = _load(path, settings, accounts)
    if problem is not None:
        return {}, problem
    missing = sorted(a for a, r in loaded.items() if r is None)
    records = {a: r for a, r in loaded.items() if r is not None}
    return records, (f"account(s) missing from the file: {', '.join(missing)}" if missing else None)


def read_account(path: Path, settings: Settings, account: str) -> tuple[AccountRecord | None, str | None]:
    loaded, problem = _load(path, settings, [account])
    return loaded.get(account), problem


def _load(
    path: Path, settings: Settings, accounts: Iterable[str]
) -> tuple[dict[str, AccountRecord | None], str | None]:
    try:
        json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        return {}, f"token file unreadable: {type(exc).__name__}: {exc}"
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode != 0o600:
        return {}, f"token file mode is {oct(mode)}, not 0o600"
    store = FileTokenStore(path, cipher_for(settings), lock_timeout=5)

    async def load_all() -> dict[str, AccountRecord | None]:
        return {account: await store.load(account) for account in accounts}

    try:
        return asyncio.run(load_all()), None
    except Exception as exc:
        return {}, f"load failed: {type(exc).__name__}: {exc}"


def tmp_files(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))
