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
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import abba, load, print_results  # noqa: E402
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

        for proxy in proxies.values():  # warm up connection pools and caches
            asyncio.run(load(proxy, 50, args.concurrency, MODEL))
        reads_before = httpx.get(f"{proxies['plugin'].url}/auth/claude/oauth/metrics", headers=admin).json()

        results, ratios = abba(proxies["plugin"], proxies["static"], args.rounds, args.requests, args.concurrency)
        reads_after = httpx.get(f"{proxies['plugin'].url}/auth/claude/oauth/metrics", headers=admin).json()
    finally:
        for name, proxy in proxies.items():
            # The baseline's config holds the raw token by design; only our proxy's log must be clean.
            stop_proxy(proxy, check_log=name == "plugin")
        fake.stop()

    baseline = "static key + no-op callback" if args.baseline_callback else "static key"
    print(f"plugin vs {baseline}{' (plugin without identity block)' if args.no_identity else ''}")
    print(f"{args.rounds} rounds x {args.requests} requests, concurrency {args.concurrency}, model {MODEL}")
    print_results(results, ratios, "plugin/static")
    print(
        f"token-store reads during load: {reads_after['store_reads'] - reads_before['store_reads']} (target 0); "
        f"refreshes: {reads_after['refreshes'] - reads_before['refreshes']}; "
        f"cache hits: {reads_after['cache_hits'] - reads_before['cache_hits']}"
    )


if __name__ == "__main__":
    main()
