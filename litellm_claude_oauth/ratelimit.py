"""Anthropic's unified rate-limit headers: what an account has left, and how long it rests after a 429.

Subscription (OAuth) accounts carry "unified" limits, reported on every Messages
response as ``anthropic-ratelimit-unified-*`` headers:

* overall: ``-status`` (``allowed`` / ``allowed_warning`` / ``rejected``), ``-reset`` (unix
  seconds, of the ``-representative-claim``: ``five_hour``, ``seven_day``,
  ``seven_day_opus``, ``seven_day_sonnet``, ``seven_day_overage_included`` …);
* per window: ``-5h-``, ``-7d-`` (account-wide) and model-scoped ones such as ``-7d_oi-``,
  ``-7d_opus-`` × ``status`` / ``reset`` / ``utilization`` / ``surpassed-threshold``;
* the overage (extra usage) lane: ``-overage-status`` / ``-reset`` / ``-utilization`` /
  ``-in-use`` / ``-disabled-reason``; plus ``-fallback``, ``-fallback-percentage``,
  ``-upgrade-paths`` and the standard ``retry-after``.

Sources (research/protocol-2026.md §2.3): live captures in ``dkbjornn/hermes-agent``
``tests/agent/test_unified_usage_headers.py`` and ``test_unified_overage_flag.py``, the
production 429s in ``d4rken/clankermux`` ``packages/proxy/src/handlers/__tests__/``, and
``router-for-me/CLIProxyAPI`` ``internal/runtime/executor/helps/claude_ratelimit.go``.

Parsing never raises: a junk value is dropped, the rest of the headers still count.
"""

from __future__ import annotations

import functools
import math
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")

DEFAULT_COOLDOWN_SECONDS = 60.0
PREFIX = "anthropic-ratelimit-unified-"
REJECTED = "rejected"
ACCOUNT_WINDOWS = ("5h", "7d")

_WINDOW_NAME = re.compile(r"[0-9]+[a-z]+(?:_[a-z0-9_]+)?")
_WINDOW_FIELDS = frozenset({"status", "reset", "utilization", "surpassed-threshold"})
_LATEST_EPOCH = 4_102_444_800.0  # 2100-01-01: anything later is a unit mistake or junk
# A scope suffix is a model family, except these: "oi" ("overage included") is Fable's weekly
# window (CLIProxyAPI: "Fable-specific 7d_oi"; Claude Code 2.1.283 labels the matching claim
# seven_day_overage_included "Fable limit"). "oauth_apps" (seen in /api/oauth/usage) caps
# third-party apps as a whole, so for this plugin it is account-wide.
_SCOPE_FAMILY = {"oi": "fable", "overage_included": "fable"}
_ACCOUNT_WIDE_SCOPES = frozenset({"oauth_apps"})
_CLAIM_WINDOW = {"five_hour": "5h", "seven_day": "7d"}
_KNOWN_FAMILIES = ("opus", "sonnet", "haiku", "fable", "mythos")
_NOT_A_FAMILY = frozenset({"claude", "anthropic", "v", "latest", "us", "eu", "apac", "global", "m", "k"})
_QUOTA_BODY = "would exceed your account's rate limit"


def _float(value: str) -> float | None:
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _fraction(value: str) -> float | None:
    """Utilization as 0..1.

    The headers carry a fraction: "0.27", "1.0", even "1.01" just past a limit (hermes-agent
    live capture: "Wire sends 0..1"; clankermux 2026-09-07 429: ``5h-utilization: 1.01``).
    Only the /api/oauth/usage endpoint speaks percent (0..100), so a value above 1.5 is
    taken as percent in case the headers ever switch; the result is clamped to 0..1.
    """
    number = _float(value)
    if number is None or number < 0:
        return None
    if number > 1.5:
        number /= 100
    return min(number, 1.0)


def _epoch(value: str) -> float | None:
    """A reset time: unix seconds (as sent), unix milliseconds, RFC 3339 or an HTTP date."""
    number = _float(value)
    if number is not None:
        if number > 1e12:
            number /= 1000
    else:
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            return _http_date(value)
        number = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    return number if 0 < number < _LATEST_EPOCH else None


def _http_date(value: str) -> float | None:
    try:
        moment = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    stamp = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    return stamp if 0 < stamp < _LATEST_EPOCH else None


def _retry_at(value: str, now: float) -> float | None:
    """``retry-after`` (RFC 9110): delay seconds, or an HTTP date."""
    number = _float(value)
    if number is None:
        return _http_date(value)
    return now + number if number >= 0 else None


def _flag(value: str) -> bool | None:
    text = value.strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    return None


def _scope_family(scope: str) -> str | None:
    if not scope or scope in _ACCOUNT_WIDE_SCOPES:
        return None
    return _SCOPE_FAMILY.get(scope, scope)


def window_family(window: str) -> str | None:
    """The model family a window covers (``7d_opus`` → ``opus``, ``7d_oi`` → ``fable``), None if account-wide."""
    return _scope_family(window.lower().partition("_")[2])


def claim_family(claim: str | None) -> str | None:
    """The model family a representative claim covers (``seven_day_sonnet`` → ``sonnet``), None if account-wide."""
    claim = (claim or "").strip().lower()
    for period in ("five_hour_", "seven_day_"):
        if claim.startswith(period):
            return _scope_family(claim.removeprefix(period))
    return None


@functools.lru_cache(maxsize=256)  # every request asks; a proxy serves a handful of model ids
def model_family(model_id: str) -> str:
    """The family of a model id: ``claude-opus-4-8`` → ``opus``, ``claude-3-5-haiku-20241022`` → ``haiku``.

    Provider prefixes (``anthropic/``), Bedrock-style ids and ``[1m]`` suffixes are ignored;
    an unknown id gives its first word that is not "claude".
    """
    name = model_id.strip().lower().rsplit("/", 1)[-1]
    words = re.findall(r"[a-z]+", name)
    for word in words:
        if word in _KNOWN_FAMILIES:
            return word
    return next((w for w in words if w not in _NOT_A_FAMILY), name or "unknown")


class Window(BaseModel):
    """One limit window, e.g. ``5h``, ``7d`` or the model-scoped ``7d_oi``. Utilization is 0..1."""

    model_config = ConfigDict(frozen=True)

    name: str
    status: str | None = None
    reset: float | None = None
    utilization: float | None = None
    surpassed_threshold: float | None = None

    @property
    def rejected(self) -> bool:
        return self.status == REJECTED

    @property
    def model_family(self) -> str | None:
        return window_family(self.name)

    @property
    def model_scoped(self) -> bool:
        return self.model_family is not None

    def seconds_until_reset(self, now: float | None = None) -> float | None:
        if self.reset is None:
            return None
        return max(0.0, self.reset - (time.time() if now is None else now))


class Overage(BaseModel):
    """The extra-usage lane. It describes billing, not the plan's windows: it never rests an account."""

    model_config = ConfigDict(frozen=True)

    status: str | None = None
    reset: float | None = None
    utilization: float | None = None
    in_use: bool | None = None
    disabled_reason: str | None = None


class RateLimitState(BaseModel):
    """Everything one response said about the account's unified limits."""

    model_config = ConfigDict(frozen=True)

    status: str | None = None
    reset: float | None = None
    representative_claim: str | None = None
    windows: tuple[Window, ...] = ()
    overage: Overage = Overage()
    fallback: str | None = None
    fallback_percentage: float | None = None
    upgrade_paths: tuple[str, ...] = ()
    retry_at: float | None = None  # absolute time from ``retry-after``

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], now: float | None = None) -> RateLimitState | None:
        """The state, or None when the response has no ``anthropic-ratelimit-unified-*`` header at all."""
        now = time.time() if now is None else now
        top: dict[str, str] = {}
        windows: dict[str, dict[str, str]] = {}
        retry_after: str | None = None
        for key, value in headers.items():
            name = key.lower()
            if not name.startswith(PREFIX):
                if name == "retry-after":
                    retry_after = value
                continue
            if not isinstance(value, str):
                continue
            rest = name[len(PREFIX):]
            # "5h-status", "7d_oi-surpassed-threshold"; "overage-status" is no window (no digit first).
            window, _, field = rest.partition("-")
            if field in _WINDOW_FIELDS and _WINDOW_NAME.fullmatch(window):
                windows.setdefault(window, {})[field] = value
            else:
                top[rest] = value
        if not top and not windows:
            return None
        return cls(
            status=_status(top.get("status")),
            reset=_maybe(_epoch, top.get("reset")),
            representative_claim=_status(top.get("representative-claim")),
            windows=tuple(_window(name, fields) for name, fields in sorted(windows.items(), key=_window_order)),
            overage=Overage(
                status=_status(top.get("overage-status")),
                reset=_maybe(_epoch, top.get("overage-reset")),
                utilization=_maybe(_fraction, top.get("overage-utilization")),
                in_use=_maybe(_flag, top.get("overage-in-use")),
                disabled_reason=_status(top.get("overage-disabled-reason")),
            ),
            fallback=_status(top.get("fallback")),
            fallback_percentage=_maybe(_fraction, top.get("fallback-percentage")),
            upgrade_paths=tuple(p for p in (top.get("upgrade-paths") or "").replace(" ", "").lower().split(",") if p),
            retry_at=_retry_at(retry_after, now) if isinstance(retry_after, str) else None,
        )

    def window(self, name: str) -> Window | None:
        return next((w for w in self.windows if w.name == name), None)

    @property
    def rejected(self) -> bool:
        return self.status == REJECTED

    @property
    def claim_family(self) -> str | None:
        return claim_family(self.representative_claim)

    @property
    def account_windows(self) -> tuple[Window, ...]:
        return tuple(w for w in self.windows if not w.model_scoped)

    @property
    def model_windows(self) -> tuple[Window, ...]:
        return tuple(w for w in self.windows if w.model_scoped)


def _maybe(parse: Callable[[str], T | None], value: str | None) -> T | None:
    return None if value is None else parse(value)


def _status(value: str | None) -> str | None:
    return (value.strip().lower() or None) if value is not None else None


def _window(name: str, fields: dict[str, str]) -> Window:
    return Window(
        name=name,
        status=_status(fields.get("status")),
        reset=_maybe(_epoch, fields.get("reset")),
        utilization=_maybe(_fraction, fields.get("utilization")),
        surpassed_threshold=_maybe(_fraction, fields.get("surpassed-threshold")),
    )


def _window_order(item: tuple[str, dict[str, str]]) -> tuple[int, str]:
    name = item[0]
    return (ACCOUNT_WINDOWS.index(name) if name in ACCOUNT_WINDOWS else len(ACCOUNT_WINDOWS), name)


class Cooldown(BaseModel):
    """Rest an account (``model_family`` None) or only its requests for one model family until ``until``."""

    model_config = ConfigDict(frozen=True)

    until: float
    reason: str
    model_family: str | None = None

    def retry_after(self, now: float | None = None) -> int:
        return max(1, int(self.until - (time.time() if now is None else now) + 0.999))

    def covers(self, model: str | None) -> bool:
        """Whether a request for ``model`` must wait (an account-wide cooldown covers every model)."""
        return self.model_family is None or (model is not None and model_family(model) == self.model_family)


def cooldown_for_429(headers: Mapping[str, str], body_text: str = "", now: float | None = None) -> Cooldown | None:
    """How long a 429 rests the account, or one model family of it; None when it is not about quota.

    * No ``anthropic-ratelimit-unified-*`` header: not quota. The identity gate ("Error"),
      "Extra usage is required for long context requests.", "Usage credits are required…"
      and transient "Rate limited" arrive this way (protocol-2026 §2.2/§2.3, D4), and a 529
      is not a 429 at all. Resting the account or walking the pool would not help.
    * ``5h`` / ``7d`` explicitly ``rejected``: the whole account, until the latest of those
      windows' resets, and of the overall reset and ``retry-after`` when the representative
      claim is account-wide too (otherwise those two describe a model-scoped window:
      clankermux's 2026-09-07 429 had 5h rejected but ``retry-after: 472373`` for 7d_oi).
    * Only a model-scoped window rejected (``7d_oi``, ``7d_opus`` …), or the overall status
      rejected with a model-scoped claim: that model family only (CLIProxyAPI: "A Fable-only
      7d_oi rejection remains model-scoped when both shared windows are explicitly allowed").
    * Only the overall status rejected: the account, until the representative reset, except
      for an ``overage`` claim (its reset is the billing period's) or when 5h and 7d both say
      allowed: then a short rest only.
    * ``overage-*`` never sets or extends a rest, and a window with a reset but no status is
      not rejected (audit L11).
    * Unified headers without any rejection (e.g. ``status: allowed`` plus "Rate limited"):
      Anthropic says the plan has room, so this is server throttling ("Server is temporarily
      limiting requests (not your usage limit)", claude-code #71670) or a request-scoped
      refusal: None, unless the body is the quota message itself, then a short rest
      (``retry-after`` or 60 s) since no window says how long.
    """
    now = time.time() if now is None else now
    state = RateLimitState.from_headers(headers, now)
    if state is None:
        return None

    def future(*times: float | None) -> list[float]:
        return [t for t in times if t is not None and t > now]

    def rest(candidates: list[float], what: str, family: str | None = None) -> Cooldown:
        until = max(candidates) if candidates else now + DEFAULT_COOLDOWN_SECONDS
        scope = f"; {family} models only" if family else ""
        return Cooldown(until=until, reason=f"rate limited ({what}{scope})", model_family=family)

    scoped_claim = state.claim_family
    account_claim = scoped_claim is None and state.representative_claim != "overage"
    shared = [w for w in state.account_windows if w.rejected]
    if shared:
        candidates = future(*(w.reset for w in shared))
        if account_claim:
            candidates += future(state.reset if state.rejected else None, state.retry_at)
        what = state.representative_claim if account_claim and state.representative_claim else shared[0].name
        return rest(candidates, what)
    scoped = [w for w in state.model_windows if w.rejected]
    if scoped or (state.rejected and scoped_claim):
        family = scoped_claim or scoped[0].model_family
        own = [w for w in scoped if w.model_family == family]
        candidates = future(*(w.reset for w in own))
        if not candidates and scoped_claim == family:
            candidates = future(state.reset if state.rejected else None)
        candidates = candidates or future(state.retry_at)
        claim = state.representative_claim
        return rest(candidates, claim if scoped_claim == family and claim else own[0].name, family)
    if state.rejected:
        allowed = {w.name for w in state.account_windows if w.status in ("allowed", "allowed_warning")}
        if not account_claim or allowed.issuperset(ACCOUNT_WINDOWS):
            # Not a plan window: an "overage" claim (its reset is the billing period's) or both
            # plan windows saying "allowed" (CLIProxyAPI: an overage-only rejection). A short rest.
            return rest([], state.representative_claim or "overage")
        return rest(future(state.reset, state.retry_at), state.representative_claim or "unified")
    if _QUOTA_BODY in body_text.lower():
        return rest(future(state.retry_at), state.representative_claim or "unified")
    return None
