"""Shared by the benchmarks: a closed-loop load generator, ABBA comparison rounds, medians with spread."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence

import httpx

from tests.e2e.harness import MASTER_KEY, Proxy


async def load(proxy: Proxy, requests: int, concurrency: int, model: str) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    failures = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 20}

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


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def spread(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    """``median (min a, max b)``: one figure and how far the runs behind it strayed."""
    if not values:
        return "-"
    median, low, high = (fmt.format(v) for v in (statistics.median(values), min(values), max(values)))
    return median if len(values) == 1 else f"{median} (min {low}, max {high})"


Results = dict[str, dict[str, list[float]]]


def abba(candidate: Proxy, baseline: Proxy, rounds: int, requests: int, concurrency: int,
         model: str = "claude-haiku-4.5") -> tuple[Results, list[float]]:
    """Alternate candidate/baseline as A B B A each round, so drift in machine load hits both alike."""
    proxies = {"candidate": candidate, "baseline": baseline}
    results: Results = {n: {"rps": [], "lat": [], "fail": []} for n in proxies}
    ratios: list[float] = []
    for _ in range(rounds):
        round_rps: dict[str, list[float]] = {n: [] for n in proxies}
        for name in ("candidate", "baseline", "baseline", "candidate"):
            rps, latencies, failures = asyncio.run(load(proxies[name], requests // 2, concurrency, model))
            round_rps[name].append(rps)
            results[name]["rps"].append(rps)
            results[name]["lat"].extend(latencies)
            results[name]["fail"].append(failures)
        ratios.append(statistics.mean(round_rps["candidate"]) / statistics.mean(round_rps["baseline"]))
    return results, ratios


def print_results(results: Results, ratios: list[float], label: str, target: float = 0.98) -> None:
    candidate, baseline = label.split("/")
    print(f"{'variant':<10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'failed':>7}")
    for key, name in (("candidate", candidate), ("baseline", baseline)):
        r = results[key]
        print(
            f"{name:<10} {statistics.median(r['rps']):8.1f} {percentile(r['lat'], 0.5) * 1000:8.1f}"
            f" {percentile(r['lat'], 0.99) * 1000:8.1f} {int(sum(r['fail'])):7d}"
        )
    print(
        f"throughput ratio {label}: median {statistics.median(ratios):.3f} over {len(ratios)} ABBA rounds"
        f" (min {min(ratios):.3f}, max {max(ratios):.3f}; target >= {target})"
    )
