"""One process of the kill loop: ``python -m bench.kill_loop.child``, driven over stdin/stdout.

It imports everything, prints ``ready``, then reads one JSON command from stdin::

    {"action": "refresh" | "cooldown" | "logout", "account": "alice", "stall": 0.004}

and does what ``litellm claude refresh`` does (a forced refresh), or what the proxy does
after a quota 429 (``manager.health.cool_down``), or ``litellm claude logout``, on the
encrypted file store named by the environment. An empty line or end of input: exit 0.

Every step is marked on stdout, unbuffered, as ``TAG [ARG] MONOTONIC``
(CLOCK_MONOTONIC is system-wide on Linux, so the parent compares stamps with its own),
so the phase a SIGKILL landed in can be read from what the process printed before dying:

    G          the command was read
    U+         the refresh request is about to be sent
    U- FP      the answer was read (FP: fingerprint of the new refresh token)
    W+         the store's change was made in memory; the file write starts
    W-         the store's write returned
    T FP       force_refresh returned (FP: the refresh token it returned)
    C UNTIL    the cooldown was recorded
    L 1|0      the logout returned (whether something was deleted)
    E NAME     the action failed with this error class (exit status 3)
    D          done

The markers come through public seams: an ``OAuthClient`` and a ``FileTokenStore``
subclass override ``refresh``, ``update`` and ``delete``. ``stall`` sleeps in every
``os.fsync``: test-side fault injection that widens the file-write window (the store's
code is unchanged).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from litellm_claude_oauth.errors import ClaudeOAuthError
from litellm_claude_oauth.manager import TokenManager
from litellm_claude_oauth.oauth import OAuthClient
from litellm_claude_oauth.ratelimit import Cooldown
from litellm_claude_oauth.settings import Settings
from litellm_claude_oauth.store import AccountRecord, cipher_for
from litellm_claude_oauth.store.base import Change
from litellm_claude_oauth.store.file import FileTokenStore
from litellm_claude_oauth.tokens import TokenSet

from .classify import fingerprint

COOLDOWN_SECONDS = 600.0
COOLDOWN_REASON = "rate limited (kill-loop race)"


def mark(tag: str, arg: str | None = None) -> None:
    text = f"{tag} {arg} {time.monotonic():.6f}\n" if arg else f"{tag} {time.monotonic():.6f}\n"
    os.write(1, text.encode())


class MarkedOAuthClient(OAuthClient):
    async def refresh(self, tokens: TokenSet) -> TokenSet:
        mark("U+")
        new = await super().refresh(tokens)
        mark("U-", fingerprint(new.refresh))
        return new


class MarkedFileStore(FileTokenStore):
    async def update(self, account: str, change: Change) -> AccountRecord | None:
        wrote = False

        def marked(current: AccountRecord | None) -> AccountRecord | None:
            nonlocal wrote
            new = change(current)
            if new is not current:  # the store writes only when the change changed something
                wrote = True
                mark("W+")
            return new

        result = await super().update(account, marked)
        if wrote:
            mark("W-")
        return result

    async def delete(self, account: str) -> bool:
        mark("W+")
        deleted = await super().delete(account)
        mark("W-")
        return deleted


def stall_fsync(seconds: float) -> None:
    if seconds <= 0:
        return
    fsync: Callable[[int], None] = os.fsync

    def slow(fd: int) -> None:
        time.sleep(seconds)
        fsync(fd)

    os.fsync = slow


async def act(command: dict[str, Any]) -> None:
    settings = Settings.from_env()
    store = MarkedFileStore(settings.token_file, cipher_for(settings))
    manager = TokenManager(settings, store, oauth=MarkedOAuthClient(settings))
    account = str(command["account"])
    try:
        if command["action"] == "refresh":
            tokens = await manager.force_refresh(account)
            mark("T", fingerprint(tokens.refresh))
        elif command["action"] == "cooldown":
            until = time.time() + COOLDOWN_SECONDS
            await manager.health.cool_down(account, Cooldown(until=until, reason=COOLDOWN_REASON))
            mark("C", f"{until:.3f}")
        elif command["action"] == "logout":
            mark("L", "1" if await manager.logout(account) else "0")
        else:
            raise ValueError(f"unknown action {command['action']!r}")
    finally:
        await manager.aclose()


def main() -> None:
    mark("ready")
    line = sys.stdin.readline()
    if not line.strip():
        return
    command = json.loads(line)
    stall_fsync(float(command.get("stall", 0)))
    mark("G")
    try:
        asyncio.run(act(command))
    except ClaudeOAuthError as exc:
        mark("E", type(exc).__name__)
        sys.exit(3)
    mark("D")


if __name__ == "__main__":
    main()
