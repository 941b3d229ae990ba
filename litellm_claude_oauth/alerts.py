"""Alerts: tell the operator when an account needs them, once per account and condition per hour.

Conditions (:class:`Condition`): re-login required, refresh failing N times in a row,
every account of the pool cooling down, a window's utilization at or above
``CLAUDE_OAUTH_ALERT_UTILIZATION``, the refresh token ending within
``refresh_warning_days``, and a ban-like refusal (organization disabled, permission
errors: the request path stops using the account at once and calls :meth:`Alerts.notify`).

Delivery: LiteLLM's own alerting when the proxy has ``general_settings.alerting`` with
``slack`` or ``ms_teams`` (through ``proxy_logging_obj.alerting_handler``, so LiteLLM's
webhook URLs, alert-type routing and batching apply), and the plain
``CLAUDE_OAUTH_ALERT_WEBHOOK_URL`` (a JSON POST whose ``text`` is Slack-compatible) when
set. Every alert is also logged at WARNING.

De-duplication is across workers: ``SET key NX EX 3600`` in Redis when configured, else a
marker file (mtime under a file lock) in a directory next to the token file, so workers of
one host share it; if that fails too, per process.

Messages are redacted before they leave (:func:`redact`): never a token in an alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import httpx
from pydantic import BaseModel, ConfigDict

from .settings import Settings

if TYPE_CHECKING:
    from .manager import TokenManager
    from .quotas import Quotas, WindowQuota

log = logging.getLogger(__name__)

__all__ = ["Alert", "Alerts", "Condition", "FileDedup", "MemoryDedup", "RedisDedup", "redact"]

DEDUP_SECONDS = 3600.0
MONITOR_INTERVAL_SECONDS = 300.0
REDIS_PREFIX = "litellm:claude_oauth:alert"
Level = Literal["Low", "Medium", "High"]


class Condition(enum.StrEnum):
    RELOGIN_REQUIRED = "relogin_required"
    REFRESH_FAILING = "refresh_failing"
    POOL_COOLING_DOWN = "pool_cooling_down"
    UTILIZATION_HIGH = "utilization_high"
    REFRESH_TOKEN_EXPIRING = "refresh_token_expiring"
    ACCOUNT_REFUSED = "account_refused"  # ban-like: organization disabled, permission errors


LEVELS: dict[Condition, Level] = {
    Condition.RELOGIN_REQUIRED: "High",
    Condition.REFRESH_FAILING: "High",
    Condition.POOL_COOLING_DOWN: "High",
    Condition.UTILIZATION_HIGH: "Medium",
    Condition.REFRESH_TOKEN_EXPIRING: "Medium",
    Condition.ACCOUNT_REFUSED: "High",
}


class Alert(BaseModel):
    model_config = ConfigDict(frozen=True)

    condition: Condition
    account: str
    message: str
    level: Level
    at: float

    @property
    def text(self) -> str:
        """One Slack-compatible line."""
        return f"[Claude OAuth] {self.level}: account '{self.account}' ({self.condition.value}): {self.message}"

    def payload(self) -> dict[str, Any]:
        return {"text": self.text, **self.model_dump(mode="json")}


# Anthropic tokens (sk-ant-oat…, sk-ant-ort…, API keys), bearer values, JWT-like and any
# other long opaque run: an alert only ever needs names, counts and reasons.
_SECRETS = (
    re.compile(r"sk-ant-[A-Za-z0-9_\-]+"),
    re.compile(r"(?i)(bearer\s+)\S+"),
    re.compile(r"(?i)((?:access|refresh)[_ ]?token[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"),
    re.compile(r"[A-Za-z0-9_\-+/=.]{40,}"),
)


def redact(text: str) -> str:
    """``text`` with anything that looks like a credential replaced by ``[redacted]``."""
    for pattern in _SECRETS:
        text = pattern.sub(lambda m: (m.group(1) if m.re.groups else "") + "[redacted]", text)
    return " ".join(text.split())


# -- de-duplication ------------------------------------------------------------------------


class Dedup(Protocol):
    async def first(self, key: str, seconds: float) -> bool:
        """True for the first caller per ``key`` within ``seconds`` (across whatever this shares)."""


class MemoryDedup:
    def __init__(self, clock: Callable[[], float] = time.time):
        self._sent: dict[str, float] = {}
        self._clock = clock

    async def first(self, key: str, seconds: float) -> bool:
        now = self._clock()
        if now - self._sent.get(key, float("-inf")) < seconds:
            return False
        self._sent[key] = now
        return True


class RedisDedup:
    def __init__(self, redis: Any, prefix: str = REDIS_PREFIX):
        self._redis = redis
        self._prefix = prefix

    async def first(self, key: str, seconds: float) -> bool:
        return bool(await self._redis.set(f"{self._prefix}:{key}", "1", nx=True, ex=max(1, int(seconds))))


class FileDedup:
    """A marker file per key; its mtime is when the alert was last sent. Checked and touched under one file lock."""

    def __init__(self, directory: Path, clock: Callable[[], float] = time.time):
        self.directory = directory
        self._clock = clock

    def _first(self, key: str, seconds: float) -> bool:
        from filelock import FileLock

        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        marker = self.directory / re.sub(r"[^A-Za-z0-9._-]", "_", key)
        with FileLock(str(self.directory / ".lock"), timeout=5):
            now = self._clock()
            with contextlib.suppress(FileNotFoundError):
                if now - marker.stat().st_mtime < seconds:
                    return False
            marker.touch(mode=0o600)
            os.utime(marker, (now, now))
            return True

    async def first(self, key: str, seconds: float) -> bool:
        return await asyncio.to_thread(self._first, key, seconds)


def dedup_for(settings: Settings) -> Dedup:
    if settings.redis is not None:
        from redis.asyncio import Redis

        return RedisDedup(Redis.from_url(settings.redis.url.get_secret_value(), socket_timeout=2,
                                         socket_connect_timeout=2))
    return FileDedup(settings.token_file.with_name(settings.token_file.name + ".alerts"))


# -- delivery ------------------------------------------------------------------------------

Sender = Callable[[Alert], Awaitable[None]]


async def send_to_litellm(alert: Alert) -> bool:
    """Through LiteLLM's own alerting, when ``general_settings.alerting`` names slack or ms_teams."""
    from .litellm_api import loaded_proxy_alerting, send_proxy_alert

    logging_obj = loaded_proxy_alerting()
    if logging_obj is None:
        return False
    await send_proxy_alert(logging_obj, alert.text, alert.level)
    return True


async def send_to_webhook(url: str, alert: Alert, timeout: float = 10.0) -> None:
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
        response = await client.post(url, json=alert.payload())
    if response.status_code >= 300:
        raise RuntimeError(f"the alert webhook answered HTTP {response.status_code}")


# -- the alerts ------------------------------------------------------------------------------


class Alerts:
    """``await notify(condition, account, message)``: redacted, de-duplicated, delivered.

    ``send`` replaces the delivery (tests, or an embedding app); by default LiteLLM's
    alerting and/or the webhook of ``CLAUDE_OAUTH_ALERT_WEBHOOK_URL``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        send: Sender | None = None,
        dedup: Dedup | None = None,
        window: float = DEDUP_SECONDS,
        clock: Callable[[], float] = time.time,
    ):
        self.settings = settings
        self._send = send
        self._dedup = dedup or MemoryDedup(clock)
        self._fallback = MemoryDedup(clock)
        self.window = window
        self._clock = clock
        self._failures: dict[str, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._monitor: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> Alerts:
        kwargs.setdefault("dedup", dedup_for(settings))
        return cls(settings, **kwargs)

    async def notify(self, condition: Condition, account: str, message: str, *, level: Level | None = None) -> bool:
        """Send the alert unless the same account and condition alerted within the hour; True if sent."""
        alert = Alert(condition=Condition(condition), account=account, message=redact(message),
                      level=level or LEVELS[Condition(condition)], at=self._clock())
        key = f"{alert.condition.value}:{account}"
        try:
            first = await self._dedup.first(key, self.window)
        except Exception as exc:  # Redis down, unwritable directory: this process still de-duplicates
            log.debug("alert de-duplication unavailable (%s); per process only", type(exc).__name__)
            first = await self._fallback.first(key, self.window)
        if not first:
            return False
        log.warning("Claude OAuth alert: %s", alert.text)
        try:
            await self._deliver(alert)
        except Exception as exc:
            log.warning("Claude OAuth: could not deliver the alert for '%s' (%s): %s", account,
                        alert.condition.value, redact(str(exc)) or type(exc).__name__)
            return False
        return True

    async def _deliver(self, alert: Alert) -> None:
        if self._send is not None:
            await self._send(alert)
            return
        url = self.settings.alert_webhook_url
        errors: list[Exception] = []
        try:
            await send_to_litellm(alert)
        except Exception as exc:
            errors.append(exc)
        if url is not None:
            try:
                await send_to_webhook(url.get_secret_value(), alert)
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def notify_soon(self, condition: Condition, account: str, message: str, *, level: Level | None = None) -> None:
        """:meth:`notify` in the background, for synchronous callers (no running loop: dropped, logged)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.warning("Claude OAuth alert (not sent, no event loop): account '%s' %s: %s", account,
                        Condition(condition).value, redact(message))
            return
        task = loop.create_task(self.notify(condition, account, message, level=level))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- condition helpers the request path and the manager call ---------------------------

    def utilization_high(self, account: str, window: WindowQuota) -> None:
        """Quotas' ``on_high`` callback."""
        used = round((window.utilization or 0) * 100)
        reset = ""
        if (left := window.seconds_until_reset(self._clock())) is not None:
            reset = f"; resets in {left / 3600:.1f} h"
        self.notify_soon(Condition.UTILIZATION_HIGH, account,
                         f"the {window.name} window is {used}% used{reset}")

    def refresh_finished(self, account: str, ok: bool, error: str | None = None) -> None:
        """Count failed refreshes in a row (per process); alert when they reach ``alert_refresh_failures``."""
        if ok:
            self._failures.pop(account, None)
            return
        count = self._failures.get(account, 0) + 1
        self._failures[account] = count
        if count >= self.settings.alert_refresh_failures:
            self.notify_soon(Condition.REFRESH_FAILING, account,
                             f"{count} token refreshes in a row failed" + (f"; last: {error}" if error else ""))

    def refresh_failures(self, account: str) -> int:
        return self._failures.get(account, 0)

    # -- periodic checks -------------------------------------------------------------------

    async def check(self, manager: TokenManager, quotas: Quotas | None = None) -> list[Condition]:
        """Look at every stored account once; alert what needs it. Returns the conditions found (sent or not)."""
        found: list[Condition] = []
        names = await manager.accounts()
        now = self._clock()
        resting: dict[str, float | None] = {}  # account -> until (None: unusable, no end known)
        for name in names:
            status = await manager.status(name)
            if status.relogin_reason:
                resting[name] = None
                found.append(Condition.RELOGIN_REQUIRED)
                await self.notify(Condition.RELOGIN_REQUIRED, name,
                                  f"needs a new login ({status.relogin_reason}): {_login_hint(name)}")
            elif (left := status.refresh_expires_in_seconds) is not None and 0 < left <= \
                    self.settings.refresh_warning_seconds:
                found.append(Condition.REFRESH_TOKEN_EXPIRING)
                await self.notify(Condition.REFRESH_TOKEN_EXPIRING, name,
                                  f"the refresh token ends in {left / 86400:.1f} days: {_login_hint(name)}")
            # The store's cooldown (any worker's), or a ban-like refusal this worker saw.
            if status.cooldown_until is not None and status.cooldown_until > now:
                resting[name] = status.cooldown_until
            elif manager.health.unusable_reason(name):
                resting[name] = None
            if quotas is not None:
                for window in quotas.view(name, now).windows:
                    used = window.utilization
                    if window.name != "overage" and used is not None and used >= self.settings.alert_utilization:
                        found.append(Condition.UTILIZATION_HIGH)
                        self.utilization_high(name, window)
        members = list(self.settings.pool_accounts or names)
        # One account resting is that account's business (its cooldown shows in status); a pool
        # with nowhere left to send requests is the operator's.
        if len(members) > 1 and all(m in resting for m in members):
            found.append(Condition.POOL_COOLING_DOWN)
            soonest = min((until for m in members if (until := resting[m]) is not None), default=None)
            when = f"; the first is back in {(soonest - now) / 60:.0f} min" if soonest else ""
            await self.notify(Condition.POOL_COOLING_DOWN, "pool",
                              f"every account of the pool ({', '.join(members)}) is cooling down or unusable{when}")
        return found

    def start_monitor(self, manager: TokenManager, quotas: Quotas | None = None,
                      interval: float = MONITOR_INTERVAL_SECONDS) -> None:
        """Run :meth:`check` every ``interval`` seconds on the running loop (idempotent)."""
        if self._monitor is not None and not self._monitor.done():
            return
        with contextlib.suppress(RuntimeError):
            self._monitor = asyncio.get_running_loop().create_task(self._watch(manager, quotas, interval))

    async def _watch(self, manager: TokenManager, quotas: Quotas | None, interval: float) -> None:
        while True:
            try:
                if quotas is not None:
                    await quotas.sync()
                await self.check(manager, quotas)
            except Exception as exc:
                log.warning("Claude OAuth: alert check failed: %s", redact(str(exc)) or type(exc).__name__)
            await asyncio.sleep(interval)

    async def aclose(self) -> None:
        tasks = list(self._tasks) + ([self._monitor] if self._monitor else [])
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._monitor = None


def _login_hint(account: str) -> str:
    return "run `litellm claude login" + ("" if account == "default" else f" --account {account}") + "`"
