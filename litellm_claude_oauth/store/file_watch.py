"""Change feed for the file store without Redis: the token file itself is the event.

Every worker caches its access token in memory. A logout, login or refresh done by the
CLI or another worker rewrites the file (atomic rename, so a new inode and mtime);
each worker notices within ``interval`` seconds, off the request path, and drops
what it cached, so its next request re-reads the store. That is how "not logged in"
reaches every worker after a logout, instead of an upstream 401 hours later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


class FileWatchEvents:
    def __init__(self, path: Path, *, interval: float = 1.0):
        self._path = Path(path)
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def publish(self, account: str) -> None:
        """Nothing to send: the write that changed the account already changed the file."""

    def listen(self, on_change: Callable[[str], None]) -> None:
        """Start (once per event loop) a background task calling ``on_change("*")`` on any change."""
        if self._task is not None and not self._task.done():
            return
        self._task = asyncio.get_running_loop().create_task(self._watch(on_change), name="claude-oauth-file-watch")

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    async def _watch(self, on_change: Callable[[str], None]) -> None:
        last = self._stamp()
        while True:
            await asyncio.sleep(self._interval)
            stamp = self._stamp()
            if stamp != last:
                last = stamp
                try:
                    on_change("*")
                except Exception:  # a listener's bug must not end the watch
                    log.exception("Claude OAuth: change listener failed")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
