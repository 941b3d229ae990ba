"""Overhead of the plugin: the same proxy with OAuth injection vs a static sk-ant-oat key.

Both proxies run side by side against one fake Anthropic process; rounds alternate so
that machine noise hits both alike. Prints requests/s, p50 and p99 per variant and the
plugin/baseline throughput ratio (target >= 0.98), plus the token-store reads the
plugin made during the load (target 0 while the token is valid).

    .venv/bin/python -m bench.overhead [--requests 400] [--concurrency 16] [--rounds 5]
        [--baseline-callback] [--no-identity]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.harness import (  # noqa: E402
    MASTER_KEY,
    FakeProcess,
    Proxy,
    login_and_export,
    proxy_env,
    start_proxy,
    stop_proxy,
)

MODEL = "claude-haiku-3.5"
UPSTREAM_MODEL = "anthropic/claude-3-5-haiku-20241022"


async def load(proxy: Proxy, requests: int, concurrency: int) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    failures = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 20}

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal failures
        while not queue.empty():
            queue.get_nowait()
            started = time.perf_counter()
            response = await client.post("/v1/chat/completions", json=body)
            latencies.append(time.perf_counter() - started)
            failures += response.status_code != 200

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=proxy.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=60, limits=limits
    ) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return requests / elapsed, latencies, failures


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--baseline-callback",
        action="store_true",
        help="give the baseline a no-op CustomLogger too (isolates LiteLLM's per-callback logging cost)",
    )
    parser.add_argument(
        "--no-identity", action="store_true", help="plugin without the Claude Code system block (isolates its cost)"
    )
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

    tmp = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    fake = FakeProcess(tmp)
    proxies: dict[str, Proxy] = {}
    try:
        env = proxy_env(fake, tmp, LITELLM_LOG="ERROR", **({"CLAUDE_CODE_SYSTEM_PROMPT": ""} if args.no_identity else {}))  # type: ignore[arg-type]
        token = login_and_export(env, fake)
        baseline_config = tmp / "static.yaml"
        baseline_config.write_text(
            "model_list:\n"
            f"  - model_name: {MODEL}\n"
            f"    litellm_params: {{model: {UPSTREAM_MODEL}, api_key: {token}, api_base: {fake.url}}}\n"
            "general_settings:\n  master_key: os.environ/LITELLM_MASTER_KEY\n"
            + ("litellm_settings:\n  callbacks: [bench.noop_callback.handler]\n" if args.baseline_callback else "")
        )
        proxies["plugin"] = start_proxy(env, tmp / "plugin.log")
        proxies["static"] = start_proxy(env, tmp / "static.log", config=baseline_config)
        admin = {"Authorization": f"Bearer {MASTER_KEY}"}

        for name, proxy in proxies.items():  # warm up connection pools and caches
            asyncio.run(load(proxy, 50, args.concurrency))
        reads_before = httpx.get(f"{proxies['plugin'].url}/auth/claude/oauth/metrics", headers=admin).json()

        results: dict[str, dict[str, list[float]]] = {n: {"rps": [], "lat": [], "fail": []} for n in proxies}
        ratios: list[float] = []
        for _ in range(args.rounds):
            # ABBA order: drift in machine load during a round hits both variants alike.
            round_rps: dict[str, list[float]] = {n: [] for n in proxies}
            for name in ("plugin", "static", "static", "plugin"):
                rps, latencies, failures = asyncio.run(load(proxies[name], args.requests // 2, args.concurrency))
                round_rps[name].append(rps)
                results[name]["rps"].append(rps)
                results[name]["lat"].extend(latencies)
                results[name]["fail"].append(failures)
            ratios.append(statistics.mean(round_rps["plugin"]) / statistics.mean(round_rps["static"]))
        reads_after = httpx.get(f"{proxies['plugin'].url}/auth/claude/oauth/metrics", headers=admin).json()
    finally:
        for name, proxy in proxies.items():
            # The baseline's config holds the raw token by design; only our proxy's log must be clean.
            stop_proxy(proxy, check_log=name == "plugin")
        fake.stop()

    baseline = "static key + no-op callback" if args.baseline_callback else "static key"
    print(f"plugin vs {baseline}{' (plugin without identity block)' if args.no_identity else ''}")
    print(f"{args.rounds} rounds x {args.requests} requests, concurrency {args.concurrency}, model {MODEL}")
    print(f"{'variant':<8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'failed':>7}")
    for name, r in results.items():
        print(
            f"{name:<8} {statistics.median(r['rps']):8.1f} {percentile(r['lat'], 0.5) * 1000:8.1f}"
            f" {percentile(r['lat'], 0.99) * 1000:8.1f} {int(sum(r['fail'])):7d}"
        )
    print(
        f"throughput ratio plugin/static: median {statistics.median(ratios):.3f} over {len(ratios)} ABBA rounds"
        f" (min {min(ratios):.3f}, max {max(ratios):.3f}; target >= 0.98)"
    )
    print(
        f"token-store reads during load: {reads_after['store_reads'] - reads_before['store_reads']} (target 0); "
        f"refreshes: {reads_after['refreshes'] - reads_before['refreshes']}; "
        f"cache hits: {reads_after['cache_hits'] - reads_before['cache_hits']}"
    )


if __name__ == "__main__":
    main()
