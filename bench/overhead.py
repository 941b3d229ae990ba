"""Overhead of the plugin: the same proxy with OAuth injection vs a static sk-ant-oat key.

The baseline is the plugin's own ``config.oauth.yaml`` with every ``claude-oauth`` marker
replaced by the token itself (and the fake's ``api_base``) and our callback removed: the
same model list and settings, so the comparison prices the plugin, not a smaller router.
Both proxies run side by side against one fake Anthropic process. Each round loads both
at the same time for ``--seconds`` (``--abba``: one after the other, A B B A), so that
the machine's drift hits both alike: on a shared 2-core VM, sequential segments of a
few seconds differ by ±10% with nothing changed. Both proxies share one CPU, and the load
generator and the fake get the other(s); the proxies' CPU changes every pair (``--no-pin``:
wherever the scheduler puts them). On one CPU the proxies split its time about evenly, so neither
gains from landing beside an idle core or loses beside the load generator: on a 2-vCPU VM
this cut the round-to-round spread of the ratio from a stdev of 0.094 to 0.03 (one 8 x 4
run each, 2026-11-26). The rounds are spread over ``--pairs``
fresh process pairs, started in alternating order: two proxies running the same code
differ by up to ~4% in CPU per request for as long as they live (memory layout, start
order), so one pair would build its draw into every round. Prints requests/s, p50 and p99 per
variant, the plugin/baseline throughput ratio (median of the rounds with its spread,
target >= 0.98), the p50/p99 latency ratios, each proxy's CPU time per request (read
from /proc) and its inverse ratio, the capacity ratio (the throughput each would reach on
a CPU of its own; also target >= 0.98), plus the token-store reads the plugin made during the load (target 0
while the token is valid).

Both send the same request upstream. The model is Sonnet, what Claude Code uses most,
and for it the API (and the fake) refuses a subscription token's request without the
Claude Code identity line: a static-key setup that works has its clients send that line,
so the baseline's clients do, and the plugin adds it in its hook. What is compared is then
the plugin's own work (token, identity insertion, quotas, metrics), not the API's
requirement. ``--model claude-haiku-4.5 --no-baseline-identity`` gives the harsher
comparison with a request the plugin never sends (Haiku without the line: the plugin
always adds it, so its requests are larger). Each pair's two proxies run with the same
``PYTHONHASHSEED`` (a different one per pair), so string hashing, one more source of the
process-to-process spread, does not differ inside a pair.

Quotas are on: the fake answers every request with ``anthropic-ratelimit-unified-*``
headers; the plugin's request path keeps each response's (``Quotas.note``) and parses the
newest when the quota view is read. The bench checks after the warm-up that the windows
were seen.

    .venv/bin/python -m bench.overhead [--pairs 8] [--rounds 4] [--seconds 5] [--concurrency 16]
        [--model claude-sonnet-4.6] [--abba [--requests 400]] [--baseline-callback]
        [--no-identity --no-baseline-identity | --no-baseline-identity] [--no-pin]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.common import (
    Results,
    abba,
    cpu_seconds,
    freezable,
    freeze,
    load,
    paired,
    percentile,
    pin,
    placement,
    print_results,
    spread,
)
from litellm_claude_oauth.ratelimit import model_family
from litellm_claude_oauth.routing import is_marker
from litellm_claude_oauth.settings import DEFAULT_SYSTEM_PROMPT as IDENTITY
from tests.e2e.harness import (
    MASTER_KEY,
    ROOT,
    FakeProcess,
    Proxy,
    login_and_export,
    proxy_env,
    start_proxy,
    stop_proxy,
)

MODEL = "claude-sonnet-4.6"
ADMIN = {"Authorization": f"Bearer {MASTER_KEY}"}


def quota_windows(proxy: Proxy) -> list[dict[str, Any]]:
    status = httpx.get(f"{proxy.url}/auth/claude/oauth/status", params={"account": "default"}, headers=ADMIN,
                       timeout=30).json()
    quota = status["accounts"][0].get("quota") or {}
    return list(quota.get("windows") or [])


def static_config(token: str, api_base: str, callbacks: list[str]) -> dict[str, Any]:
    """``config.oauth.yaml`` as someone with a static key would write it: same models and settings, no plugin."""
    config = yaml.safe_load((ROOT / "config.oauth.yaml").read_text())
    for deployment in config["model_list"]:
        params = deployment["litellm_params"]
        if is_marker(params.get("api_key")):
            params.update(api_key=token, api_base=api_base)
    settings = config.setdefault("litellm_settings", {})
    settings["callbacks"] = [c for c in settings.get("callbacks") or [] if not c.startswith("litellm_claude_oauth")]
    settings["callbacks"] += callbacks
    return config


def latency_ratio(results: Results, q: float) -> float:
    return percentile(results["candidate"]["lat"], q) / percentile(results["baseline"]["lat"], q)


def _pair(env: dict[str, str], tmp: Path, baseline_config: Path, number: int) -> dict[str, Proxy]:
    """A fresh plugin/static pair; odd pairs start the static proxy first.

    Two processes running the same code differ by a few percent in CPU per request
    (memory layout, string hashing, which starts first), and that lasts as long as they
    do: fresh pairs, in both start orders, average it out instead of building it into
    every round. Inside a pair both hash strings alike (one seed per pair).
    """
    proxies: dict[str, Proxy] = {}
    order = ("plugin", "static") if number % 2 == 0 else ("static", "plugin")
    env = {**env, "PYTHONHASHSEED": str(1 + number)}
    try:
        for name in order:
            config = {"config": baseline_config} if name == "static" else {}
            proxies[name] = start_proxy(env, tmp / f"{name}-{number}.log", **config)
    except BaseException:
        _stop(proxies)
        raise
    return {"plugin": proxies["plugin"], "static": proxies["static"]}


def _stop(proxies: dict[str, Proxy]) -> None:
    for name, proxy in proxies.items():
        # The baseline's config holds the raw token by design; only our proxy's log must be clean.
        stop_proxy(proxy, check_log=name == "plugin")


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=8, help="fresh process pairs, start order alternating")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per pair")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of a paired round")
    parser.add_argument("--concurrency", type=int, default=16, help="in flight per proxy")
    parser.add_argument("--abba", action="store_true", help="sequential A B B A rounds instead of paired ones")
    parser.add_argument("--requests", type=int, default=400, help="requests per proxy in an ABBA round")
    parser.add_argument(
        "--baseline-callback",
        action="store_true",
        help="give the baseline a no-op CustomLogger too (isolates LiteLLM's per-callback logging cost)",
    )
    parser.add_argument("--model", default=MODEL, help="model name from config.oauth.yaml")
    parser.add_argument(
        "--no-identity", action="store_true", help="plugin without the Claude Code system block (Haiku only)"
    )
    parser.add_argument(
        "--baseline-identity", action=argparse.BooleanOptionalAction, default=True,
        help="the baseline's clients send the identity line themselves, as a working static-key setup must for "
             "Sonnet and Opus, so both send the same request upstream (--no-baseline-identity: Haiku only)",
    )
    parser.add_argument(
        "--pin", action=argparse.BooleanOptionalAction, default=True,
        help="both proxies share one CPU, the load generator and the fake get the others; the proxies' CPU "
             "changes every pair (--no-pin: wherever the scheduler puts them)",
    )
    parser.add_argument("--no-freeze", dest="freeze", action="store_false",
                        help="leave start-up's heap to the collector (full collections then add noise)")
    return parser


def main() -> None:
    cli = arguments()
    args = cli.parse_args()
    if model_family(args.model) != "haiku" and (args.no_identity or not args.baseline_identity):
        # The identity gate: every request without the line would be refused, and the comparison void.
        cli.error(f"{args.model}: the API refuses it without the identity line; "
                  "--no-identity and --no-baseline-identity need a Haiku model")
    if args.no_identity and args.baseline_identity:
        # Otherwise only the baseline's requests would carry the line: not the cost of the line, but its opposite.
        cli.error("--no-identity prices the identity line: add --no-baseline-identity, so neither side sends it")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

    tmp = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    fake = FakeProcess(tmp)
    results: Results = {k: {"rps": [], "lat": [], "fail": [], "cpu": []} for k in ("candidate", "baseline")}
    cpus = sorted(os.sched_getaffinity(0))  # before this process is pinned too
    ratios: list[float] = []
    reads = {"store_reads": 0, "refreshes": 0, "cache_hits": 0}
    quotas = ""
    try:
        identity = {"CLAUDE_CODE_SYSTEM_PROMPT": ""} if args.no_identity else {}
        env = proxy_env(fake, tmp, LITELLM_LOG="ERROR", **identity, **freezable())
        token = login_and_export(env, fake)
        baseline_config = tmp / "static.yaml"
        callbacks = ["bench.noop_callback.handler"] if args.baseline_callback else []
        baseline_config.write_text(yaml.safe_dump(static_config(token, fake.url, callbacks)))
        system_of = {"plugin": None, "static": IDENTITY if args.baseline_identity else None}
        for number in range(args.pairs):
            proxies = _pair(env, tmp, baseline_config, number)
            try:
                where = placement(cpus, number) if args.pin else None
                if where is not None:
                    shared, rest = where
                    for proxy in proxies.values():
                        pin(proxy.processes[0].pid, shared)
                    pin(fake.proc.pid, rest)
                    pin(os.getpid(), rest)
                for name, proxy in proxies.items():  # warm up connection pools and caches
                    asyncio.run(load(proxy, 50, args.concurrency, args.model, system_of[name]))
                if args.freeze:
                    freeze(proxies.values())
                windows = quota_windows(proxies["plugin"])
                if not windows:
                    raise SystemExit("quotas: no window seen after the warm-up; does the fake send unified headers?")
                quotas = "observed on every response; seen: " + ", ".join(
                    f"{w['name']} {w['utilization']:.0%}" for w in windows if w["utilization"] is not None
                )
                before = httpx.get(f"{proxies['plugin'].url}/auth/claude/oauth/metrics", headers=ADMIN).json()
                if args.abba:
                    cpu_before = {name: cpu_seconds(proxy) for name, proxy in proxies.items()}
                    pair, pair_ratios = abba(proxies["plugin"], proxies["static"], args.rounds, args.requests,
                                             args.concurrency, args.model, baseline_system=system_of["static"])
                    for key, name in (("candidate", "plugin"), ("baseline", "static")):  # one figure per pair
                        spent = cpu_seconds(proxies[name]) - cpu_before[name]
                        pair[key]["cpu"] = [spent / (args.rounds * args.requests)]
                else:
                    pair, pair_ratios = paired(proxies["plugin"], proxies["static"], args.rounds, args.seconds,
                                               args.concurrency, args.model, baseline_system=system_of["static"])
                after = httpx.get(f"{proxies['plugin'].url}/auth/claude/oauth/metrics", headers=ADMIN).json()
            finally:
                _stop(proxies)
            for key in reads:
                reads[key] += after[key] - before[key]
            for key in results:
                for field, values in pair[key].items():
                    results[key][field].extend(values)
            ratios.extend(pair_ratios)
    finally:
        fake.stop()

    baseline = "static key + no-op callback" if args.baseline_callback else "static key"
    if args.baseline_identity:
        baseline += " (its clients send the identity line)"
    print(f"plugin vs {baseline}{' (plugin without identity block)' if args.no_identity else ''}")
    rounds = (f"{args.rounds} ABBA rounds x {args.requests} requests" if args.abba
              else f"{args.rounds} paired rounds x {args.seconds:g} s, both proxies loaded at once")
    print(f"{args.pairs} fresh process pairs (start order alternating) x {rounds}, "
          f"concurrency {args.concurrency} per proxy, model {args.model}")
    print("placement: " + ("both proxies on one CPU, load and fake on the other(s), CPUs swapped every pair"
                           if args.pin and len(cpus) > 1 else "wherever the scheduler puts them"))
    print(f"quotas: {quotas}")
    print_results(results, ratios, "plugin/static")
    print(
        f"throughput ratio spread: stdev {statistics.stdev(ratios) if len(ratios) > 1 else 0.0:.3f}; "
        f"latency ratio plugin/static: p50 {latency_ratio(results, 0.5):.3f}, p99 {latency_ratio(results, 0.99):.3f}"
    )
    variants = (("candidate", "plugin"), ("baseline", "static"))
    cpu = {name: [c * 1000 for c in results[key]["cpu"]] for key, name in variants}
    cpu_ratios = [a / b for a, b in zip(cpu["plugin"], cpu["static"], strict=True)]
    print(f"proxy CPU per request: plugin {spread(cpu['plugin'])} ms, static {spread(cpu['static'])} ms, "
          f"ratio plugin/static {spread(cpu_ratios, '{:.3f}')}")
    capacity = [1 / r for r in cpu_ratios]
    print(f"capacity ratio plugin/static (static CPU per request / plugin's: the throughput each reaches on a CPU "
          f"of its own): {spread(capacity, '{:.3f}')} (target >= 0.98)")
    per_pair = len(ratios) // max(args.pairs, 1)
    for label, values in (("throughput", ratios), ("capacity", capacity)):
        medians = [statistics.median(values[i:i + per_pair]) for i in range(0, len(values), per_pair)]
        print(f"{label} ratio per pair (median of its rounds): {', '.join(f'{m:.3f}' for m in medians)}")
    print(
        f"token-store reads during load: {reads['store_reads']} (target 0); "
        f"refreshes: {reads['refreshes']}; cache hits: {reads['cache_hits']}"
    )
    failed = {name: int(sum(results[key]["fail"])) for key, name in variants}
    if any(failed.values()):
        raise SystemExit(f"failed requests {failed}: the comparison is void")


if __name__ == "__main__":
    main()
