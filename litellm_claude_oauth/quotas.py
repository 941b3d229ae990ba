"""How much of each account's plan windows is used, seen from every upstream response.

Every Messages response (200s included) carries ``anthropic-ratelimit-unified-*`` headers
(see :mod:`.ratelimit`). :class:`Quotas` keeps, per account and window (``5h``, ``7d``,
model-scoped ones such as ``7d_opus`` / ``7d_oi``, and the ``overage`` lane), the last
utilization (0..1), status and reset, and answers pool questions from memory:

* :meth:`Quotas.observe` is the hot path: synchronous, one header parse, a few dict
  writes, no I/O. It only marks the account dirty;
* a background task (:meth:`Quotas.start`, started by the first ``observe`` inside a
  running event loop) pushes this worker's observations to a shared place and pulls the
  other workers' every ``interval`` seconds, so every worker (and ``litellm claude
  status``) sees the newest observation of every window, whoever made it;
* :meth:`Quotas.utilization` / :meth:`Quotas.above_threshold` are O(1) reads of memory.

Where the shared view lives (:func:`backend_for`):

* Redis when configured: one hash per account (``HSET <prefix>:<account> <worker> <json>``
  with a TTL), one field per worker, so concurrent workers never overwrite each other
  and no compare-and-set script is needed; readers merge newest-per-window;
* otherwise a directory next to the token file (``claude_tokens.json.quotas/``), one
  file per worker process written atomically. The token store is not touched: quota
  figures are advisory, rewritten on every response, and must never contend with (or
  risk) the credential records. Workers of one host share it; replicas on several hosts
  need Redis (which they want anyway for refresh locks).

Merging is newest-observation-wins per window: Anthropic reports the account's state at
the moment of each response, so the latest report of a window is the truth for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from .ratelimit import ACCOUNT_WINDOWS, REJECTED, RateLimitState, window_family
from .settings import Settings

log = logging.getLogger(__name__)

__all__ = [
    "OVERAGE",
    "AccountQuota",
    "FileQuotaBackend",
    "Quotas",
    "RedisQuotaBackend",
    "WindowQuota",
    "backend_for",
    "format_window",
    "prefer",
    "read_shared",
]

OVERAGE = "overage"
REDIS_PREFIX = "litellm:claude_oauth:quota"
# The longest window is 7 days: older figures describe a window that has rolled over.
SHARED_TTL_SECONDS = 8 * 86_400
SYNC_INTERVAL_SECONDS = 2.0
# At most one "utilization high" callback per account and window per process this often;
# alerts.py de-duplicates across workers on top of that.
_HIGH_REPEAT_SECONDS = 3600.0
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")

# One window as stored and shared: (observed_at, status, utilization, reset).
_Entry = tuple[float, str | None, float | None, float | None]
# The overall state: (observed_at, status, representative claim).
_Top = tuple[float, str | None, str | None]


class WindowQuota(BaseModel):
    """One window of an account as last seen. ``utilization`` is 0..1."""

    model_config = ConfigDict(frozen=True)

    name: str
    model_family: str | None = None
    utilization: float | None = None
    status: str | None = None
    reset: float | None = None
    observed_at: float
    # The reset time has passed since this was seen: the window started over, so the
    # utilization shown is 0 and the status unknown.
    rolled_over: bool = False

    def seconds_until_reset(self, now: float | None = None) -> float | None:
        if self.reset is None:
            return None
        return max(0.0, self.reset - (time.time() if now is None else now))


class AccountQuota(BaseModel):
    """An account's windows: ``5h`` and ``7d`` first, then model-scoped ones, then ``overage``."""

    account: str
    observed_at: float | None = None
    status: str | None = None
    representative_claim: str | None = None
    windows: list[WindowQuota] = []

    def window(self, name: str) -> WindowQuota | None:
        return next((w for w in self.windows if w.name == name), None)


def _order(name: str) -> tuple[int, str]:
    if name in ACCOUNT_WINDOWS:
        return (ACCOUNT_WINDOWS.index(name), name)
    return (3 if name == OVERAGE else 2, name)


def _newer(current: _Entry | _Top | None, candidate: _Entry | _Top) -> bool:
    return current is None or candidate[0] > current[0]


def _record(top: _Top | None, windows: Mapping[str, _Entry]) -> dict[str, Any]:
    """One worker's view of one account, as JSON-able data."""
    return {"top": list(top) if top else None, "windows": {k: list(v) for k, v in windows.items()}}


def _parse_record(data: Any) -> tuple[_Top | None, dict[str, _Entry]] | None:
    """A record written by :func:`_record`, or None if it is not one (another version, damage)."""
    if not isinstance(data, dict) or not isinstance(data.get("windows"), dict):
        return None
    try:
        top_raw = data.get("top")
        top: _Top | None = None
        if top_raw is not None:
            top = (float(top_raw[0]), _opt_str(top_raw[1]), _opt_str(top_raw[2]))
        windows = {
            str(name): (float(e[0]), _opt_str(e[1]), _opt_float(e[2]), _opt_float(e[3]))
            for name, e in data["windows"].items()
        }
    except (TypeError, ValueError, IndexError):
        return None
    return top, windows


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def worker_id() -> str:
    return _SAFE_NAME.sub("_", f"{socket.gethostname()}-{os.getpid()}")


# -- shared backends ----------------------------------------------------------------------


class QuotaBackend(Protocol):
    async def push(self, worker: str, records: Mapping[str, dict[str, Any]], dirty: Iterable[str]) -> None:
        """Publish this worker's records (``records`` is all of them; ``dirty`` changed since the last push)."""

    async def pull(self) -> dict[str, list[dict[str, Any]]]:
        """Every worker's records, by account."""

    async def aclose(self) -> None: ...


class RedisQuotaBackend:
    """``HSET <prefix>:<account> <worker> <json>`` plus an index set of accounts, both with a TTL."""

    def __init__(self, redis: Any, prefix: str = REDIS_PREFIX, ttl: float = SHARED_TTL_SECONDS):
        self._redis = redis
        self._prefix = prefix
        self._ttl = int(ttl)

    def _key(self, account: str) -> str:
        return f"{self._prefix}:{account}"

    async def push(self, worker: str, records: Mapping[str, dict[str, Any]], dirty: Iterable[str]) -> None:
        index = f"{self._prefix}:accounts"
        pipe = self._redis.pipeline(transaction=False)
        for account in dirty:
            if account not in records:
                continue
            pipe.hset(self._key(account), worker, json.dumps(records[account]))
            pipe.expire(self._key(account), self._ttl)
            pipe.sadd(index, account)
        pipe.expire(index, self._ttl)
        await pipe.execute()

    async def pull(self) -> dict[str, list[dict[str, Any]]]:
        accounts = sorted(a.decode() if isinstance(a, bytes) else str(a)
                          for a in await self._redis.smembers(f"{self._prefix}:accounts"))
        if not accounts:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for account in accounts:
            pipe.hgetall(self._key(account))
        hashes = await pipe.execute()
        found: dict[str, list[dict[str, Any]]] = {}
        oldest = time.time() - self._ttl
        stale: list[tuple[str, Any]] = []
        for account, fields in zip(accounts, hashes, strict=True):
            for worker, raw in (fields or {}).items():
                with contextlib.suppress(ValueError):
                    data = json.loads(raw)
                    parsed = _parse_record(data)
                    if parsed is None:
                        continue
                    newest = max([e[0] for e in parsed[1].values()] + [parsed[0][0] if parsed[0] else 0.0])
                    if newest < oldest:
                        stale.append((self._key(account), worker))  # a worker gone for a week
                        continue
                    found.setdefault(account, []).append(data)
        if stale:
            pipe = self._redis.pipeline(transaction=False)
            for key, worker in stale:
                pipe.hdel(key, worker)
            await pipe.execute()
        return found

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self._redis.aclose()


class FileQuotaBackend:
    """One JSON file per worker in ``directory`` (0700), replaced atomically; files older than the TTL are removed."""

    def __init__(self, directory: Path, ttl: float = SHARED_TTL_SECONDS):
        self.directory = directory
        self._ttl = ttl

    def _write(self, worker: str, payload: bytes) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
            os.replace(tmp, self.directory / f"{worker}.json")
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _read(self) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        if not self.directory.is_dir():
            return found
        oldest = time.time() - self._ttl
        for path in self.directory.glob("*.json"):
            try:
                if path.stat().st_mtime < oldest:
                    path.unlink()  # a worker gone for longer than any window
                    continue
                data = json.loads(path.read_bytes())
            except (OSError, ValueError):
                continue  # removed meanwhile, or half-written by an older version: skip it
            if isinstance(data, dict):
                for account, record in data.items():
                    if isinstance(record, dict):
                        found.setdefault(str(account), []).append(record)
        return found

    async def push(self, worker: str, records: Mapping[str, dict[str, Any]], dirty: Iterable[str]) -> None:
        payload = json.dumps(dict(records)).encode()
        await asyncio.to_thread(self._write, worker, payload)

    async def pull(self) -> dict[str, list[dict[str, Any]]]:
        return await asyncio.to_thread(self._read)

    async def aclose(self) -> None:
        return None


def sidecar_directory(token_file: Path) -> Path:
    return token_file.with_name(token_file.name + ".quotas")


def backend_for(settings: Settings) -> QuotaBackend:
    if settings.redis is not None:
        from redis.asyncio import Redis

        redis = Redis.from_url(settings.redis.url.get_secret_value(), socket_timeout=2, socket_connect_timeout=2)
        return RedisQuotaBackend(redis)
    return FileQuotaBackend(sidecar_directory(settings.token_file))


# -- the view ---------------------------------------------------------------------------


class Quotas:
    """Per account and window: the newest utilization, status and reset any worker has seen.

    ``on_high(account, window)`` is called (synchronously, at most once an hour per account
    and window in this process) when an observed window reaches ``alert_utilization``;
    alerts.py hooks it up to send an alert.
    """

    def __init__(
        self,
        settings: Settings,
        backend: QuotaBackend | None = None,
        *,
        worker: str | None = None,
        interval: float = SYNC_INTERVAL_SECONDS,
        on_high: Callable[[str, WindowQuota], None] | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.settings = settings
        self.backend = backend
        self.worker = worker or worker_id()
        self.interval = interval
        self.on_high = on_high
        self._clock = clock
        self._threshold = settings.quota_skip_threshold
        self._alert_at = settings.alert_utilization
        self._seen: dict[str, dict[str, _Entry]] = {}  # merged: this worker's and the others'
        self._top: dict[str, _Top] = {}
        self._own: dict[str, dict[str, _Entry]] = {}  # this worker's observations only
        self._own_top: dict[str, _Top] = {}
        self._dirty: set[str] = set()
        # The request path's latest headers per account, parsed when someone reads (or syncs).
        self._unparsed: dict[str, tuple[float, Mapping[str, str]]] = {}
        self._high_sent: dict[tuple[str, str], float] = {}
        self._task: asyncio.Task[None] | None = None
        self._sync_lock: asyncio.Lock | None = None
        self._last_error_logged = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> Quotas:
        return cls(settings, backend_for(settings), **kwargs)

    # -- hot path ------------------------------------------------------------------------

    def observe(self, account: str, headers: Mapping[str, str], now: float | None = None) -> RateLimitState | None:
        """Take what one upstream response said about ``account``. No I/O; returns the parsed state."""
        now = self._clock() if now is None else now
        state = RateLimitState.from_headers(headers, now)
        if state is None:
            return None
        # A window whose every field was junk says nothing: the figure seen before stays.
        entries: dict[str, _Entry] = {
            w.name: (now, w.status, w.utilization, w.reset)
            for w in state.windows
            if w.status is not None or w.utilization is not None or w.reset is not None
        }
        over = state.overage
        if over.status is not None or over.utilization is not None or over.reset is not None:
            entries[OVERAGE] = (now, over.status, over.utilization, over.reset)
        self._merge(account, (now, state.status, state.representative_claim), entries)
        own = self._own.setdefault(account, {})
        own.update(entries)
        self._own_top[account] = (now, state.status, state.representative_claim)
        self._dirty.add(account)
        if self.on_high is not None:
            for name, entry in entries.items():
                if name != OVERAGE and entry[2] is not None and entry[2] >= self._alert_at:
                    self._high(account, name, entry, now)
        if self._task is None and self.backend is not None:
            self.start()
        return state

    def note(self, account: str, headers: Mapping[str, str], now: float | None = None) -> None:
        """The request path's :meth:`observe`: keeps the answer's headers, parses them on the next read.

        Only the newest answer per account matters, and most are never read before the
        next one arrives: parsing on read takes ~100 µs off every request.
        """
        self._unparsed[account] = (self._clock() if now is None else now, headers)
        if self._task is None and self.backend is not None:
            self.start()

    def _settle(self) -> None:
        if self._unparsed:
            unparsed, self._unparsed = self._unparsed, {}
            for account, (seen_at, headers) in unparsed.items():
                self.observe(account, headers, seen_at)

    def _merge(self, account: str, top: _Top | None, entries: Mapping[str, _Entry]) -> None:
        seen = self._seen.setdefault(account, {})
        for name, entry in entries.items():
            if _newer(seen.get(name), entry):
                seen[name] = entry
        if top is not None and _newer(self._top.get(account), top):
            self._top[account] = top

    def _high(self, account: str, name: str, entry: _Entry, now: float) -> None:
        key = (account, name)
        if now - self._high_sent.get(key, float("-inf")) < _HIGH_REPEAT_SECONDS:
            return
        self._high_sent[key] = now
        assert self.on_high is not None
        try:
            self.on_high(account, _window(name, entry, now))
        except Exception:  # an alert problem must never fail a request
            log.exception("Claude OAuth: quota alert callback failed")

    # -- reads (memory only) -------------------------------------------------------------

    def utilization(self, account: str, window: str = "5h", now: float | None = None) -> float | None:
        """The window's utilization (0..1) as last seen by any worker; 0 once its reset has passed; None if unknown."""
        self._settle()
        entry = self._seen.get(account, {}).get(window)
        if entry is None:
            return None
        reset = entry[3]
        if reset is not None and reset <= (self._clock() if now is None else now):
            return 0.0
        return entry[2]

    def above_threshold(
        self, account: str, family: str | None = None, threshold: float | None = None, now: float | None = None
    ) -> bool:
        """Whether ``5h``, ``7d`` or (with ``family``) that family's window is at or above the skip threshold.

        A window still marked ``rejected`` before its reset counts too.
        """
        self._settle()
        windows = self._seen.get(account)
        if not windows:
            return False
        limit = self._threshold if threshold is None else threshold
        now = self._clock() if now is None else now
        for name, (_, status, used, reset) in windows.items():
            if name == OVERAGE:
                continue
            scope = window_family(name)
            if scope is not None and scope != family:
                continue
            if reset is not None and reset <= now:
                continue  # rolled over since
            if (used is not None and used >= limit) or status == REJECTED:
                return True
        return False

    def view(self, account: str, now: float | None = None) -> AccountQuota:
        """Everything known about the account's windows (from memory; call :meth:`sync` first for the newest)."""
        self._settle()
        now = self._clock() if now is None else now
        windows = self._seen.get(account, {})
        top = self._top.get(account)
        observed = max([e[0] for e in windows.values()] + ([top[0]] if top else []), default=None)
        return AccountQuota(
            account=account,
            observed_at=observed,
            status=top[1] if top else None,
            representative_claim=top[2] if top else None,
            windows=[_window(name, windows[name], now) for name in sorted(windows, key=_order)],
        )

    def accounts(self) -> list[str]:
        self._settle()
        return sorted(self._seen)

    def forget(self, account: str) -> None:
        """Drop what this process knows (e.g. after a logout); others' copies age out with their TTL."""
        self._seen.pop(account, None)
        self._top.pop(account, None)
        self._own.pop(account, None)
        self._own_top.pop(account, None)
        self._dirty.discard(account)

    # -- sharing (off the request path) --------------------------------------------------

    def start(self) -> None:
        """Run :meth:`sync` every ``interval`` seconds on the running loop (idempotent; no loop: no-op)."""
        if self.backend is None or (self._task is not None and not self._task.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._task = loop.create_task(self._run(), name="claude-oauth-quotas")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.sync()

    async def sync(self) -> None:
        """Push this worker's new observations, pull everyone's. Never raises: sharing is best effort."""
        self._settle()
        if self.backend is None:
            return
        if self._sync_lock is None:
            self._sync_lock = asyncio.Lock()
        async with self._sync_lock:
            dirty, self._dirty = self._dirty, set()
            try:
                if dirty:
                    records = {a: _record(self._own_top.get(a), w) for a, w in self._own.items()}
                    await self.backend.push(self.worker, records, dirty)
                pulled = await self.backend.pull()
            except Exception as exc:
                self._dirty |= dirty
                now = time.monotonic()
                if now - self._last_error_logged > 60:
                    self._last_error_logged = now
                    log.warning("Claude OAuth: could not share quota figures (%s); this worker's view only",
                                type(exc).__name__ + (f": {exc}" if str(exc) else ""))
                return
            for account, shared in pulled.items():
                for data in shared:
                    parsed = _parse_record(data)
                    if parsed is not None:
                        self._merge(account, parsed[0], parsed[1])

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._dirty:
            await self.sync()
        if self.backend is not None:
            await self.backend.aclose()


def _window(name: str, entry: _Entry, now: float) -> WindowQuota:
    observed_at, status, used, reset = entry
    rolled = reset is not None and reset <= now
    return WindowQuota(
        name=name,
        model_family=None if name == OVERAGE else window_family(name),
        utilization=0.0 if rolled else used,
        status=None if rolled else status,
        reset=reset,
        observed_at=observed_at,
        rolled_over=rolled,
    )


async def read_shared(settings: Settings, accounts: Iterable[str], backend: QuotaBackend | None = None,
                      now: float | None = None) -> dict[str, AccountQuota]:
    """The shared view of ``accounts`` for a process that serves no requests (``litellm claude status``):
    one pull from Redis or the sidecar, then closed. Unreachable: empty views, never an error."""
    quotas = Quotas(settings, backend if backend is not None else backend_for(settings), worker="reader")
    try:
        await quotas.sync()
    finally:
        if quotas.backend is not None:
            await quotas.backend.aclose()
    return {name: quotas.view(name, now) for name in accounts}


# -- pools --------------------------------------------------------------------------------


def prefer(
    quotas: Quotas, accounts: Sequence[str], family: str | None = None, *, least_used: bool = False,
    now: float | None = None,
) -> list[str]:
    """``accounts`` (already in strategy order) re-ordered by what their quotas say.

    * ``least_used``: lowest ``5h`` utilization first (unknown counts as 0). The sort is
      stable, so accounts that tie keep the order they came in: rotate them as for
      round-robin before calling and ties take turns;
    * any strategy: accounts at or above the skip threshold go last (kept as a last
      resort rather than dropped: a nearly full account beats an immediate 429).
    """
    order = list(accounts)
    if least_used:
        order.sort(key=lambda a: quotas.utilization(a, "5h", now) or 0.0)
    below = [a for a in order if not quotas.above_threshold(a, family, now=now)]
    return below + [a for a in order if a not in below]


# -- text ----------------------------------------------------------------------------------


def _hours(seconds: float) -> str:
    if seconds < 3600:
        return f"{max(1, round(seconds / 60))} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def format_window(window: WindowQuota, now: float | None = None, width: int = 10) -> str:
    """``5h ██████░░░░ 62% · resets in 1.8 h`` (``—`` for an unknown utilization)."""
    now = time.time() if now is None else now
    used = window.utilization
    if used is None:
        gauge, percent = "░" * width, "  —"
    else:
        filled = min(width, max(0, round(used * width)))
        gauge, percent = "█" * filled + "░" * (width - filled), f"{round(used * 100):3d}%"
    text = f"{window.name:<9} {gauge} {percent}"
    if window.status and window.status != "allowed":
        text += f" ({window.status})"
    left = window.seconds_until_reset(now)
    if window.rolled_over:
        text += " · reset since last seen"
    elif left is not None:
        text += f" · resets in {_hours(left)}"
    return text
