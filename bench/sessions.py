"""Session affinity in a pool: does a conversation stay on one account, and what does it cost?

Anthropic's prompt cache is per account, so a conversation that hops between accounts
re-pays its prompt on every hop. Two proxies, each with the same pool of three accounts
(round-robin), against one fake Anthropic: one keeps a conversation on its account
(``CLAUDE_OAUTH_SESSION_TTL``, the default), the other does not (``CLAUDE_OAUTH_SESSION_TTL=0``).
Load: C concurrent conversations, each sending its turns to ``/v1/messages`` with
Claude Code's ``x-claude-code-session-id``. Prints, per variant, the share of each
conversation's turns served by its most-used account (locality: 1.0 = never moved;
a round-robin baseline is about 1/3), then the throughput ratio affinity/none (median of ABBA
rounds, with spread) and p50/p99.

    .venv/bin/python -m bench.sessions [--conversations 8] [--turns 12] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import percentile, spread
from tests.e2e.harness import MASTER_KEY, Proxy, cli_login, proxy_env, start_proxy, stop_proxy
from tests.fake_anthropic import FakeAnthropic

MODEL = "claude-haiku-4.5"
ACCOUNTS = ("alice", "bob", "carol")
SYSTEM = [{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
          {"type": "text", "text": "A long, stable project prompt. " * 200, "cache_control": {"type": "ephemeral"}}]


def config(tmp: Path) -> Path:
    path = tmp / "pool.yaml"
    path.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params: {model: anthropic/claude-haiku-4-5-20251001, api_key: 'claude-oauth:pool'}\n"
        "litellm_settings:\n  callbacks: [litellm_claude_oauth.hook.handler]\n"
        "general_settings:\n  master_key: os.environ/LITELLM_MASTER_KEY\n"
    )
    return path


async def conversations(proxy: Proxy, count: int, turns: int, tag: str) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    failures = 0

    async def one(client: httpx.AsyncClient, n: int) -> None:
        nonlocal failures
        history: list[dict[str, object]] = []
        for turn in range(turns):
            # The conversation's name in its text: LiteLLM does not forward the session header upstream.
            history.append({"role": "user", "content": f"[{tag}-{n}] turn {turn}"})
            started = time.perf_counter()
            response = await client.post(
                "/v1/messages",
                json={"model": MODEL, "max_tokens": 20, "system": SYSTEM, "messages": history},
                headers={"x-claude-code-session-id": f"{tag}-{n}"},
            )
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                failures += 1
                continue
            history.append({"role": "assistant", "content": response.json()["content"][-1].get("text", "ok")})

    async with httpx.AsyncClient(base_url=proxy.url, headers={"Authorization": f"Bearer {MASTER_KEY}"},
                                 timeout=60) as client:
        started = time.perf_counter()
        await asyncio.gather(*(one(client, n) for n in range(count)))
        elapsed = time.perf_counter() - started
    return count * turns / elapsed, latencies, failures


def locality(fake: FakeAnthropic, tag: str) -> list[float]:
    """Per conversation: the share of its turns its most-used account served."""
    served: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for request in fake.messages_requests():
        messages = (request.body or {}).get("messages") or [{}]
        first = str(messages[0].get("content") or "")
        if not first.startswith(f"[{tag}-"):
            continue
        session = first.split("]")[0]
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        known = fake.oauth.access_token(token)
        served[session][known.email if known else "?"] += 1
    return [max(c.values()) / sum(c.values()) for c in served.values()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--turns", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

    tmp = Path(tempfile.mkdtemp(prefix="bench-sessions-"))
    proxies: dict[str, Proxy] = {}
    rps: dict[str, list[float]] = {"affinity": [], "none": []}
    lat: dict[str, list[float]] = {"affinity": [], "none": []}
    shares: dict[str, list[float]] = {"affinity": [], "none": []}
    failed = 0
    ratios: list[float] = []
    with FakeAnthropic(port=0) as fake:
        try:
            for name, ttl in (("affinity", "3600"), ("none", "0")):
                env = proxy_env(fake, tmp, LITELLM_LOG="ERROR", CLAUDE_TOKEN_FILE=str(tmp / f"{name}.json"),
                                CLAUDE_OAUTH_SESSION_TTL=ttl, CLAUDE_OAUTH_POOL_STRATEGY="round-robin")
                for account in ACCOUNTS:
                    fake.next_email = f"{account}@example.com"
                    cli_login(env, fake, account)
                proxies[name] = start_proxy(env, tmp / f"{name}.log", config=config(tmp))
            for name, proxy in proxies.items():  # warm up
                asyncio.run(conversations(proxy, 4, 2, f"warm-{name}"))
            for r in range(args.rounds):
                round_rps: dict[str, list[float]] = {"affinity": [], "none": []}
                for i, name in enumerate(("affinity", "none", "none", "affinity")):
                    tag = f"r{r}-{i}-{name}"
                    throughput, latencies, failures = asyncio.run(
                        conversations(proxies[name], args.conversations, args.turns, tag))
                    round_rps[name].append(throughput)
                    rps[name].append(throughput)
                    lat[name].extend(latencies)
                    failed += failures
                    shares[name].extend(locality(fake, tag))
                ratios.append(statistics.mean(round_rps["affinity"]) / statistics.mean(round_rps["none"]))
        finally:
            for proxy in proxies.values():
                stop_proxy(proxy)

    print(f"pool of {len(ACCOUNTS)} accounts, round-robin; {args.conversations} conversations x {args.turns} turns, "
          f"{args.rounds} ABBA rounds")
    print(f"{'variant':<10} {'turns/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'locality (median, min, max)':>30}")
    for name in ("affinity", "none"):
        print(f"{name:<10} {statistics.median(rps[name]):8.1f} {percentile(lat[name], 0.5) * 1000:8.1f}"
              f" {percentile(lat[name], 0.99) * 1000:8.1f} {spread(shares[name]):>30}")
    print(f"throughput ratio affinity/none: {spread(ratios, '{:.3f}')}; "
          f"p99 ratio {percentile(lat['affinity'], 0.99) / percentile(lat['none'], 0.99):.3f}")
    broken = []
    if failed:
        broken.append(f"{failed} failed turns (target 0)")
    if min(shares["affinity"]) < 1.0:
        broken.append("a conversation moved between accounts with affinity on "
                      f"(min locality {min(shares['affinity']):.2f})")
    for line in broken:
        print("BROKEN: " + line)
    raise SystemExit(1 if broken else 0)


if __name__ == "__main__":
    main()
