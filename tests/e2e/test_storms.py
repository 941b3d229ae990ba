"""Storms on a 4-worker proxy with the file store and no Redis (issue 10): revocations and 401 bursts.

* Every access token revoked server-side while 40 requests are in flight: each request
  meets a 401 and is retried on a refreshed token; no client sees a failure, and the
  workers share at most two upstream refreshes (the file lock stands in for Redis).
* The same, and the token the first refresh fetched is revoked too before some request
  retried on it: that request needs a second refresh (the plugin allows two per request;
  with one, the client got the 401, as in issue 10's 4-worker storm).
* A burst of upstream 401s that no refresh can fix (the grant ended), then a fresh
  login: the very next requests must work. LiteLLM's router cools a deployment down
  after a 401; the hook opts OAuth deployments out of that, so a login is not followed by
  "No deployments available". The proxy's config sets a 60 s router cooldown so the test
  does not depend on how fast this machine logs in.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.fake_anthropic import FakeAnthropic

from .harness import MASTER_KEY, ROOT, Proxy, login_via_cli, proxy_env, start_proxy, stop_proxy

pytestmark = pytest.mark.e2e

WORKERS = 4
BURST = 40
MODEL = "claude-haiku-4.5"


@pytest.fixture(scope="module")
def proxy(fake: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("storms")
    fake.access_ttl = 3600
    config = tmp / "config.yaml"
    config.write_text((ROOT / "config.oauth.yaml").read_text() + "\nrouter_settings:\n  cooldown_time: 60\n")
    running = start_proxy(
        proxy_env(fake, tmp, LITELLM_LOG="INFO"), tmp / "proxy.log", "--num_workers", str(WORKERS),
        config=config, timeout=300,
    )  # fmt: skip
    try:
        login_via_cli(running, fake)
        yield running
    finally:
        stop_proxy(running)


def burst(proxy: Proxy, n: int = BURST) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10}
        async with httpx.AsyncClient(
            base_url=proxy.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=120,
            limits=httpx.Limits(max_connections=n),
        ) as client:  # fmt: skip
            return list(await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for _ in range(n))))

    return asyncio.run(run())


def statuses(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(r.status_code for r in responses)


def test_every_token_revoked_mid_storm_costs_no_client_a_failure(proxy: Proxy, fake: FakeAnthropic) -> None:
    assert statuses(burst(proxy)) == {200: BURST}  # every worker now holds the token
    fake.expire_all_access_tokens()
    before = fake.refresh_count

    responses = burst(proxy)

    refreshes = fake.refresh_count - before
    assert statuses(responses) == {200: BURST}, [r.text[:200] for r in responses if r.status_code != 200][:3]
    assert 1 <= refreshes <= 2, refreshes
    assert all(r.json()["choices"][0]["message"]["content"].startswith("Hello from fake Claude") for r in responses)


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def test_a_token_revoked_again_after_its_refresh_costs_no_client_a_failure(proxy: Proxy, fake: FakeAnthropic) -> None:
    assert statuses(burst(proxy)) == {200: BURST}
    fake.expire_all_access_tokens()
    # Hold the first refresh long enough for every request's first attempt to meet its 401.
    fake.token_delay = 3.0
    refreshes, messages = fake.refresh_count, fake.messages_count
    try:
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(burst, proxy)
            wait_until(lambda: fake.refresh_count > refreshes and fake.messages_count >= messages + BURST)
            fake.token_delay = 0.0  # the held refresh keeps its delay; a second one is quick
            fake.force_401_next(1)  # the first retry on the refreshed token is refused: revoked too
            responses = running.result()
    finally:
        fake.token_delay = 0.0

    assert statuses(responses) == {200: BURST}, [r.text[:200] for r in responses if r.status_code != 200][:3]
    assert fake.refresh_count - refreshes == 2


def test_a_fresh_login_works_at_once_after_a_burst_of_401s(proxy: Proxy, fake: FakeAnthropic) -> None:
    fake.end_refresh_lifetime()  # no refresh can help: the grant is over
    fake.expire_all_access_tokens()
    failed = burst(proxy)
    assert statuses(failed) == {401: BURST}, statuses(failed)
    assert "litellm claude login" in failed[0].json()["error"]["message"]

    with proxy.client() as client:
        start = client.get("/auth/claude/oauth/start")
        assert start.status_code == 200, start.text
        code, state = fake.authorize(start.json()["authorization_url"])
        done = client.post("/auth/claude/oauth/exchange", json={"code": f"{code}#{state}"})
        assert done.status_code == 200, done.text

    after = burst(proxy)
    assert statuses(after) == {200: BURST}, [r.text[:300] for r in after if r.status_code != 200][:3]
