"""Alerts against a local webhook receiver: conditions, de-duplication across workers, no tokens, LiteLLM's alerting."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr
from redis.asyncio import Redis

from litellm_claude_oauth.alerts import Alert, Alerts, Condition, FileDedup, MemoryDedup, RedisDedup, redact
from litellm_claude_oauth.manager import TokenManager
from litellm_claude_oauth.quotas import Quotas
from litellm_claude_oauth.ratelimit import Cooldown
from litellm_claude_oauth.settings import Settings
from litellm_claude_oauth.store import build_store
from litellm_claude_oauth.tokens import TokenSet

from .backends import TEST_REDIS_URL

ACCESS = "sk-ant-oat01-" + "A" * 80
REFRESH = "sk-ant-ort01-" + "B" * 80


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records every JSON body; ``status`` is what it answers."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.status = 200
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.raw.append(raw)
        self.bodies.append(json.loads(raw))
        return web.Response(status=self.status, text="ok")

    async def wait_for(self, count: int, timeout: float = 5) -> None:
        deadline = time.monotonic() + timeout
        while len(self.bodies) < count:
            assert time.monotonic() < deadline, f"{len(self.bodies)} of {count} alerts arrived"
            await asyncio.sleep(0.02)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    hook.url = f"http://127.0.0.1:{port}/hook"
    yield hook
    await runner.cleanup()


def settings_for(receiver: Receiver, tmp_path: Path, **extra: Any) -> Settings:
    return Settings(alert_webhook_url=SecretStr(receiver.url), token_file=tmp_path / "claude_tokens.json", **extra)


async def test_an_alert_is_a_slack_compatible_json_post(receiver: Receiver, tmp_path: Path) -> None:
    alerts = Alerts(settings_for(receiver, tmp_path))
    assert await alerts.notify(Condition.RELOGIN_REQUIRED, "alice", "needs a new login (invalid_grant)")
    body = receiver.bodies[0]
    assert body["text"] == (
        "[Claude OAuth] High: account 'alice' (relogin_required): needs a new login (invalid_grant)"
    )
    assert body["condition"] == "relogin_required" and body["account"] == "alice" and body["level"] == "High"
    assert isinstance(body["at"], float)


async def test_one_alert_per_account_and_condition_per_hour(receiver: Receiver, tmp_path: Path) -> None:
    clock = [1_800_000_000.0]
    alerts = Alerts(settings_for(receiver, tmp_path), dedup=MemoryDedup(lambda: clock[0]), clock=lambda: clock[0])
    assert await alerts.notify(Condition.UTILIZATION_HIGH, "alice", "5h at 91%")
    assert not await alerts.notify(Condition.UTILIZATION_HIGH, "alice", "5h at 93%")
    assert await alerts.notify(Condition.UTILIZATION_HIGH, "bob", "5h at 91%")
    assert await alerts.notify(Condition.RELOGIN_REQUIRED, "alice", "needs a new login")
    clock[0] += 3599
    assert not await alerts.notify(Condition.UTILIZATION_HIGH, "alice", "still high")
    clock[0] += 2
    assert await alerts.notify(Condition.UTILIZATION_HIGH, "alice", "still high")
    assert [(b["account"], b["condition"]) for b in receiver.bodies] == [
        ("alice", "utilization_high"), ("bob", "utilization_high"), ("alice", "relogin_required"),
        ("alice", "utilization_high"),
    ]


async def test_workers_sharing_the_marker_directory_send_once(receiver: Receiver, tmp_path: Path) -> None:
    directory = tmp_path / "claude_tokens.json.alerts"
    workers = [Alerts(settings_for(receiver, tmp_path), dedup=FileDedup(directory)) for _ in range(4)]
    sent = await asyncio.gather(*(w.notify(Condition.ACCOUNT_REFUSED, "alice", "organization disabled")
                                  for w in workers))
    assert sorted(sent) == [False, False, False, True]
    assert len(receiver.bodies) == 1
    # A marker older than the window lets the next alert through.
    marker = directory / "account_refused_alice"
    assert marker.exists()
    import os

    os.utime(marker, (time.time() - 3601, time.time() - 3601))
    assert await workers[2].notify(Condition.ACCOUNT_REFUSED, "alice", "organization disabled")


@pytest.mark.redis
async def test_workers_sharing_redis_send_once(receiver: Receiver, tmp_path: Path) -> None:
    prefix = f"test:{uuid.uuid4().hex[:12]}:alert"
    clients = [Redis.from_url(TEST_REDIS_URL) for _ in range(3)]
    try:
        workers = [Alerts(settings_for(receiver, tmp_path), dedup=RedisDedup(c, prefix)) for c in clients]
        sent = await asyncio.gather(*(w.notify(Condition.POOL_COOLING_DOWN, "pool", "all cooling")
                                      for w in workers))
        assert sorted(sent) == [False, False, True] and len(receiver.bodies) == 1
        ttl = await clients[0].ttl(f"{prefix}:pool_cooling_down:pool")
        assert 3500 < ttl <= 3600
    finally:
        await clients[0].delete(f"{prefix}:pool_cooling_down:pool")
        for client in clients:
            await client.aclose()


async def test_redis_down_still_deduplicates_per_process(receiver: Receiver, tmp_path: Path) -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    alerts = Alerts(settings_for(receiver, tmp_path), dedup=RedisDedup(dead))
    assert await alerts.notify(Condition.REFRESH_FAILING, "alice", "3 failures")
    assert not await alerts.notify(Condition.REFRESH_FAILING, "alice", "4 failures")
    assert len(receiver.bodies) == 1
    await dead.aclose()


async def test_never_a_token_in_an_alert(receiver: Receiver, tmp_path: Path) -> None:
    alerts = Alerts(settings_for(receiver, tmp_path))
    message = (
        f"refresh failed for {ACCESS} with Bearer {ACCESS[7:]}: "
        f'{{"refresh_token": "{REFRESH}", "access_token": "opaque-but-secret"}} '
        "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
    )
    assert await alerts.notify(Condition.REFRESH_FAILING, "alice", message)
    raw = receiver.raw[0].decode()
    for secret in (ACCESS, ACCESS[7:], REFRESH, "opaque-but-secret", "dozjgNryP4J3jVmNHl0w5N", "AAAAAAAAAA"):
        assert secret not in raw
    assert "[redacted]" in receiver.bodies[0]["text"] and "refresh failed for" in receiver.bodies[0]["text"]
    assert redact("account 'alice' needs a new login") == "account 'alice' needs a new login"


async def test_a_failing_webhook_is_logged_not_raised(receiver: Receiver, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    receiver.status = 500
    alerts = Alerts(settings_for(receiver, tmp_path))
    assert not await alerts.notify(Condition.RELOGIN_REQUIRED, "alice", "needs a new login")
    assert "could not deliver the alert" in caplog.text and "HTTP 500" in caplog.text
    assert receiver.url not in caplog.text  # the webhook URL is a secret too


async def test_refresh_failures_in_a_row_alert_at_the_setting(receiver: Receiver, tmp_path: Path) -> None:
    alerts = Alerts(settings_for(receiver, tmp_path, alert_refresh_failures=3))
    alerts.refresh_finished("alice", False, "HTTP 502")
    alerts.refresh_finished("alice", False, "HTTP 502")
    alerts.refresh_finished("alice", True)  # a success breaks the streak
    alerts.refresh_finished("alice", False, "HTTP 502")
    alerts.refresh_finished("alice", False, "HTTP 502")
    await asyncio.sleep(0.1)
    assert receiver.bodies == [] and alerts.refresh_failures("alice") == 2
    alerts.refresh_finished("alice", False, "timeout")
    await receiver.wait_for(1)
    assert "3 token refreshes in a row failed; last: timeout" in receiver.bodies[0]["text"]
    assert receiver.bodies[0]["condition"] == "refresh_failing"


async def test_quota_callback_alerts_once(receiver: Receiver, tmp_path: Path) -> None:
    settings = settings_for(receiver, tmp_path)
    alerts = Alerts(settings)
    quotas = Quotas(settings, None, on_high=alerts.utilization_high)
    now = time.time()
    high = {"anthropic-ratelimit-unified-5h-utilization": "0.93",
            "anthropic-ratelimit-unified-5h-reset": str(int(now + 7200))}
    for _ in range(5):
        quotas.observe("alice", high)
    await receiver.wait_for(1)
    await asyncio.sleep(0.1)
    assert len(receiver.bodies) == 1
    assert "the 5h window is 93% used; resets in 2.0 h" in receiver.bodies[0]["text"]


# --- the periodic check -------------------------------------------------------------------


async def logged_in(manager: TokenManager, account: str, **fields: Any) -> None:
    tokens = TokenSet(access_token=SecretStr(ACCESS), refresh_token=SecretStr(REFRESH),
                      expires_at=time.time() + 3600, **fields)
    await manager.import_tokens(tokens, account)


async def test_check_finds_each_condition(receiver: Receiver, tmp_path: Path, env: dict[str, str]) -> None:
    settings = Settings.from_env(env | {"CLAUDE_OAUTH_ALERT_WEBHOOK_URL": receiver.url})
    manager = TokenManager(settings, build_store(settings))
    now = time.time()
    await logged_in(manager, "alice", refresh_expires_at=now + 2 * 86400)
    await logged_in(manager, "bob", refresh_expires_at=now + 20 * 86400)
    await logged_in(manager, "carol")
    await manager.store.update("carol", lambda r: r.model_copy(update={"relogin_reason": "invalid_grant"}))
    quotas = Quotas(settings, None)
    quotas.observe("bob", {"anthropic-ratelimit-unified-7d-utilization": "0.95"})
    alerts = Alerts(settings)

    found = await alerts.check(manager, quotas)
    assert sorted(c.value for c in found) == ["refresh_token_expiring", "relogin_required", "utilization_high"]
    await receiver.wait_for(3)
    by_account = {b["account"]: b for b in receiver.bodies}
    assert by_account["alice"]["condition"] == "refresh_token_expiring"
    assert "ends in 2.0 days: run `litellm claude login --account alice`" in by_account["alice"]["text"]
    assert by_account["carol"]["condition"] == "relogin_required"
    assert by_account["bob"]["condition"] == "utilization_high" and "7d window is 95% used" in by_account["bob"]["text"]

    # Every account resting (or unusable): the pool alert.
    for name in ("alice", "bob"):
        await manager.health.cool_down(name, Cooldown(until=now + 600, reason="rate limited (five_hour)"))
    manager.health.mark_unusable("carol", "invalid_grant")
    found = await alerts.check(manager, quotas)
    assert Condition.POOL_COOLING_DOWN in found
    await receiver.wait_for(4)
    pool = receiver.bodies[-1]
    assert pool["account"] == "pool" and "every account of the pool (alice, bob, carol)" in pool["text"]
    # Nothing new: the second check sent only the pool alert (the rest are de-duplicated).
    await asyncio.sleep(0.1)
    assert len(receiver.bodies) == 4
    assert not any("sk-ant-" in raw.decode() for raw in receiver.raw)
    await manager.aclose()


async def test_the_monitor_runs_the_check_in_the_background(receiver: Receiver, tmp_path: Path,
                                                           env: dict[str, str]) -> None:
    settings = Settings.from_env(env | {"CLAUDE_OAUTH_ALERT_WEBHOOK_URL": receiver.url})
    manager = TokenManager(settings, build_store(settings))
    await logged_in(manager, "alice", refresh_expires_at=time.time() + 86400)
    alerts = Alerts(settings)
    alerts.start_monitor(manager, None, interval=0.05)
    alerts.start_monitor(manager, None, interval=0.05)  # idempotent
    await receiver.wait_for(1)
    await asyncio.sleep(0.2)
    assert len(receiver.bodies) == 1 and receiver.bodies[0]["condition"] == "refresh_token_expiring"
    await alerts.aclose()
    await manager.aclose()


# --- LiteLLM's own alerting ------------------------------------------------------------------


async def test_litellm_slack_alerting_is_used_when_configured(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from litellm.proxy import proxy_server

    monkeypatch.setenv("SLACK_WEBHOOK_URL", receiver.url)
    logging_obj = proxy_server.proxy_logging_obj
    monkeypatch.setattr(logging_obj, "alerting", None)
    logging_obj.update_values(alerting=["slack"], alerting_threshold=300)
    slack = logging_obj.slack_alerting_instance
    try:
        # No CLAUDE_OAUTH_ALERT_WEBHOOK_URL: LiteLLM's alerting alone delivers it.
        alerts = Alerts(Settings(token_file=tmp_path / "t.json"))
        assert await alerts.notify(Condition.ACCOUNT_REFUSED, "alice", f"organization disabled {ACCESS}")
        await slack.flush_queue()
        await receiver.wait_for(1)
        text = receiver.bodies[0]["text"]
        assert "account 'alice' (account_refused): organization disabled [redacted]" in text
        assert "outage_alerts" in text and ACCESS not in text
    finally:
        logging_obj.update_values(alerting=[])
        slack.alerting = None


async def test_alerts_without_any_destination_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sent: list[Alert] = []

    async def capture(alert: Alert) -> None:
        sent.append(alert)

    assert await Alerts(Settings(token_file=tmp_path / "t.json")).notify(Condition.RELOGIN_REQUIRED, "x", "m")
    assert "Claude OAuth alert: [Claude OAuth] High: account 'x' (relogin_required): m" in caplog.text
    assert await Alerts(Settings(), send=capture).notify("relogin_required", "y", "m")  # type: ignore[arg-type]
    assert [a.account for a in sent] == ["y"]
