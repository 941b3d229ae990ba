"""Issue 12: with quotas on and Redis configured, a request sends no Redis command of the plugin's own.

Each response's rate-limit headers are kept in memory; a background task shares them
through Redis every 2 s (quotas.SYNC_INTERVAL_SECONDS). LiteLLM itself also talks to the
Redis in REDIS_URL on every request (its usage cache: rate-limit scripts, TTLs, spend
counters), so the plugin's share is what a plugin proxy sends beyond a static-key proxy
with the same environment serving the same requests.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
import redis
import yaml

from bench.overhead import static_config
from litellm_claude_oauth.quotas import SYNC_INTERVAL_SECONDS
from tests.fake_anthropic import FakeAnthropic

from .harness import Proxy, chat, exported_access_token, login_via_cli, proxy_env, start_proxy, stop_proxy

pytestmark = pytest.mark.e2e

REQUESTS = 60
# One sync, one account: push (HSET, EXPIRE, SADD, EXPIRE), pull (SMEMBERS, HGETALL), and
# HDEL for a worker gone for a week. HELLO: the sync's connection, opened once.
SYNC_COMMANDS = {"hset", "expire", "sadd", "smembers", "hgetall", "hdel", "hello", "client|setinfo"}
SYNC_COMMANDS_PER_ACCOUNT = 6
# LiteLLM's own timers (spend and budget batches) may fall into one burst and not the other;
# a command per request would show REQUESTS times.
TIMER_JITTER = 5


def commands(url: str) -> Counter[str]:
    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return Counter({name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()})


def quiet(url: str) -> Counter[str]:
    """The command counts once LiteLLM's logging of earlier requests has landed.

    LiteLLM logs a request after answering it, so its Redis counters for the last requests
    may arrive after the answer: counted at once, a warm-up request could fall into the
    burst's window for one proxy and not the other.
    """
    last = commands(url)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = commands(url)
        if all(now[k] == last[k] for k in now.keys() | last.keys() if k not in SYNC_COMMANDS | {"info"}):
            return now
        last = now
    raise AssertionError("LiteLLM kept sending Redis commands with no request in flight")


def burst(proxy: Proxy, url: str) -> tuple[Counter[str], float]:
    """The Redis commands REQUESTS chat requests brought, and how long counting them took."""
    with proxy.client() as client:
        assert chat(client).status_code == 200  # warm: the token cached, connections and scripts set up
        before = quiet(url)
        started = time.monotonic()
        statuses = [chat(client).status_code for _ in range(REQUESTS)]
        sent = quiet(url) - before
        elapsed = time.monotonic() - started
    assert statuses == [200] * REQUESTS
    sent.pop("info", None)
    return sent, elapsed


def test_requests_send_no_redis_command_of_the_plugins_own(
    fake: FakeAnthropic, private_redis: tuple[str, object], tmp_path: Path
) -> None:
    url, _proc = private_redis
    env = proxy_env(fake, tmp_path, REDIS_URL=url)
    plugin = start_proxy(env, tmp_path / "plugin.log")
    try:
        login_via_cli(plugin, fake)
        plugin_sent, elapsed = burst(plugin, url)
        before_sync = commands(url)
        time.sleep(SYNC_INTERVAL_SECONDS * 1.5)
        synced = commands(url) - before_sync
        token = exported_access_token(env)
    finally:
        stop_proxy(plugin)
    config = tmp_path / "static.yaml"
    config.write_text(yaml.safe_dump(static_config(token, fake.url, [])))
    static = start_proxy(env, tmp_path / "static.log", config=config)
    try:
        static_sent, _ = burst(static, url)
    finally:
        stop_proxy(static, check_log=False)  # its config holds the token by design

    ours = plugin_sent - static_sent
    print(f"{REQUESTS} requests: plugin {dict(plugin_sent)} in {elapsed:.2f} s; static {dict(static_sent)}")
    beyond_sync = {k: v for k, v in ours.items() if k not in SYNC_COMMANDS}
    assert sum(beyond_sync.values()) <= TIMER_JITTER, f"the plugin sent Redis commands per request: {beyond_sync}"
    syncs = elapsed / SYNC_INTERVAL_SECONDS + 2
    assert sum(ours[k] for k in SYNC_COMMANDS) <= SYNC_COMMANDS_PER_ACCOUNT * syncs < REQUESTS, dict(ours)
    # Not vacuous: the burst's quota figures do go through this Redis, in the background (the
    # push of its last observations may fall in the burst's window or in the wait after it).
    shared = plugin_sent + synced
    assert shared["hset"] >= 1 and shared["hgetall"] >= 1, dict(shared)
