"""Overhead of the plugin: the same proxy with OAuth injection vs a static sk-ant-oat key.

Both proxies run side by side against one fake Anthropic process; rounds alternate so
that machine noise hits both alike. Prints requests/s, p50 and p99 per variant, the
plugin/baseline throughput ratio (median of the ABBA rounds with its spread, target
>= 0.98) and the p50/p99 latency ratios, plus the token-store reads the plugin made
during the load (target 0 while the token is valid).

Quotas are on: the fake answers every request with ``anthropic-ratelimit-unified-*``
headers and the plugin's request path parses each response's (``Quotas.observe``); the
bench checks after the warm-up that the windows were seen.

    .venv/bin/python -m bench.overhead [--requests 400] [--concurrency 16] [--rounds 5]
        [--baseline-callback] [--no-identity]
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

from bench.common import Results, abba, load, percentile, print_results
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


def upstream_model(name: str = MODEL) -> str:
    """The upstream id the plugin's config serves ``name`` with: the baseline must ask the fake for the same one."""
    config = yaml.safe_load((ROOT / "config.oauth.yaml").read_text())
    return next(str(d["litellm_params"]["model"]) for d in config["model_list"] if d["model_name"] == name)


def latency_ratio(results: Results, q: float) -> float:
    return percentile(results["candidate"]["lat"], q) / percentile(results["baseline"]["lat"], q)


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
            f"    litellm_params: {{model: {upstream_model()}, api_key: {token}, api_base: {fake.url}}}\n"
            "general_settings:\n  master_key: os.environ/LITELLM_MASTER_KEY\n"
            + ("litellm_settings:\n  callbacks: [bench.noop_callback.handler]\n" if args.baseline_callback else "")
        )
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

        results, ratios = abba(proxies["plugin"], proxies["static"], args.rounds, args.requests, args.concurrency, MODEL)
        reads_after = httpx.get(f"{proxies['plugin'].url}/auth/claude/oauth/metrics", headers=ADMIN).json()
    finally:
        for name, proxy in proxies.items():
            # The baseline's config holds the raw token by design; only our proxy's log must be clean.
            stop_proxy(proxy, check_log=name == "plugin")
        fake.stop()

    baseline = "static key + no-op callback" if args.baseline_callback else "static key"
    print(f"plugin vs {baseline}{' (plugin without identity block)' if args.no_identity else ''}")
    print(f"{args.rounds} rounds x {args.requests} requests, concurrency {args.concurrency}, model {MODEL}")
    print(f"quotas: {quotas}")
    print_results(results, ratios, "plugin/static")
    print(
        f"throughput ratio spread: stdev {statistics.stdev(ratios) if len(ratios) > 1 else 0.0:.3f}; "
        f"latency ratio plugin/static: p50 {latency_ratio(results, 0.5):.3f}, p99 {latency_ratio(results, 0.99):.3f}"
    )
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
