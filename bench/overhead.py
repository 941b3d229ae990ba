"""Overhead of the plugin: the same proxy with OAuth injection vs a static sk-ant-oat key.

Both proxies run side by side against one fake Anthropic process; rounds alternate so
that machine noise hits both alike. Prints requests/s, p50 and p99 per variant, the
plugin/baseline throughput ratio (median of the ABBA rounds with its spread, target
>= 0.98) and the p50/p99 latency ratios, plus the token-store reads the plugin made
during the load (target 0 while the token is valid).

Quotas are on: the fake answers every request with ``anthropic-ratelimit-unified-*``
headers and the plugin parses each response's (``Quotas.observe``). If the request
path does not call ``observe`` yet, ``--quotas auto`` (the default) notices (no quota
windows in ``/status`` after the warm-up) and restarts the plugin proxy with
``bench.overhead.quota_handler``: the same handler whose auth flow observes every
response, as the wired plugin will. ``--quotas off`` measures without it.

    .venv/bin/python -m bench.overhead [--requests 400] [--concurrency 16] [--rounds 5]
        [--baseline-callback] [--no-identity] [--quotas auto|off]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
from collections.abc import AsyncGenerator
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

MODEL = "claude-haiku-3.5"
ADMIN = {"Authorization": f"Bearer {MASTER_KEY}"}


def __getattr__(name: str) -> Any:
    # Resolved by the proxy from its config (`callbacks: [bench.overhead.quota_handler]`), lazily,
    # so running the bench itself imports neither the proxy nor the plugin's hook.
    if name == "quota_handler":
        return _quota_handler()
    raise AttributeError(name)


def _quota_handler() -> Any:
    """The plugin's handler, with an auth flow that hands every upstream response to ``Quotas.observe``."""
    from litellm_claude_oauth import hook
    from litellm_claude_oauth.auth_flow import ClaudeOAuthFlow
    from litellm_claude_oauth.quotas import get_quotas

    class ObservingFlow(ClaudeOAuthFlow):
        async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
            quotas = get_quotas(self.manager.settings)
            account = self.manager.account_id(self.account)
            flow = super().async_auth_flow(request)
            try:
                outgoing = await flow.__anext__()
                while True:
                    response = yield outgoing
                    quotas.observe(account, response.headers)
                    outgoing = await flow.asend(response)
            except StopAsyncIteration:
                return

    class ObservingHandler(hook.ClaudeOAuthHandler):
        def _client(self, route: Any) -> Any:
            client = super()._client(route)
            flow = client.client.auth
            if isinstance(flow, ClaudeOAuthFlow) and not isinstance(flow, ObservingFlow):
                flow.__class__ = ObservingFlow  # the same flow object and state, plus observe()
            return client

    return ObservingHandler()


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
    parser.add_argument(
        "--quotas", choices=("auto", "off"), default="auto",
        help="auto: make sure every response is observed (see above); off: the plugin as configured",
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
        quotas = "plugin as configured"
        if args.quotas == "auto":
            if quota_windows(proxies["plugin"]):
                quotas = "observed by the plugin's own request path"
            else:
                stop_proxy(proxies.pop("plugin"))
                observing = tmp / "plugin-quotas.yaml"
                config = yaml.safe_load((ROOT / "config.oauth.yaml").read_text())
                config.setdefault("litellm_settings", {})["callbacks"] = ["bench.overhead.quota_handler"]
                observing.write_text(yaml.safe_dump(config))
                proxies["plugin"] = start_proxy(env, tmp / "plugin.log", config=observing)
                asyncio.run(load(proxies["plugin"], 50, args.concurrency, MODEL))
                quotas = "observed by bench.overhead.quota_handler (the request path does not call observe yet)"
            windows = quota_windows(proxies["plugin"])
            if not windows:
                raise SystemExit("quotas: no window seen after the warm-up; does the fake send unified headers?")
            quotas += "; seen: " + ", ".join(f"{w['name']} {w['utilization']:.0%}" for w in windows
                                             if w["utilization"] is not None)
        reads_before = httpx.get(f"{proxies['plugin'].url}/auth/claude/oauth/metrics", headers=ADMIN).json()

        results, ratios = abba(proxies["plugin"], proxies["static"], args.rounds, args.requests, args.concurrency)
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
