"""Shared by the benchmarks: closed-loop load generators, comparison rounds (ABBA or paired), medians with spread."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import httpx

from tests.e2e.harness import MASTER_KEY, Proxy


async def _drive(
    proxy: Proxy, concurrency: int, model: str, more: Callable[[], bool], system: str | None = None
) -> tuple[list[float], int]:
    """``concurrency`` closed-loop clients sending chat requests while ``more()``: latencies, failures.

    ``system``: a system message the client sends first.
    """
    latencies: list[float] = []
    failures = 0
    messages = [{"role": "system", "content": system}] if system else []
    body = {"model": model, "messages": [*messages, {"role": "user", "content": "Hi"}], "max_tokens": 20}

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal failures
        while more():
            started = time.perf_counter()
            response = await client.post("/v1/chat/completions", json=body)
            latencies.append(time.perf_counter() - started)
            failures += response.status_code != 200

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=proxy.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=60, limits=limits
    ) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return latencies, failures


async def load(
    proxy: Proxy, requests: int, concurrency: int, model: str, system: str | None = None
) -> tuple[float, list[float], int]:
    """``requests`` requests: requests/s, their latencies, failures."""
    left = iter(range(requests))
    started = time.perf_counter()
    latencies, failures = await _drive(proxy, concurrency, model, lambda: next(left, None) is not None, system)
    return requests / (time.perf_counter() - started), latencies, failures


async def load_for(
    proxy: Proxy, seconds: float, concurrency: int, model: str, system: str | None = None
) -> tuple[int, list[float], int]:
    """For ``seconds``: requests completed, their latencies, failures."""
    deadline = time.perf_counter() + seconds
    latencies, failures = await _drive(proxy, concurrency, model, lambda: time.perf_counter() < deadline, system)
    return len(latencies), latencies, failures


def cpu_seconds(proxy: Proxy) -> float:
    """User + system CPU time of the proxy process so far (Linux /proc)."""
    fields = Path(f"/proc/{proxy.processes[0].pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cpus: set[int]) -> None:
    """Keep process ``pid`` on ``cpus``: every thread it has (threads it starts later inherit the mask)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(tid), cpus)


def placement(cpus: Sequence[int], number: int) -> tuple[set[int], set[int]] | None:
    """Of ``cpus``, for pair ``number``: the CPU both proxies share and the rest for the load and the fake.

    Sharing one CPU, the two proxies split its time about evenly (the scheduler's fairness),
    so their throughput ratio follows the inverse of their work per request; neither gains by
    landing on the core the load generator left idle, or by sitting beside a busier
    sibling. The proxies' CPU changes from pair to pair. None with a single CPU.
    """
    if len(cpus) < 2:
        return None
    shared = cpus[number % len(cpus)]
    return {shared}, set(cpus) - {shared}


def freezable() -> dict[str, str]:
    """Environment for a proxy that :func:`freeze` can reach (bench/freeze/sitecustomize.py)."""
    here = str(Path(__file__).parent / "freeze")
    return {"PYTHONPATH": os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)}


def freeze(proxies: Iterable[Proxy]) -> None:
    """After the warm-up: keep start-up's heap out of every later full collection, in each proxy alike."""
    for proxy in proxies:
        os.kill(proxy.processes[0].pid, signal.SIGUSR2)
    time.sleep(1.0)  # a full collection of ~750k objects, then the freeze


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
         model: str = "claude-haiku-4.5", baseline_system: str | None = None) -> tuple[Results, list[float]]:
    """Alternate candidate/baseline as A B B A each round, so drift in machine load hits both alike.

    ``baseline_system``: a system message the baseline's clients send themselves.
    """
    proxies = {"candidate": candidate, "baseline": baseline}
    systems = {"candidate": None, "baseline": baseline_system}
    results: Results = {n: {"rps": [], "lat": [], "fail": []} for n in proxies}
    ratios: list[float] = []
    for _ in range(rounds):
        round_rps: dict[str, list[float]] = {n: [] for n in proxies}
        for name in ("candidate", "baseline", "baseline", "candidate"):
            run = load(proxies[name], requests // 2, concurrency, model, systems[name])
            rps, latencies, failures = asyncio.run(run)
            round_rps[name].append(rps)
            results[name]["rps"].append(rps)
            results[name]["lat"].extend(latencies)
            results[name]["fail"].append(failures)
        ratios.append(statistics.mean(round_rps["candidate"]) / statistics.mean(round_rps["baseline"]))
    return results, ratios


def simultaneous(proxies: Mapping[str, Proxy], rounds: int, seconds: float, concurrency: int, model: str,
                 systems: Mapping[str, str | None] | None = None) -> Results:
    """Load every proxy at the same time for ``seconds`` each round; per proxy and round: req/s and CPU a request.

    On a shared machine whose speed drifts within seconds, sequential segments see
    different machines; simultaneous ones see the same. The proxies are CPU-bound and
    the scheduler shares the cores fairly, so throughput follows the work per request,
    which is recorded too (``cpu``: seconds a request, from /proc). The load generator
    starts its clients in turn, which favours the first: the order rotates every round.
    ``systems``: a system message that a proxy's clients send themselves.
    """
    names = list(proxies)
    results: Results = {n: {"rps": [], "lat": [], "fail": [], "cpu": []} for n in names}

    async def together(order: list[str]) -> list[tuple[int, list[float], int]]:
        return await asyncio.gather(
            *(load_for(proxies[n], seconds, concurrency, model, (systems or {}).get(n)) for n in order)
        )

    for number in range(rounds):
        shift = number % len(names)
        order = names[shift:] + names[:shift]
        cpu_before = {n: cpu_seconds(proxies[n]) for n in names}
        started = time.perf_counter()
        outcomes = asyncio.run(together(order))
        elapsed = time.perf_counter() - started
        for name, (done, latencies, failures) in zip(order, outcomes, strict=True):
            results[name]["rps"].append(done / elapsed)
            results[name]["lat"].extend(latencies)
            results[name]["fail"].append(failures)
            results[name]["cpu"].append((cpu_seconds(proxies[name]) - cpu_before[name]) / max(done, 1))
    return results


def paired(candidate: Proxy, baseline: Proxy, rounds: int, seconds: float, concurrency: int,
           model: str = "claude-haiku-4.5", baseline_system: str | None = None) -> tuple[Results, list[float]]:
    """:func:`simultaneous` rounds of two proxies, with the candidate/baseline throughput ratio of each round.

    ``baseline_system``: a system message the baseline's clients send themselves.
    """
    results = simultaneous({"candidate": candidate, "baseline": baseline}, rounds, seconds, concurrency, model,
                           {"baseline": baseline_system})
    ratios = [c / b for c, b in zip(results["candidate"]["rps"], results["baseline"]["rps"], strict=True)]
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
        f"throughput ratio {label}: median {statistics.median(ratios):.3f} over {len(ratios)} rounds"
        f" (min {min(ratios):.3f}, max {max(ratios):.3f}; target >= {target})"
    )
