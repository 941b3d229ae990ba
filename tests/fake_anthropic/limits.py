"""The unified rate-limit headers a subscription account gets on every Messages response.

research/protocol-2026.md §2.3: ``anthropic-ratelimit-unified-status`` / ``-reset`` /
``-representative-claim``, per window ``-5h-`` / ``-7d-`` / model-scoped ``-7d_opus-``,
``-7d_sonnet-``, ``-7d_oi-`` (Fable) × ``status`` / ``reset`` / ``utilization``
(/ ``surpassed-threshold``), the overage lane (``-overage-status``, ``rejected`` on an
ordinary account, ``-overage-reset`` at the start of the next month, ``-overage-in-use``,
``-overage-disabled-reason``) and ``-fallback-percentage``; ``retry-after`` on a quota 429.
A live 5-hour 429 (hermes-agent capture) had 5h rejected, 7d allowed, and an overage reset
days after the 5h reset: the shape of :func:`rejected_headers` for ``five_hour``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

PREFIX = "anthropic-ratelimit-unified-"
FIVE_HOURS = 5 * 3600
SEVEN_DAYS = 7 * 86400
WARNING_THRESHOLD = 0.75
QUOTA_MESSAGE = "This request would exceed your account's rate limit. Please try again later."

Profile = Literal["five_hour", "seven_day", "seven_day_opus", "seven_day_sonnet", "seven_day_oi"]
PROFILES: tuple[str, ...] = ("five_hour", "seven_day", "seven_day_opus", "seven_day_sonnet", "seven_day_oi")
# profile -> (header window, representative claim, model family it refuses or None for all)
_PROFILE: dict[str, tuple[str, str, str | None]] = {
    "five_hour": ("5h", "five_hour", None),
    "seven_day": ("7d", "seven_day", None),
    "seven_day_opus": ("7d_opus", "seven_day_opus", "opus"),
    "seven_day_sonnet": ("7d_sonnet", "seven_day_sonnet", "sonnet"),
    # Fable's weekly window; Claude Code labels its claim "seven_day_overage_included".
    "seven_day_oi": ("7d_oi", "seven_day_overage_included", "fable"),
}
_ALIASES = {"5h": "five_hour", "7d": "seven_day", "7d_opus": "seven_day_opus", "7d_sonnet": "seven_day_sonnet",
            "7d_oi": "seven_day_oi", "fable": "seven_day_oi"}  # fmt: skip


def profile_name(name: str) -> str:
    """A profile from its name or window alias (``7d_opus``); ValueError names the choices."""
    resolved = _ALIASES.get(name, name)
    if resolved not in _PROFILE:
        raise ValueError(f"unknown rate-limit profile {name!r}; one of {', '.join(PROFILES)}")
    return resolved


@dataclass
class Rejection:
    profile: str
    until: float


@dataclass
class AccountUsage:
    """One account's windows as the headers describe them. Utilization is 0..1."""

    anchor: float  # when its windows started counting
    five_hour: float = 0.07
    seven_day: float = 0.21
    overage_enabled: bool = False  # ordinary Pro/Max accounts: overage-status rejected
    overage_in_use: bool = False  # this request was billed as extra usage
    rejections: dict[str, Rejection] = field(default_factory=dict)

    def window_reset(self, period: float, now: float) -> int:
        elapsed = max(0.0, now - self.anchor)
        return math.ceil(self.anchor + (math.floor(elapsed / period) + 1) * period)

    def active(self, now: float) -> list[Rejection]:
        for name in [n for n, r in self.rejections.items() if r.until <= now]:
            del self.rejections[name]
        return list(self.rejections.values())

    def refusing(self, model_family: str, now: float) -> Rejection | None:
        """The rejection that refuses a request for this model family, if any (account-wide first)."""
        active = self.active(now)
        for rejection in active:
            if _PROFILE[rejection.profile][2] is None:
                return rejection
        return next((r for r in active if _PROFILE[r.profile][2] == model_family), None)


def _month_start_after(now: float) -> int:
    moment = datetime.fromtimestamp(now, UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp())


def _window(name: str, status: str, reset: int, utilization: float) -> dict[str, str]:
    headers = {f"{PREFIX}{name}-status": status, f"{PREFIX}{name}-reset": str(reset),
               f"{PREFIX}{name}-utilization": f"{utilization:.2f}"}  # fmt: skip
    if status != "rejected" and utilization >= WARNING_THRESHOLD:
        headers[f"{PREFIX}{name}-surpassed-threshold"] = str(WARNING_THRESHOLD)
    return headers


def _base(usage: AccountUsage, now: float) -> tuple[dict[str, str], dict[str, tuple[str, int, float]]]:
    """The overage lane and the account's windows (name -> status, reset, utilization), all allowed."""
    windows = {
        "5h": ("allowed", usage.window_reset(FIVE_HOURS, now), usage.five_hour),
        "7d": ("allowed", usage.window_reset(SEVEN_DAYS, now), usage.seven_day),
    }
    for rejection in usage.active(now):
        name = _PROFILE[rejection.profile][0]
        windows[name] = ("rejected", math.ceil(rejection.until), 1.0)
    top = {
        PREFIX + "overage-status": "allowed" if usage.overage_enabled or usage.overage_in_use else "rejected",
        PREFIX + "overage-reset": str(_month_start_after(now)),
        PREFIX + "fallback-percentage": "0.5",
    }
    if not (usage.overage_enabled or usage.overage_in_use):
        top[PREFIX + "overage-disabled-reason"] = "org_level_disabled"
    if usage.overage_in_use:
        top[PREFIX + "overage-in-use"] = "true"
    return top, windows


def allowed_headers(usage: AccountUsage, now: float) -> dict[str, str]:
    """Headers of a 200: the request went through, whatever else the account's windows say."""
    top, windows = _base(usage, now)
    # The claim is the 5-hour window unless the 7-day one is the closer to its limit and past the warning.
    claim, window = "five_hour", windows["5h"]
    if windows["7d"][2] >= WARNING_THRESHOLD and windows["7d"][2] > windows["5h"][2]:
        claim, window = "seven_day", windows["7d"]
    reset = window[1]
    warning = any(u >= WARNING_THRESHOLD for s, _, u in windows.values() if s != "rejected")
    headers = {PREFIX + "status": "allowed_warning" if warning else "allowed", PREFIX + "reset": str(reset),
               PREFIX + "representative-claim": claim, **top}  # fmt: skip
    for name, (status, window_reset, utilization) in windows.items():
        headers.update(_window(name, status, window_reset, utilization))
    return headers


def rejected_headers(usage: AccountUsage, rejection: Rejection, now: float) -> dict[str, str]:
    """Headers of a quota 429: the rejecting window is the representative claim; retry-after until it resets."""
    top, windows = _base(usage, now)
    _, claim, _ = _PROFILE[rejection.profile]
    reset = math.ceil(rejection.until)
    headers = {"retry-after": str(max(1, math.ceil(rejection.until - now))), PREFIX + "status": "rejected",
               PREFIX + "reset": str(reset), PREFIX + "representative-claim": claim, **top}  # fmt: skip
    for name, (status, window_reset, utilization) in windows.items():
        headers.update(_window(name, status, window_reset, utilization))
    return headers
