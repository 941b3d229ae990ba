"""Three accounts behind one model: round-robin, failover on a 429, cooldown in `status`."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.fake_anthropic import FakeAnthropic

from .harness import Proxy, chat, login_via_cli, proxy_env, start_proxy, stop_proxy

pytestmark = pytest.mark.e2e

ACCOUNTS = {"alice": "alice@example.com", "bob": "bob@example.com", "carol": "carol@example.com"}


@pytest.fixture(scope="module")
def pooled(fake: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("pool")
    config = tmp / "pool.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: claude-haiku-3.5\n"
        "    litellm_params: {model: anthropic/claude-haiku-4-5-20251001, api_key: claude-oauth:pool}\n"
        "  - model_name: claude-sonnet-4\n"
        "    litellm_params: {model: anthropic/claude-sonnet-4-6, api_key: 'claude-oauth:alice'}\n"
        "litellm_settings:\n  callbacks: [litellm_claude_oauth.hook.handler]\n"
        "general_settings:\n  master_key: os.environ/LITELLM_MASTER_KEY\n"
    )
    proxy = start_proxy(proxy_env(fake, tmp), tmp / "proxy.log", config=config)
    for account, email in ACCOUNTS.items():
        fake.next_email = email
        login_via_cli(proxy, fake, account)
    yield proxy
    stop_proxy(proxy)


def tokens_by_account(proxy: Proxy) -> dict[str, str]:
    out = {}
    for account in ACCOUNTS:
        exported = proxy.cli("export", "--show-tokens", "--account", account)
        out[json.loads(exported.stdout)["access_token"]] = account
    return out


def accounts_used(fake: FakeAnthropic, since: int, proxy: Proxy) -> list[tuple[str, int]]:
    owner = tokens_by_account(proxy)
    return [
        (owner.get(r.headers["authorization"].removeprefix("Bearer "), "?"), r.status)
        for r in fake.messages_requests()[since:]
    ]


def test_round_robin_spreads_requests(pooled: Proxy, fake: FakeAnthropic) -> None:
    since = len(fake.messages_requests())
    with pooled.client() as client:
        for _ in range(6):
            assert chat(client).status_code == 200
    assert Counter(a for a, _ in accounts_used(fake, since, pooled)) == {"alice": 2, "bob": 2, "carol": 2}


def test_exhausted_account_moves_traffic_without_failures(pooled: Proxy, fake: FakeAnthropic) -> None:
    fake.rate_limit_token(ACCOUNTS["bob"], 3600)
    since = len(fake.messages_requests())
    with pooled.client() as client, ThreadPoolExecutor(8) as workers:
        statuses = list(workers.map(lambda _: chat(client).status_code, range(24)))
    assert statuses == [200] * 24  # 0 failed client requests
    used = accounts_used(fake, since, pooled)
    bob = [status for account, status in used if account == "bob"]
    assert bob and set(bob) == {429}  # bob was tried, rejected, and then left alone
    assert len(bob) <= 8  # at most the requests already in flight when the first 429 came back
    served = Counter(a for a, status in used if status == 200)
    assert served["alice"] + served["carol"] == 24

    status = json.loads(pooled.cli("status", "--json", "--account", "bob").stdout)["accounts"][0]
    assert status["cooldown_until"] == pytest.approx(time.time() + 3600, abs=30)
    assert status["cooldown_reason"] == "rate limited (five_hour)"
    human = pooled.cli("status").stdout
    assert "Cooling down: rate limited (five_hour), resets in" in human


def test_pinned_account_is_untouched_by_the_pool(pooled: Proxy, fake: FakeAnthropic) -> None:
    since = len(fake.messages_requests())
    with pooled.client() as client:
        for _ in range(3):
            assert chat(client, "claude-sonnet-4").status_code == 200
    assert {a for a, _ in accounts_used(fake, since, pooled)} == {"alice"}


def test_all_accounts_cooling_down_gives_429_with_retry_after(pooled: Proxy, fake: FakeAnthropic) -> None:
    fake.rate_limit_token(ACCOUNTS["alice"], 900)
    fake.rate_limit_token(ACCOUNTS["carol"], 600)
    with pooled.client() as client:
        first = chat(client)  # discovers that alice and carol are exhausted too
        assert first.status_code == 429
        second = chat(client)  # now refused before calling Anthropic at all
    assert second.status_code == 429
    for response in (first, second):
        assert 590 <= int(response.headers["retry-after"]) <= 601  # the soonest reset: carol's
    assert "rate-limited" in second.json()["error"]["message"]
