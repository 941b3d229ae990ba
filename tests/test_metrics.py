"""Prometheus output, parsed with prometheus_client's own parser: events, per-account state, multiprocess sums."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from litellm_claude_oauth import metrics
from litellm_claude_oauth.manager import AccountStatus, TokenManager
from litellm_claude_oauth.quotas import Quotas
from litellm_claude_oauth.ratelimit import Cooldown
from litellm_claude_oauth.settings import Settings
from litellm_claude_oauth.store import build_store
from litellm_claude_oauth.tokens import TokenSet

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: bytes) -> tuple[dict[str, str], Samples]:
    """(family name → type, (sample name, sorted labels) → value)."""
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text.decode()):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return types, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_event_counters_and_the_refresh_histogram() -> None:
    _, before = parse(metrics.render([], multiproc=""))
    metrics.refresh_finished("ok", 0.3)
    metrics.refresh_finished("ok", 1.7)
    metrics.refresh_finished("invalid_grant", 0.2)
    metrics.refresh_finished("something odd", 0.1)  # counted as error, not a new label
    metrics.upstream_status("alice", 429)
    metrics.upstream_status("alice", 429)
    metrics.upstream_status("bob", 401)
    metrics.upstream_status("bob", 200)
    metrics.passthrough_request()
    types, after = parse(metrics.render([], multiproc=""))

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("claude_oauth_refreshes_total", result="ok") == 2
    assert delta("claude_oauth_refreshes_total", result="invalid_grant") == 1
    assert delta("claude_oauth_refreshes_total", result="error") == 1
    assert ("claude_oauth_refreshes_total", (("result", "something odd"),)) not in after
    assert delta("claude_oauth_refresh_duration_seconds_count") == 4
    assert delta("claude_oauth_refresh_duration_seconds_sum") == pytest.approx(2.3)
    assert delta("claude_oauth_refresh_duration_seconds_bucket", le="0.25") == 2
    assert delta("claude_oauth_refresh_duration_seconds_bucket", le="2.5") == 4
    assert delta("claude_oauth_upstream_responses_total", account="alice", code="429") == 2
    assert delta("claude_oauth_upstream_responses_total", account="bob", code="401") == 1
    assert delta("claude_oauth_passthrough_requests_total") == 1
    assert types["claude_oauth_refreshes"] == "counter"
    assert types["claude_oauth_refresh_duration_seconds"] == "histogram"


async def test_account_state_from_a_real_manager(env: dict[str, str]) -> None:
    settings = Settings.from_env(env)
    manager = TokenManager(settings, build_store(settings))
    now = time.time()
    for name, extra in (("alice", {"refresh_expires_at": now + 2 * 86400}), ("bob", {})):
        tokens = TokenSet(access_token=SecretStr("sk-ant-oat01-" + name * 20), refresh_token=SecretStr("r-" + name),
                          expires_at=now + 3600, **extra)
        await manager.import_tokens(tokens, name)
    await manager.store.update("bob", lambda r: r.model_copy(update={"relogin_reason": "invalid_grant"}))
    await manager.health.cool_down("alice", Cooldown(until=now + 600, reason="rate limited (five_hour)"))
    await manager.health.cool_down("alice", Cooldown(until=now + 7200, reason="7d_opus", model_family="opus"))
    quotas = Quotas(settings, None)
    quotas.observe("alice", {
        "anthropic-ratelimit-unified-5h-utilization": "0.62",
        "anthropic-ratelimit-unified-5h-reset": str(int(now + 6480)),
        "anthropic-ratelimit-unified-7d_opus-utilization": "1.0",
        "anthropic-ratelimit-unified-overage-utilization": "0.1",
    })

    states = await metrics.snapshot(manager, quotas)
    text = metrics.render(states, now, multiproc="")
    types, samples = parse(text)

    assert value(samples, "claude_oauth_account_logged_in", account="alice") == 1
    assert value(samples, "claude_oauth_relogin_required", account="alice") == 0
    assert value(samples, "claude_oauth_relogin_required", account="bob") == 1
    assert value(samples, "claude_oauth_access_token_expires_in_seconds", account="alice") == pytest.approx(3600, abs=2)
    assert value(samples, "claude_oauth_refresh_token_expires_in_seconds", account="alice") == pytest.approx(
        2 * 86400, abs=2)
    # bob's refresh token has no recorded end: the configured default lifetime applies.
    assert value(samples, "claude_oauth_refresh_token_expires_in_seconds", account="bob") > 20 * 86400
    assert value(samples, "claude_oauth_cooldown_remaining_seconds", account="alice", model_family="") == \
        pytest.approx(600, abs=2)
    assert value(samples, "claude_oauth_cooldown_remaining_seconds", account="alice", model_family="opus") == \
        pytest.approx(7200, abs=2)
    assert value(samples, "claude_oauth_cooldown_remaining_seconds", account="bob", model_family="") == 0
    assert value(samples, "claude_oauth_quota_utilization_ratio", account="alice", window="5h") == 0.62
    assert value(samples, "claude_oauth_quota_utilization_ratio", account="alice", window="7d_opus") == 1.0
    assert value(samples, "claude_oauth_quota_utilization_ratio", account="alice", window="overage") == 0.1
    assert value(samples, "claude_oauth_quota_reset_in_seconds", account="alice", window="5h") == \
        pytest.approx(6480, abs=2)
    gauges = {"account_logged_in", "relogin_required", "access_token_expires_in_seconds",
              "refresh_token_expires_in_seconds", "cooldown_remaining_seconds", "quota_utilization_ratio",
              "quota_reset_in_seconds"}
    assert {name: types[f"claude_oauth_{name}"] for name in gauges} == dict.fromkeys(gauges, "gauge")
    assert b"sk-ant-" not in text and b"r-alice" not in text
    await manager.aclose()


def test_names_follow_prometheus_conventions() -> None:
    status = AccountStatus(account="a", logged_in=True, expires_at=1.0, refresh_expires_at=2.0, store="x",
                           encrypted=True)
    metrics.refresh_finished("ok", 0.1)
    metrics.upstream_status("a", 200)
    types, samples = parse(metrics.render([metrics.AccountState(status=status)], 0.0, multiproc=""))
    assert types and all(name.startswith("claude_oauth_") for name in types)
    for name, kind in types.items():
        if kind == "counter":
            assert any(s == f"{name}_total" for s, _ in samples), name
        elif kind == "histogram" or name.endswith(("expires_in_seconds", "remaining_seconds", "reset_in_seconds")):
            assert name.endswith("_seconds"), name
    # Base units only: no minutes, hours, days, milliseconds or percent in any name.
    assert not any(unit in name for name in types for unit in ("_ms", "minutes", "hours", "days", "percent"))
    assert "claude_oauth_quota_utilization_ratio" in types


CHILD = """
from litellm_claude_oauth import metrics
import sys
for _ in range(int(sys.argv[1])):
    metrics.refresh_finished("ok", 0.4)
    metrics.upstream_status("alice", 429)
metrics.passthrough_request()
"""

FOREIGN = """
from prometheus_client import Counter
Counter("litellm_requests_metric", "LiteLLM's own metric, sharing the directory").inc()
"""


def test_multiprocess_workers_add_up(tmp_path: Path) -> None:
    directory = tmp_path / "prom"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    for count, script in (("3", CHILD), ("4", CHILD), ("0", FOREIGN)):
        subprocess.run([sys.executable, "-c", script, count], env=env, check=True, timeout=120)
    assert len(list(directory.glob("counter_*.db"))) == 3  # one file per process

    types, samples = parse(metrics.render([], 0.0, multiproc=str(directory)))
    assert value(samples, "claude_oauth_refreshes_total", result="ok") == 7
    assert value(samples, "claude_oauth_upstream_responses_total", account="alice", code="429") == 7
    assert value(samples, "claude_oauth_passthrough_requests_total") == 2
    assert value(samples, "claude_oauth_refresh_duration_seconds_count") == 7
    assert value(samples, "claude_oauth_refresh_duration_seconds_sum") == pytest.approx(2.8)
    assert not any(name.startswith("litellm") for name in types)  # only our families
    # The environment variable is what the route uses when no directory is passed.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    try:
        assert metrics.multiprocess_dir() == str(directory)
        _, again = parse(metrics.render([], 0.0))
        assert value(again, "claude_oauth_refreshes_total", result="ok") == 7
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
