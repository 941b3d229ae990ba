"""Reading Anthropic's 429s: how long an account must rest, and why.

Subscription accounts carry "unified" limits over 5-hour and 7-day windows; a 429
says which window is exhausted (``anthropic-ratelimit-unified-representative-claim``)
and when it resets (``anthropic-ratelimit-unified-reset``, unix seconds). ``retry-after``
is the floor when those headers are missing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

DEFAULT_COOLDOWN_SECONDS = 60.0
_UNIFIED = "anthropic-ratelimit-unified"


class Cooldown(BaseModel):
    model_config = ConfigDict(frozen=True)

    until: float
    reason: str

    def retry_after(self, now: float | None = None) -> int:
        return max(1, int(self.until - (time.time() if now is None else now) + 0.999))


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def cooldown_from_headers(headers: Mapping[str, str], now: float | None = None) -> Cooldown:
    """The account is usable again when every rejected window has reset (and retry-after passed)."""
    now = time.time() if now is None else now
    lower = {k.lower(): v for k, v in headers.items()}
    candidates = []
    for name, value in lower.items():
        if name.startswith(_UNIFIED) and name.endswith("-reset"):
            window = name.removesuffix("-reset")  # "...-unified" itself, or "...-unified-5h" etc.
            if lower.get(f"{window}-status", "rejected") == "rejected" and (reset := _number(value)) and reset > now:
                candidates.append(reset)
    if (retry_after := _number(lower.get("retry-after"))) is not None:
        candidates.append(now + retry_after)
    until = max(candidates) if candidates else now + DEFAULT_COOLDOWN_SECONDS
    claim = lower.get(f"{_UNIFIED}-representative-claim")
    return Cooldown(until=until, reason=f"rate limited ({claim})" if claim else "rate limited")
