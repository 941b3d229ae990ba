"""Throughput with three accounts round-robin vs one account (target ratio >= 0.98).

Two proxies side by side against one fake Anthropic process: one serves
`claude-haiku-4.5` from a pool of three logged-in accounts (round-robin), the other
from a single account. ABBA rounds; prints req/s, p50/p99 and the pool/single ratio; exits 1 if any request failed.

    .venv/bin/python -m bench.accounts [--requests 400] [--concurrency 16] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

from bench.common import abba, load, print_results
from tests.e2e.harness import FakeProcess, Proxy, cli_login, proxy_env, start_proxy, stop_proxy

MODEL = "claude-haiku-4.5"
UPSTREAM_MODEL = "anthropic/claude-haiku-4-5-20251001"  # on the fake's allowlist, like config.oauth.yaml


def config(tmp: Path, marker: str) -> Path:
    path = tmp / f"{marker.replace(':', '_')}.yaml"
    path.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        f"    litellm_params: {{model: {UPSTREAM_MODEL}, api_key: '{marker}'}}\n"
        "litellm_settings:\n  callbacks: [litellm_claude_oauth.hook.handler]\n"
        "general_settings:\n  master_key: os.environ/LITELLM_MASTER_KEY\n"
    )
    return path


def login(env: dict[str, str], fake: FakeProcess, account: str) -> None:
    fake.control(next_email=f"{account}@example.com")
    cli_login(env, fake, account)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

    tmp = Path(tempfile.mkdtemp(prefix="bench-accounts-"))
    fake = FakeProcess(tmp)
    proxies: dict[str, Proxy] = {}
    try:
        # proxy_env reads only the fake's URLs, which FakeProcess has too.
        pool_env = proxy_env(
            fake, tmp, LITELLM_LOG="ERROR", CLAUDE_TOKEN_FILE=str(tmp / "pool.json")  # type: ignore[arg-type]
        )
        single_env = proxy_env(
            fake, tmp, LITELLM_LOG="ERROR", CLAUDE_TOKEN_FILE=str(tmp / "single.json")  # type: ignore[arg-type]
        )
        for account in ("alice", "bob", "carol"):
            login(pool_env, fake, account)
        login(single_env, fake, "default")
        proxies["pool"] = start_proxy(pool_env, tmp / "pool.log", config=config(tmp, "claude-oauth:pool"))
        proxies["single"] = start_proxy(single_env, tmp / "single.log", config=config(tmp, "claude-oauth"))
        for proxy in proxies.values():  # warm up
            asyncio.run(load(proxy, 50, args.concurrency, MODEL))
        results, ratios = abba(proxies["pool"], proxies["single"], args.rounds, args.requests, args.concurrency, MODEL)
    finally:
        for proxy in proxies.values():
            stop_proxy(proxy)
        fake.stop()

    print(f"3 accounts round-robin vs 1 account; {args.rounds} rounds x {args.requests} requests, "
          f"concurrency {args.concurrency}")
    print_results(results, ratios, "pool/single")
    failed = int(sum(sum(r["fail"]) for r in results.values()))
    if failed:
        print(f"BROKEN: {failed} failed client requests (target 0)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
