"""Quota view: header parsing into per-window figures, merging across workers, thresholds, pool order."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from litellm_claude_oauth.quotas import (
    FileQuotaBackend,
    Quotas,
    RedisQuotaBackend,
    WindowQuota,
    backend_for,
    format_window,
    prefer,
    read_shared,
    sidecar_directory,
)
from litellm_claude_oauth.settings import Settings

from .backends import TEST_REDIS_URL

NOW = 1_800_000_000.0
P = "anthropic-ratelimit-unified-"


def headers(now: float = NOW, **windows: float) -> dict[str, str]:
    """Unified headers as a 200 carries them: ``five_hour=0.62`` etc. (window name → utilization)."""
    names = {"five_hour": "5h", "seven_day": "7d", "opus": "7d_opus", "fable": "7d_oi"}
    resets = {"5h": now + 1.8 * 3600, "7d": now + 3 * 86400, "7d_opus": now + 4 * 86400, "7d_oi": now + 5 * 86400}
    out = {f"{P}status": "allowed", f"{P}representative-claim": "five_hour", "content-type": "application/json"}
    for key, used in windows.items():
        name = names[key]
        out[f"{P}{name}-utilization"] = str(used)
        out[f"{P}{name}-reset"] = str(int(resets[name]))
        out[f"{P}{name}-status"] = "allowed_warning" if used >= 0.8 else "allowed"
    return out


def quotas(settings: Settings | None = None, backend: Any = None, **kwargs: Any) -> Quotas:
    return Quotas(settings or Settings(), backend, clock=lambda: NOW, **kwargs)


# --- parsing ------------------------------------------------------------------------------


def test_every_window_of_a_200_is_kept_with_utilization_status_and_reset() -> None:
    q = quotas()
    h = headers(five_hour=0.62, seven_day=0.3, opus=0.97, fable=0.1)
    h |= {f"{P}overage-status": "rejected", f"{P}overage-disabled-reason": "org_level_disabled",
          f"{P}overage-reset": str(int(NOW + 20 * 86400))}
    state = q.observe("alice", h, NOW)
    assert state is not None and state.window("5h") is not None

    view = q.view("alice")
    assert [w.name for w in view.windows] == ["5h", "7d", "7d_oi", "7d_opus", "overage"]
    five = view.window("5h")
    assert five is not None
    assert (five.utilization, five.status, five.reset, five.observed_at) == (0.62, "allowed", int(NOW + 6480), NOW)
    assert five.model_family is None and five.seconds_until_reset(NOW) == pytest.approx(6480)
    opus = view.window("7d_opus")
    assert opus is not None and opus.model_family == "opus" and opus.status == "allowed_warning"
    assert view.window("7d_oi").model_family == "fable"  # type: ignore[union-attr]
    overage = view.window("overage")
    assert overage is not None and overage.status == "rejected" and overage.utilization is None
    assert view.status == "allowed" and view.representative_claim == "five_hour" and view.observed_at == NOW
    assert q.utilization("alice") == 0.62 and q.utilization("alice", "7d") == 0.3
    assert q.utilization("alice", "7d_sonnet") is None and q.utilization("bob") is None


def test_a_response_without_unified_headers_changes_nothing() -> None:
    q = quotas()
    assert q.observe("alice", {"content-type": "application/json", "retry-after": "5"}, NOW) is None
    assert q.view("alice").windows == [] and q.accounts() == []


def test_a_partial_response_keeps_the_other_windows_and_a_junk_value_is_dropped() -> None:
    q = quotas()
    q.observe("alice", headers(five_hour=0.2, seven_day=0.5), NOW)
    q.observe("alice", {f"{P}5h-utilization": "0.4", f"{P}7d-utilization": "lots"}, NOW + 60)
    assert q.utilization("alice", "5h") == 0.4
    assert q.view("alice").window("5h").observed_at == NOW + 60  # type: ignore[union-attr]
    # "lots" is no number and the report said nothing else about 7d: the figure seen before stays.
    assert q.utilization("alice", "7d") == 0.5
    assert q.view("alice").window("7d").observed_at == NOW  # type: ignore[union-attr]


def test_after_its_reset_a_window_reads_as_rolled_over_at_zero() -> None:
    q = quotas()
    q.observe("alice", headers(five_hour=0.99), NOW)
    later = NOW + 2 * 3600  # past the 5h reset (1.8 h)
    assert q.utilization("alice", "5h", now=later) == 0.0
    window = q.view("alice", now=later).window("5h")
    assert window is not None and window.rolled_over and window.utilization == 0.0 and window.status is None
    assert not q.above_threshold("alice", now=later)
    assert "reset since last seen" in format_window(window, later)


def test_format_window_draws_a_bar_with_the_reset() -> None:
    window = WindowQuota(name="5h", utilization=0.62, status="allowed", reset=NOW + 1.8 * 3600, observed_at=NOW)
    assert format_window(window, NOW) == "5h        ██████░░░░  62% · resets in 1.8 h"
    warn = WindowQuota(name="7d", utilization=0.91, status="allowed_warning", reset=NOW + 3 * 86400, observed_at=NOW)
    assert format_window(warn, NOW, width=5) == "7d        █████  91% (allowed_warning) · resets in 3.0 d"
    unknown = WindowQuota(name="overage", status="rejected", observed_at=NOW)
    assert format_window(unknown, NOW, width=4) == "overage   ░░░░   — (rejected)"


# --- thresholds and pools -----------------------------------------------------------------


def test_threshold_covers_account_windows_and_only_the_requested_family() -> None:
    q = quotas(Settings.from_env({"CLAUDE_OAUTH_QUOTA_THRESHOLD": "0.9"}))
    q.observe("alice", headers(five_hour=0.91, seven_day=0.2), NOW)
    q.observe("bob", headers(five_hour=0.1, seven_day=0.2, opus=0.95), NOW)
    q.observe("carol", headers(five_hour=0.89, seven_day=0.2), NOW)
    assert q.above_threshold("alice") and q.above_threshold("alice", "sonnet")
    assert not q.above_threshold("bob") and not q.above_threshold("bob", "sonnet")
    assert q.above_threshold("bob", "opus")
    assert not q.above_threshold("carol")
    assert q.above_threshold("carol", threshold=0.85)
    assert not q.above_threshold("nobody")


def test_default_threshold_is_95_percent_and_a_rejected_window_counts() -> None:
    q = quotas()
    q.observe("a", headers(five_hour=0.94), NOW)
    q.observe("b", headers(five_hour=0.95), NOW)
    q.observe("c", {f"{P}7d-status": "rejected", f"{P}7d-reset": str(int(NOW + 3600))}, NOW)
    assert [q.above_threshold(x) for x in "abc"] == [False, True, True]


def test_least_used_orders_by_5h_and_ties_keep_the_rotation() -> None:
    q = quotas()
    q.observe("a", headers(five_hour=0.5), NOW)
    q.observe("b", headers(five_hour=0.1), NOW)
    q.observe("c", headers(five_hour=0.5), NOW)
    # "d" was never seen: unknown counts as unused.
    assert prefer(q, ["a", "b", "c", "d"], least_used=True) == ["d", "b", "a", "c"]
    # The caller rotates for round-robin; equal accounts then take turns.
    assert prefer(q, ["c", "d", "a", "b"], least_used=True) == ["d", "b", "c", "a"]
    firsts = [prefer(q, ["a", "c"][i % 2:] + ["a", "c"][:i % 2], least_used=True)[0] for i in range(4)]
    assert firsts == ["a", "c", "a", "c"]


@pytest.mark.parametrize("least_used", [False, True])
def test_every_strategy_moves_an_account_above_the_threshold_last(least_used: bool) -> None:
    q = quotas()
    q.observe("full", headers(five_hour=0.97), NOW)
    q.observe("half", headers(five_hour=0.5), NOW)
    q.observe("opus-full", headers(five_hour=0.2, opus=0.99), NOW)
    order = prefer(q, ["full", "half", "opus-full"], "opus", least_used=least_used)
    assert order[-2:] == ["full", "opus-full"] or order[-2:] == ["opus-full", "full"]
    assert order[0] == "half"
    # For another family the Opus window does not matter.
    assert prefer(q, ["full", "opus-full", "half"], "sonnet", least_used=least_used)[-1] == "full"
    # Above the threshold everywhere: kept as a last resort, not dropped.
    assert prefer(q, ["full"], least_used=least_used) == ["full"]


def test_high_utilization_calls_back_once_per_window_and_hour() -> None:
    calls: list[tuple[str, str, float | None]] = []
    clock = [NOW]
    q = Quotas(Settings(), None, clock=lambda: clock[0],
               on_high=lambda account, w: calls.append((account, w.name, w.utilization)))
    q.observe("alice", headers(five_hour=0.5), NOW)
    assert calls == []
    q.observe("alice", headers(five_hour=0.92, opus=0.95), NOW)
    q.observe("alice", headers(five_hour=0.93), NOW + 10)
    assert calls == [("alice", "5h", 0.92), ("alice", "7d_opus", 0.95)]
    clock[0] = NOW + 3601
    q.observe("alice", headers(five_hour=0.94), NOW + 3601)
    assert calls[-1] == ("alice", "5h", 0.94) and len(calls) == 3


def test_a_failing_callback_never_fails_observe() -> None:
    def boom(account: str, window: WindowQuota) -> None:
        raise RuntimeError("webhook down")

    q = quotas(on_high=boom)
    assert q.observe("alice", headers(five_hour=0.99), NOW) is not None
    assert q.utilization("alice") == 0.99


# --- sharing across workers ---------------------------------------------------------------


class SpyBackend:
    def __init__(self, fail: int = 0) -> None:
        self.pushes: list[tuple[str, set[str]]] = []
        self.fail = fail
        self.shared: dict[str, list[dict[str, Any]]] = {}

    async def push(self, worker: str, records: Mapping[str, dict[str, Any]], dirty: Iterable[str]) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("redis down")
        self.pushes.append((worker, set(dirty)))
        for account in dirty:
            self.shared[account] = [records[account]]

    async def pull(self) -> dict[str, list[dict[str, Any]]]:
        return self.shared

    async def aclose(self) -> None:
        pass


async def test_observe_does_no_io_and_the_background_task_shares_it() -> None:
    spy = SpyBackend()
    q = Quotas(Settings(), spy, interval=0.05)
    for _ in range(50):
        q.observe("alice", headers(five_hour=0.3))
    assert spy.pushes == []  # nothing on the request path
    for _ in range(100):
        if spy.pushes:
            break
        await asyncio.sleep(0.01)
    assert spy.pushes == [(q.worker, {"alice"})]  # 50 observations, one push
    await asyncio.sleep(0.15)
    assert len(spy.pushes) == 1  # nothing new: nothing pushed
    await q.aclose()


async def test_a_failed_push_is_retried_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    spy = SpyBackend(fail=1)
    q = quotas(backend=spy)
    q.observe("alice", headers(five_hour=0.3), NOW)
    await q.sync()
    assert spy.pushes == [] and "could not share quota figures" in caplog.text
    await q.sync()
    assert spy.pushes == [(q.worker, {"alice"})]


async def exchange(a: Quotas, b: Quotas) -> None:
    for q in (a, b, a, b):
        await q.sync()


async def check_newest_wins(backend_a: Any, backend_b: Any) -> None:
    a = Quotas(Settings(), backend_a, worker="worker-a", clock=lambda: NOW)
    b = Quotas(Settings(), backend_b, worker="worker-b", clock=lambda: NOW)
    a.observe("alice", headers(five_hour=0.2, seven_day=0.4), NOW)
    b.observe("alice", headers(five_hour=0.8), NOW + 30)  # newer, 5h only
    b.observe("bob", headers(five_hour=0.1, opus=0.9), NOW + 5)
    a.observe("alice", {f"{P}7d-utilization": "0.45"}, NOW + 40)
    await exchange(a, b)
    for q in (a, b):
        assert q.utilization("alice", "5h") == 0.8  # b's is newer
        assert q.utilization("alice", "7d") == 0.45  # a's later report
        assert q.utilization("bob", "7d_opus") == 0.9
        assert q.above_threshold("bob", "opus", threshold=0.9)
        assert q.view("alice").window("5h").observed_at == NOW + 30  # type: ignore[union-attr]
    # An older observation arriving later does not win.
    c = Quotas(Settings(), backend_a, worker="worker-c", clock=lambda: NOW)
    c.observe("alice", headers(five_hour=0.05), NOW - 600)
    await exchange(c, a)
    assert a.utilization("alice", "5h") == 0.8 and c.utilization("alice", "5h") == 0.8


async def test_workers_merge_through_the_sidecar_directory(tmp_path: Path) -> None:
    directory = tmp_path / "claude_tokens.json.quotas"
    await check_newest_wins(FileQuotaBackend(directory), FileQuotaBackend(directory))
    assert sorted(p.name for p in directory.glob("*.json")) == ["worker-a.json", "worker-b.json", "worker-c.json"]
    assert oct(directory.stat().st_mode & 0o777) == "0o700"


async def test_sidecar_skips_damaged_files_and_removes_week_old_ones(tmp_path: Path) -> None:
    directory = tmp_path / "q"
    backend = FileQuotaBackend(directory)
    q = Quotas(Settings(), backend, worker="live", clock=lambda: NOW)
    q.observe("alice", headers(five_hour=0.3), NOW)
    await q.sync()
    (directory / "broken.json").write_text("{not json")
    old = directory / "gone.json"
    old.write_text(json.dumps({"alice": {"top": None, "windows": {"5h": [NOW + 99, "allowed", 0.99, None]}}}))
    os.utime(old, (0, 0))
    reader = Quotas(Settings(), backend, worker="reader")
    await reader.sync()
    assert reader.utilization("alice", "5h", now=NOW) == 0.3
    assert not old.exists() and (directory / "broken.json").exists()


async def test_read_shared_is_what_the_cli_shows(tmp_path: Path) -> None:
    token_file = tmp_path / "claude_tokens.json"
    settings = Settings(token_file=token_file)
    worker = Quotas.from_settings(settings, worker="proxy-worker")
    worker.observe("alice", headers(five_hour=0.62, seven_day=0.3), NOW)
    await worker.aclose()
    views = await read_shared(settings, ["alice", "bob"], now=NOW)
    assert [(w.name, w.utilization) for w in views["alice"].windows] == [("5h", 0.62), ("7d", 0.3)]
    assert views["bob"].windows == []
    assert format_window(views["alice"].windows[0], NOW) == "5h        ██████░░░░  62% · resets in 1.8 h"
    # Nothing shared at all (no directory yet): empty views, no error.
    empty = await read_shared(Settings(token_file=tmp_path / "none" / "t.json"), ["alice"])
    assert empty["alice"].windows == []


def test_backend_follows_the_settings(tmp_path: Path) -> None:
    token_file = tmp_path / "t" / "claude_tokens.json"
    backend = backend_for(Settings(token_file=token_file))
    assert isinstance(backend, FileQuotaBackend) and backend.directory == sidecar_directory(token_file)
    assert backend.directory == tmp_path / "t" / "claude_tokens.json.quotas"
    redis = backend_for(Settings.from_env({"REDIS_URL": "redis://127.0.0.1:6379/15"}))
    assert isinstance(redis, RedisQuotaBackend)


CHILD = """
import asyncio, sys
from litellm_claude_oauth.quotas import Quotas, FileQuotaBackend
from litellm_claude_oauth.settings import Settings
from pathlib import Path

async def main():
    q = Quotas(Settings(), FileQuotaBackend(Path(sys.argv[1])))
    q.observe("alice", {"anthropic-ratelimit-unified-5h-utilization": sys.argv[2]}, float(sys.argv[3]))
    await q.aclose()  # pushes what is left

asyncio.run(main())
"""


async def test_separate_processes_share_through_the_sidecar(tmp_path: Path) -> None:
    directory = tmp_path / "shared"
    for used, at in (("0.25", NOW), ("0.75", NOW + 10)):
        subprocess.run([sys.executable, "-c", CHILD, str(directory), used, str(at)], check=True, timeout=60)
    q = Quotas(Settings(), FileQuotaBackend(directory))
    await q.sync()
    assert q.utilization("alice", now=NOW) == 0.75
    assert len(list(directory.glob("*.json"))) == 2  # one file per worker process


@pytest.fixture
async def redis() -> AsyncIterator[tuple[Redis, str]]:
    prefix = f"test:{uuid.uuid4().hex[:12]}:quota"
    client = Redis.from_url(TEST_REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    yield client, prefix
    keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.mark.redis
async def test_workers_merge_through_redis(redis: tuple[Redis, str]) -> None:
    client, prefix = redis
    await check_newest_wins(RedisQuotaBackend(client, prefix), RedisQuotaBackend(client, prefix))
    fields = await client.hkeys(f"{prefix}:alice")
    assert sorted(f.decode() for f in fields) == ["worker-a", "worker-b", "worker-c"]
    ttl = await client.ttl(f"{prefix}:alice")
    assert 7 * 86400 < ttl <= 8 * 86400


@pytest.mark.redis
async def test_redis_drops_fields_of_long_gone_workers(redis: tuple[Redis, str]) -> None:
    client, prefix = redis
    stale = {"top": None, "windows": {"5h": [1_000.0, "allowed", 0.99, None]}}
    await client.hset(f"{prefix}:alice", "gone", json.dumps(stale))
    await client.hset(f"{prefix}:alice", "junk", "{")
    await client.sadd(f"{prefix}:accounts", "alice")
    q = Quotas(Settings(), RedisQuotaBackend(client, prefix))
    await q.sync()
    assert q.utilization("alice") is None
    assert sorted(f.decode() for f in await client.hkeys(f"{prefix}:alice")) == ["junk"]


async def test_redis_down_falls_back_to_this_workers_view() -> None:
    client = Redis.from_url("redis://127.0.0.1:1/0", socket_timeout=0.5, socket_connect_timeout=0.5)
    q = Quotas(Settings(), RedisQuotaBackend(client, "test:down"), clock=lambda: NOW)
    q.observe("alice", headers(five_hour=0.4), NOW)
    await q.sync()  # logs, does not raise
    assert q.utilization("alice") == 0.4
    await q.aclose()


def test_the_request_path_only_notes_headers_and_a_read_parses_the_newest(monkeypatch) -> None:
    """note() is what each upstream answer costs; the parse waits for a reader or the next sync."""
    from litellm_claude_oauth import quotas as quotas_module
    from litellm_claude_oauth.settings import Settings

    parses: list[int] = []
    real = quotas_module.RateLimitState.from_headers

    def counting(headers, now=None):  # type: ignore[no-untyped-def]
        parses.append(1)
        return real(headers, now)

    monkeypatch.setattr(quotas_module.RateLimitState, "from_headers", staticmethod(counting))
    quotas = quotas_module.Quotas(Settings.from_env({}), None)
    for used in ("0.1", "0.2", "0.3"):
        quotas.note("a", {"anthropic-ratelimit-unified-5h-utilization": used,
                          "anthropic-ratelimit-unified-5h-status": "allowed"})
    assert parses == []
    assert quotas.utilization("a", "5h") == pytest.approx(0.3)
    assert parses == [1]  # only the newest answer, once
    assert quotas.utilization("a", "5h") == pytest.approx(0.3) and parses == [1]
