"""Overhead of the plugin: the same proxy with OAuth injection vs a static sk-ant-oat key.

The baseline is the plugin's own ``config.oauth.yaml`` with every ``claude-oauth`` marker
replaced by the token itself (and the fake's ``api_base``) and our callback removed: the
same model list and settings, so the comparison prices the plugin, not a smaller router.
Both proxies run side by side against one fake Anthropic process. Each round loads both
at the same time for ``--seconds`` (``--abba``: one after the other, A B B A), so that
the machine's drift hits both alike: on a shared 2-core VM, sequential segments of a
few seconds differ by ±10% with nothing changed. Prints requests/s, p50 and p99 per
variant, the plugin/baseline throughput ratio (median of the rounds with its spread,
target >= 0.98), the p50/p99 latency ratios, each proxy's CPU time per request (read
from /proc), plus the token-store reads the plugin made during the load (target 0
while the token is valid).

Quotas are on: the fake answers every request with ``anthropic-ratelimit-unified-*``
headers; the plugin's request path keeps each response's (``Quotas.note``) and parses the
newest when the quota view is read. The bench checks after the warm-up that the windows
were seen.

    .venv/bin/python -m bench.overhead [--rounds 20] [--seconds 5] [--concurrency 16]
        [--abba [--requests 400]] [--baseline-callback] [--no-identity | --baseline-identity]
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

from bench.common import Results, abba, cpu_seconds, load, paired, percentile, print_results, spread
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

MODEL = "claude-haiku-4.5"
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of a paired round")
    parser.add_argument("--concurrency", type=int, default=16, help="in flight per proxy")
    parser.add_argument("--abba", action="store_true", help="sequential A B B A rounds instead of paired ones")
    parser.add_argument("--requests", type=int, default=400, help="requests per proxy in an ABBA round")
    parser.add_argument(
        "--baseline-callback",
        action="store_true",
        help="give the baseline a no-op CustomLogger too (isolates LiteLLM's per-callback logging cost)",
    )
    parser.add_argument(
        "--no-identity", action="store_true", help="plugin without the Claude Code system block (isolates its cost)"
    )
    parser.add_argument(
        "--baseline-identity", action="store_true",
        help="the baseline's clients send the identity line themselves, so both send the same request upstream",
    )
    args = parser.parse_args()
    if args.abba and args.baseline_identity:
        parser.error("--baseline-identity needs paired rounds (drop --abba)")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

    tmp = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    fake = FakeProcess(tmp)
    proxies: dict[str, Proxy] = {}
    try:
        identity = {"CLAUDE_CODE_SYSTEM_PROMPT": ""} if args.no_identity else {}
        env = proxy_env(fake, tmp, LITELLM_LOG="ERROR", **identity)
        token = login_and_export(env, fake)
        baseline_config = tmp / "static.yaml"
        callbacks = ["bench.noop_callback.handler"] if args.baseline_callback else []
        baseline_config.write_text(yaml.safe_dump(static_config(token, fake.url, callbacks)))
        proxies["plugin"] = start_proxy(env, tmp / "plugin.log")
        proxies["static"] = start_proxy(env, tmp / "static.log", config=baseline_config)

        for proxy in proxies.values():  # warm up connection pools and caches
            asyncio.run(load(proxy, 50, args.concurrency, MODEL))
        windows = quota_windows(proxies["plugin"])
        if not windows:
            raise SystemExit("quotas: no window seen after the warm-up; does the fake send unified headers?")
        quotas = "observed on every response; seen: " + ", ".join(
            f"{w['name']} {w['utilization']:.0%}" for w in windows if w["utilization"] is not None
        )
        reads_before = httpx.get(f"{proxies['plugin'].url}/auth/claude/oauth/metrics", headers=ADMIN).json()

        if args.abba:
            cpu_before = {name: cpu_seconds(proxy) for name, proxy in proxies.items()}
            results, ratios = abba(proxies["plugin"], proxies["static"], args.rounds, args.requests, args.concurrency,
                                   MODEL)
            for key, name in (("candidate", "plugin"), ("baseline", "static")):  # one figure for the whole run
                results[key]["cpu"] = [(cpu_seconds(proxies[name]) - cpu_before[name]) / (args.rounds * args.requests)]
        else:
            system = IDENTITY if args.baseline_identity else None
            results, ratios = paired(proxies["plugin"], proxies["static"], args.rounds, args.seconds,
                                     args.concurrency, MODEL, baseline_system=system)
        reads_after = httpx.get(f"{proxies['plugin'].url}/auth/claude/oauth/metrics", headers=ADMIN).json()
    finally:
        for name, proxy in proxies.items():
            # The baseline's config holds the raw token by design; only our proxy's log must be clean.
            stop_proxy(proxy, check_log=name == "plugin")
        fake.stop()

    baseline = "static key + no-op callback" if args.baseline_callback else "static key"
    if args.baseline_identity:
        baseline += " (its clients send the identity line)"
    print(f"plugin vs {baseline}{' (plugin without identity block)' if args.no_identity else ''}")
    rounds = (f"{args.rounds} ABBA rounds x {args.requests} requests" if args.abba
              else f"{args.rounds} paired rounds x {args.seconds:g} s, both proxies loaded at once")
    print(f"{rounds}, concurrency {args.concurrency} per proxy, model {MODEL}")
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
    print(
        f"token-store reads during load: {reads_after['store_reads'] - reads_before['store_reads']} (target 0); "
        f"refreshes: {reads_after['refreshes'] - reads_before['refreshes']}; "
        f"cache hits: {reads_after['cache_hits'] - reads_before['cache_hits']}"
    )
    failed = {name: int(sum(results[key]["fail"])) for key, name in (("candidate", "plugin"), ("baseline", "static"))}
    if any(failed.values()):
        raise SystemExit(f"failed requests {failed}: the comparison is void")


if __name__ == "__main__":
    main()
