"""Prometheus metrics, served at ``/auth/claude/oauth/metrics`` (see routes.py).

Two kinds:

* **events** counted where they happen, with tiny functions the request path and the
  manager call (:func:`refresh_finished`, :func:`upstream_status`,
  :func:`passthrough_request`): counters and a histogram of ``prometheus_client``;
* **state** read at scrape time (:func:`snapshot` then :func:`render`): token expiry,
  re-login, cooldowns and quota utilization per account. They describe accounts, not
  workers: the store and the shared quota view hold them, so any worker that answers
  the scrape reports the same values and nothing has to be summed.

Several workers (``litellm --num_workers N``): each worker counts its own events. Set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory writable by the proxy (cleared at each
start) before the proxy starts; ``prometheus_client`` then keeps every worker's counters in
files there and a scrape of any worker sums them (``MultiProcessCollector``). Without it the
plugin works the same, but a scrape shows only the counters of the worker that answered.
Only ``claude_oauth_*`` families are served here, even if LiteLLM's own metrics share the
directory.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel

from .quotas import OVERAGE, AccountQuota
from .status import AccountStatus

if TYPE_CHECKING:
    from .manager import TokenManager
    from .quotas import Quotas

__all__ = [
    "CONTENT_TYPE",
    "AccountState",
    "multiprocess_dir",
    "passthrough_request",
    "refresh_finished",
    "render",
    "snapshot",
    "upstream_status",
]

PREFIX = "claude_oauth_"
# The classic text format, which every Prometheus version reads; recent prometheus_client
# labels its output version 1.0.0, but our names never need that version's escaping.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Results refresh_finished() expects; anything else is counted as "error".
REFRESH_RESULTS = frozenset({"ok", "invalid_grant", "rate_limited", "error", "adopted"})

_EVENTS = CollectorRegistry(auto_describe=True)
REFRESHES = Counter(
    "claude_oauth_refreshes", "Token refreshes by result (ok, invalid_grant, rate_limited, error, adopted)",
    ["result"], registry=_EVENTS,
)
REFRESH_SECONDS = Histogram(
    "claude_oauth_refresh_duration_seconds", "How long a token refresh took, token endpoint round trips included",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0), registry=_EVENTS,
)
UPSTREAM = Counter(
    "claude_oauth_upstream_responses", "Anthropic Messages API responses by account and HTTP status",
    ["account", "code"], registry=_EVENTS,
)
PASSTHROUGH = Counter(
    "claude_oauth_passthrough_requests", "Requests sent with the client's own Anthropic credential", registry=_EVENTS,
)


def refresh_finished(result: str, seconds: float) -> None:
    """One refresh ended: ``result`` is ok / invalid_grant / rate_limited / error / adopted."""
    REFRESHES.labels(result if result in REFRESH_RESULTS else "error").inc()
    REFRESH_SECONDS.observe(max(0.0, seconds))


def upstream_status(account: str, status: int) -> None:
    """An upstream response for ``account`` (every status: 401 and 429 are the ones to watch)."""
    _upstream(account, status).inc()


@functools.cache
def _upstream(account: str, status: int) -> Counter:
    # Every response counts here; labels() validates and locks each time for the same few children.
    return UPSTREAM.labels(account, str(status))


def passthrough_request() -> None:
    PASSTHROUGH.inc()


def multiprocess_dir() -> str | None:
    # prometheus_client still reads the lower-case name its older releases documented.
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir") or None  # noqa: SIM112


# -- state, at scrape time ---------------------------------------------------------------------


class AccountState(BaseModel):
    status: AccountStatus
    quota: AccountQuota | None = None


async def snapshot(manager: TokenManager, quotas: Quotas | None = None) -> list[AccountState]:
    """Every stored account's status and quota view (reads the store; never on the request path)."""
    if quotas is not None:
        await quotas.sync()
    states = []
    for name in await manager.accounts():
        status = await manager.status(name)
        states.append(AccountState(status=status, quota=quotas.view(name) if quotas is not None else None))
    return states


class _StateCollector(Collector):
    def __init__(self, states: Sequence[AccountState], now: float):
        self._states = states
        self._now = now

    def collect(self) -> Iterator[Metric]:
        now = self._now
        logged_in = GaugeMetricFamily(f"{PREFIX}account_logged_in", "1 if the account has stored tokens",
                                      labels=["account"])
        relogin = GaugeMetricFamily(f"{PREFIX}relogin_required", "1 if the account needs a new browser login",
                                    labels=["account"])
        access = GaugeMetricFamily(f"{PREFIX}access_token_expires_in_seconds",
                                   "Seconds until the stored access token expires (negative: expired)",
                                   labels=["account"])
        refresh = GaugeMetricFamily(f"{PREFIX}refresh_token_expires_in_seconds",
                                    "Seconds until the refresh token's lifetime ends (log in again before)",
                                    labels=["account"])
        cooldown = GaugeMetricFamily(f"{PREFIX}cooldown_remaining_seconds",
                                     "Seconds the account (model_family=\"\") or one model family rests after a 429",
                                     labels=["account", "model_family"])
        utilization = GaugeMetricFamily(f"{PREFIX}quota_utilization_ratio",
                                        "Used fraction of a rate-limit window, 0..1, as Anthropic last reported it",
                                        labels=["account", "window"])
        reset = GaugeMetricFamily(f"{PREFIX}quota_reset_in_seconds", "Seconds until a rate-limit window resets",
                                  labels=["account", "window"])
        for state in self._states:
            s, name = state.status, state.status.account
            logged_in.add_metric([name], 1.0 if s.logged_in else 0.0)
            if not s.logged_in:
                continue
            relogin.add_metric([name], 1.0 if s.relogin_reason else 0.0)
            if s.expires_at is not None:
                access.add_metric([name], s.expires_at - now)
            if s.refresh_expires_at is not None:
                refresh.add_metric([name], s.refresh_expires_at - now)
            cooldown.add_metric([name, ""], max(0.0, (s.cooldown_until or now) - now))
            for family, until in sorted(s.model_cooldowns.items()):
                cooldown.add_metric([name, family], max(0.0, until - now))
            for window in state.quota.windows if state.quota else []:
                if window.utilization is not None:
                    utilization.add_metric([name, window.name], window.utilization)
                if window.name != OVERAGE and (left := window.seconds_until_reset(now)) is not None:
                    reset.add_metric([name, window.name], left)
        yield from (logged_in, relogin, access, refresh, cooldown, utilization, reset)


class _Ours(Collector):
    """Only the ``claude_oauth_*`` families of another collector (the multiprocess directory is shared)."""

    def __init__(self, inner: Collector):
        self._inner = inner

    def collect(self) -> Iterable[Metric]:
        return [m for m in self._inner.collect() if m.name.startswith(PREFIX)]


def render(states: Sequence[AccountState], now: float | None = None, *, multiproc: str | None = None) -> bytes:
    """The Prometheus text exposition: event counters (summed over workers in multiprocess mode) and state gauges.

    ``multiproc``: the multiprocess directory; None reads ``PROMETHEUS_MULTIPROC_DIR``, ``""`` means this process only.
    """
    registry = CollectorRegistry(auto_describe=False)
    directory = multiproc if multiproc is not None else multiprocess_dir()
    if directory:
        from prometheus_client.multiprocess import MultiProcessCollector

        registry.register(_Ours(MultiProcessCollector(None, path=directory)))  # type: ignore[no-untyped-call]
    else:
        registry.register(_Ours(_EVENTS))
    registry.register(_StateCollector(states, time.time() if now is None else now))
    return generate_latest(registry)
