"""Refresh storm: N proxy workers x M concurrent requests all meet an expired token.

Two storms, each against the real proxy (`--num_workers N`) and one fake Anthropic:
  clock    the stored token reaches its refresh margin while every worker holds it;
  401      the upstream suddenly rejects every access token (as after a revocation).
Prints, per storm, the upstream refreshes performed (target 1) and the failed client
requests (target 0).

    .venv/bin/python -m bench.refresh_storm [--workers 4] [--concurrency 32] [--store postgres|file]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.backends import TEST_DSN, TEST_REDIS_URL, drop_our_tables, ensure_database, flush_redis  # noqa: E402
from tests.e2e.harness import (  # noqa: E402
    MASTER_KEY,
    FakeProcess,
    Proxy,
    login_and_export,
    proxy_env,
    start_proxy,
    stop_proxy,
)

MARGIN = 300  # CLAUDE_OAUTH_REFRESH_MARGIN_SECONDS


async def burst(proxy: Proxy, concurrency: int) -> tuple[int, int]:
    body = {"model": "claude-haiku-3.5", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10}
    async with httpx.AsyncClient(
        base_url=proxy.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=120,
        limits=httpx.Limits(max_connections=concurrency),
    ) as client:
        responses = await asyncio.gather(
            *(client.post("/v1/chat/completions", json=body) for _ in range(concurrency)), return_exceptions=True
        )
    failed = sum(1 for r in responses if isinstance(r, Exception) or r.status_code != 200)
    return len(responses), failed


def reset_backends(store: str) -> dict[str, str]:
    if store == "file":
        return {}
    drop_our_tables(ensure_database(TEST_DSN))
    flush_redis(TEST_REDIS_URL)
    return {"CLAUDE_TOKEN_STORE": "postgres", "CLAUDE_OAUTH_DATABASE_URL": TEST_DSN, "REDIS_URL": TEST_REDIS_URL}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--store", choices=["postgres", "file"], default="postgres")
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

    tmp = Path(tempfile.mkdtemp(prefix="bench-storm-"))
    fake = FakeProcess(tmp, access_ttl=3600)
    proxy: Proxy | None = None
    results: list[tuple[str, int, int, int]] = []
    try:
        env = proxy_env(fake, tmp, LITELLM_LOG="ERROR", CLAUDE_OAUTH_REFRESH_MARGIN_SECONDS=str(MARGIN), **reset_backends(args.store))  # type: ignore[arg-type]
        proxy = start_proxy(env, tmp / "proxy.log", "--num_workers", str(args.workers))

        # Storm 1: every worker caches a token that then reaches its refresh margin.
        fake.control(access_ttl=MARGIN + 4)
        login_and_export(env, fake)
        asyncio.run(burst(proxy, args.concurrency))  # warm: each worker now holds the token
        time.sleep(5)
        fake.control(access_ttl=3600)
        before = fake.state()["refresh_count"]
        total, failed = asyncio.run(burst(proxy, args.concurrency))
        results.append(("clock", fake.state()["refresh_count"] - before, total, failed))

        # Storm 2: the upstream rejects every access token at once.
        asyncio.run(burst(proxy, args.concurrency))
        fake.control(expire_all_access_tokens=True)
        before = fake.state()["refresh_count"]
        total, failed = asyncio.run(burst(proxy, args.concurrency))
        results.append(("401", fake.state()["refresh_count"] - before, total, failed))
    finally:
        if proxy is not None:
            stop_proxy(proxy)
        fake.stop()

    store = "postgres + redis" if args.store == "postgres" else "file store (file lock)"
    print(f"{args.workers} workers, {args.concurrency} concurrent requests per storm, {store}")
    print(f"{'storm':<6} {'refreshes':>9} {'requests':>9} {'failed':>7}   (targets: 1 refresh, 0 failed)")
    for name, refreshes, total, failed in results:
        print(f"{name:<6} {refreshes:9d} {total:9d} {failed:7d}")


if __name__ == "__main__":
    main()
