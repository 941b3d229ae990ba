"""Encrypted JSON file store: the embedded default.

Layout of the file (mode 0600)::

    {"format": "litellm-claude-oauth", "version": 1,
     "accounts": {"<id>": <envelope>}, "pending": {"<state>": <envelope>}}

Every change is read-modify-write under an exclusive file lock and lands by atomic
rename, so a crash at any point leaves either the old file or the new one, never a
mix. A file we cannot parse or decrypt is never overwritten.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout

from ..atomic import fsync_dir, write_atomically
from ..crypto import Cipher
from ..errors import TokenStoreError
from ..tokens import PendingLogin
from .base import AccountRecord, Change
from .sealed import Kind, Sealer

log = logging.getLogger(__name__)

FORMAT = "litellm-claude-oauth"
VERSION = 1
T = TypeVar("T")


class FileTokenStore:
    def __init__(self, path: Path, cipher: Cipher, *, lock_timeout: float = 30.0):
        self.path = Path(path)
        self.sealer = Sealer(cipher)
        self.lock_timeout = lock_timeout
        # The file lock excludes other processes; the thread lock excludes our own
        # threads, since filelock without thread-locality is re-entrant across them.
        self._io_lock = FileLock(f"{self.path}.lock", thread_local=False, mode=0o600)
        self._thread_lock = threading.Lock()
        self._refresh_locks: dict[str, FileLock] = {}

    @property
    def location(self) -> str:
        return str(self.path)

    @property
    def encrypted(self) -> bool:
        return self.sealer.encrypted

    # -- async API -------------------------------------------------------------------

    async def load(self, account: str) -> AccountRecord | None:
        return await asyncio.to_thread(self._load, account)

    async def save(self, record: AccountRecord) -> None:
        envelope = self.sealer.seal_account(record)
        await asyncio.to_thread(self._mutate, lambda doc: doc["accounts"].__setitem__(record.account, envelope))

    async def update(self, account: str, change: Change) -> AccountRecord | None:
        def step(doc: dict[str, Any]) -> tuple[AccountRecord | None, bool]:
            envelope = doc["accounts"].get(account)
            current = None if envelope is None else self.sealer.open_account(account, envelope)
            new = change(current)
            if new is current:
                return current, False
            if new is None:
                del doc["accounts"][account]
            else:
                doc["accounts"][account] = self.sealer.seal_account(new)
            return new, True

        return await asyncio.to_thread(self._transact, step)

    async def delete(self, account: str) -> bool:
        def step(doc: dict[str, Any]) -> tuple[bool, bool]:
            found = doc["accounts"].pop(account, None) is not None
            return found, found

        return await asyncio.to_thread(self._transact, step)

    async def accounts(self) -> list[str]:
        doc = await asyncio.to_thread(self._read_locked)
        return sorted(doc["accounts"])

    async def put_pending(self, pending: PendingLogin) -> None:
        envelope = self.sealer.seal_pending(pending)
        await asyncio.to_thread(self._mutate, lambda doc: doc["pending"].__setitem__(pending.state, envelope))

    async def take_pending(self, state: str) -> PendingLogin | None:
        def step(doc: dict[str, Any]) -> tuple[Any, bool]:
            envelope = doc["pending"].pop(state, None)
            return envelope, envelope is not None

        envelope = await asyncio.to_thread(self._transact, step)
        if envelope is None:
            return None
        return self.sealer.open_pending(state, envelope)

    async def pending_for(self, account: str) -> list[PendingLogin]:
        doc = await asyncio.to_thread(self._read_locked)
        return self.sealer.pending_of(doc["pending"].items(), account)

    async def prune_pending(self, older_than: float) -> int:
        """Drop pending logins started before ``older_than`` (unix seconds)."""

        def prune(doc: dict[str, Any]) -> tuple[int, bool]:
            stale = [state for state, envelope in doc["pending"].items()
                     if self.sealer.pending_started(state, envelope) < older_than]
            for state in stale:
                del doc["pending"][state]
            return len(stale), bool(stale)

        return await asyncio.to_thread(self._transact, prune)

    @contextlib.asynccontextmanager
    async def lock(self, account: str) -> AsyncIterator[None]:
        lock = self._refresh_locks.get(account)
        if lock is None:
            lock = self._refresh_locks[account] = FileLock(
                f"{self.path}.{account}.refresh.lock", thread_local=False, mode=0o600
            )
        self._ensure_dir()
        try:
            await asyncio.to_thread(lock.acquire, timeout=self.lock_timeout)
        except Timeout:  # before OSError: filelock's Timeout is a TimeoutError, an OSError
            raise TokenStoreError(
                f"another process has held the refresh lock for '{account}' for over {self.lock_timeout:.0f}s"
            ) from None
        except OSError as exc:
            raise TokenStoreError(f"cannot create the refresh lock next to {self.path}: {exc.strerror}") from None
        try:
            yield
        finally:
            lock.release()

    async def rotate_keys(self) -> int:
        def reseal(doc: dict[str, Any]) -> int:
            count = 0
            sections: tuple[tuple[str, Kind], ...] = (("accounts", "account"), ("pending", "pending"))
            for section, kind in sections:
                for key, envelope in doc[section].items():
                    if self.sealer.needs_reseal(envelope):
                        doc[section][key] = self.sealer.reseal(kind, key, envelope)
                        count += 1
            return count

        return await asyncio.to_thread(self._mutate, reseal)

    async def close(self) -> None:
        return None

    # -- sync internals (run in a worker thread) -------------------------------------

    def _load(self, account: str) -> AccountRecord | None:
        doc = self._read_locked()
        envelope = doc["accounts"].get(account)
        if envelope is None:
            return None
        record = self.sealer.open_account(account, envelope)
        if self.sealer.needs_reseal(envelope):
            # Lazy key rotation: the first read under a new key re-seals the record,
            # unless a writer changed it since we read it.
            def reseal(doc: dict[str, Any]) -> tuple[None, bool]:
                if doc["accounts"].get(account) != envelope:
                    return None, False
                doc["accounts"][account] = self.sealer.seal_account(record)
                return None, True

            self._transact(reseal)
        return record

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock:
            try:
                self._io_lock.acquire(timeout=self.lock_timeout)
            except Timeout:  # before OSError: filelock's Timeout is a TimeoutError, an OSError
                raise TokenStoreError(f"timed out waiting for the lock on {self.path}.lock") from None
            except OSError as exc:
                raise TokenStoreError(f"cannot lock {self.path}.lock: {exc.strerror or exc}") from None
            try:
                with _os_errors(f"cannot finish an interrupted write of {self.path}"):
                    self._finish_interrupted_write()
                yield
            finally:
                self._io_lock.release()

    def _read_locked(self) -> dict[str, Any]:
        if not self.path.parent.exists():
            # Reading must not create ~/.litellm or lock files as a side effect.
            return self._read()
        with self._locked():
            return self._read()

    def _mutate(self, change: Callable[[dict[str, Any]], T]) -> T:
        return self._transact(lambda doc: (change(doc), True))

    def _transact(self, step: Callable[[dict[str, Any]], tuple[T, bool]]) -> T:
        """Read, change and (only if the step says it changed something) write, under the lock."""
        self._ensure_dir()
        with self._locked():
            doc = self._read()
            result, dirty = step(doc)
            if dirty:
                with _os_errors(f"cannot write {self.path}"):
                    self._write(doc)
            return result

    def _ensure_dir(self) -> None:
        parent = self.path.parent
        if not parent.exists():
            try:
                parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise TokenStoreError(f"cannot create {parent}: {exc.strerror}") from None

    def _finish_interrupted_write(self) -> None:
        """Deal with what a writer killed between writing its temp file and the rename left.

        Writers hold the lock we now hold, so any temp file is an orphan. A complete one
        that is newer than the token file is the state its writer meant to commit, maybe
        with a freshly rotated refresh token that exists nowhere else: roll it forward.
        Anything else (partial, older) is deleted, so stale tokens do not linger on disk.
        """
        # Exactly our own temp names: "<name>.staging" has temp files of its own in the same directory.
        own = re.compile(rf"\.{re.escape(self.path.name)}\.[a-z0-9_]{{8}}\.tmp")
        orphans = [p for p in self.path.parent.glob(f".{self.path.name}.*.tmp") if own.fullmatch(p.name)]
        if not orphans:
            return
        try:
            current = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            current = -1
        complete = []
        for orphan in orphans:
            try:
                stamp = orphan.stat().st_mtime_ns
                self._parse(orphan.read_bytes(), orphan)
            except (OSError, TokenStoreError):
                continue
            if stamp > current:
                complete.append((stamp, orphan))
        newest = max(complete)[1] if complete else None
        for orphan in orphans:
            if orphan != newest:
                with contextlib.suppress(OSError):
                    orphan.unlink()
        if newest is not None:
            os.replace(newest, self.path)
            fsync_dir(self.path.parent)
            log.warning("Claude OAuth: completed a token file write interrupted by a crash (%s)", self.path)

    def _read(self) -> dict[str, Any]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {"format": FORMAT, "version": VERSION, "accounts": {}, "pending": {}}
        except OSError as exc:
            raise TokenStoreError(f"cannot read {self.path}: {exc.strerror}") from None
        return self._parse(raw, self.path)

    def _parse(self, raw: bytes, origin: Path) -> dict[str, Any]:
        try:
            doc = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise TokenStoreError(
                f"{origin} is not valid JSON; it was left untouched. Restore it from a backup or move it "
                "aside and log in again."
            ) from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise TokenStoreError(
                f"{origin} is not a litellm-claude-oauth token file; it was left untouched "
                "(to bring in Claude Code credentials use `litellm claude import`)."
            )
        if doc.get("version") != VERSION:
            raise TokenStoreError(f"{origin} has unsupported version {doc.get('version')!r}")
        doc.setdefault("accounts", {})
        doc.setdefault("pending", {})
        if not isinstance(doc["accounts"], dict) or not isinstance(doc["pending"], dict):
            raise TokenStoreError(f"{origin} is malformed; it was left untouched")
        return doc

    def _write(self, doc: dict[str, Any]) -> None:
        write_atomically(self.path, json.dumps(doc, indent=2, sort_keys=True).encode())


@contextlib.contextmanager
def _os_errors(what: str) -> Iterator[None]:
    """Disk full, read-only, permission denied…: one line, as a TokenStoreError the manager handles.

    Callers keep a refreshed token in memory on TokenStoreError, so an OSError escaping
    here would lose a rotated refresh token.
    """
    try:
        yield
    except OSError as exc:
        raise TokenStoreError(f"{what}: {exc.strerror or exc}") from None
