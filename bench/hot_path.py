"""What the plugin's own request path costs: the deployment hook and the auth flow, in-process.

Drives ``ClaudeOAuthHandler.async_pre_call_deployment_hook`` and the ``ClaudeOAuthFlow`` it
hands LiteLLM with the kwargs and headers LiteLLM 1.106 passes for a chat call (taken from a
running proxy), answered by a 200 with Anthropic's rate-limit headers. The baseline builds
the same kwargs and ``httpx.Request`` and does nothing else; ``hook`` adds the hook, ``all``
the hook and the flow. Prints, per request, what the hook and the flow add to the baseline.

    .venv/bin/python -m bench.hot_path [--rounds 7] [--requests 20000]
        CPU time (process_time): median and spread over rounds, noisy on a shared machine
    .venv/bin/python -m bench.hot_path --instructions [--requests 500]
        instruction counts under valgrind's callgrind: the same figure on every run, whatever
        else the machine does (needs valgrind, its headers and gcc; about a minute)

This prices only our code. What LiteLLM does for any callback, and the proxy as a whole,
is bench.overhead's business.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

_UNDER_CALLGRIND = "BENCH_HOT_PATH_CALLGRIND"
_HELPER = r"""
#include <valgrind/callgrind.h>
void start(void) { CALLGRIND_START_INSTRUMENTATION; }
void toggle(void) { CALLGRIND_TOGGLE_COLLECT; }
void zero(void) { CALLGRIND_ZERO_STATS; }
void dump(void) { CALLGRIND_DUMP_STATS; }
"""

# As LiteLLM 1.106's proxy hands them over for `POST /v1/chat/completions` (a few keys left out).
CLIENT_HEADERS = {
    "host": "127.0.0.1:4000", "accept": "*/*", "accept-encoding": "gzip, deflate", "connection": "keep-alive",
    "user-agent": "python-httpx/0.28.1", "content-length": "89", "content-type": "application/json",
    "authorization": "Bearer sk-litellm-master",
}
UPSTREAM_HEADERS = [
    ("Host", "127.0.0.1:9"), ("Accept-Encoding", "gzip, deflate"), ("Connection", "keep-alive"),
    ("User-Agent", "litellm/1.106.12"), ("authorization", "Bearer sk-ant-oat01-litellm-claude-oauth-placeholder"),
    ("anthropic-beta", "oauth-2025-04-20"), ("anthropic-dangerous-direct-browser-access", "true"),
    ("anthropic-version", "2023-06-01"), ("accept", "application/json"), ("content-type", "application/json"),
    ("Content-Length", "208"),
]
ANSWER_HEADERS = [
    ("request-id", "req_d4e91348eef5316e8df59070"), ("anthropic-ratelimit-unified-status", "allowed"),
    ("anthropic-ratelimit-unified-reset", "1795713136"),
    ("anthropic-ratelimit-unified-representative-claim", "five_hour"),
    ("anthropic-ratelimit-unified-5h-status", "allowed"), ("anthropic-ratelimit-unified-5h-reset", "1795713136"),
    ("anthropic-ratelimit-unified-5h-utilization", "0.07"), ("anthropic-ratelimit-unified-7d-status", "allowed"),
    ("anthropic-ratelimit-unified-7d-reset", "1796299936"), ("anthropic-ratelimit-unified-7d-utilization", "0.21"),
    ("content-type", "application/json; charset=utf-8"), ("content-length", "475"),
]
UPSTREAM = "http://127.0.0.1:9"

Step = Callable[[], Awaitable[Any]]


def call_kwargs() -> dict[str, Any]:
    from litellm.types.proxy.litellm_pre_call_utils import RedactedDict

    return {
        "model": "anthropic/claude-sonnet-4-6", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 20,
        "api_key": "claude-oauth", "metadata": {"headers": dict(CLIENT_HEADERS), "used_client_oauth_token": False},
        "secret_fields": {"raw_headers": RedactedDict(CLIENT_HEADERS)},
        "litellm_call_id": "aa9445e5-dba8-4847-bdfa-d3109dacb268", "model_info": {"id": "6b85d0c3", "db_model": False},
        "timeout": 6000.0, "client": None, "stream": False,
    }


async def steps(directory: Path) -> dict[str, Step]:
    """``baseline``, ``hook`` and ``all``, each one request's worth, on a logged-in file store in ``directory``."""
    os.environ.update(CLAUDE_TOKEN_FILE=str(directory / "tokens.json"), CLAUDE_TOKEN_ENCRYPTION_KEY="5e" * 32,
                      CLAUDE_API_BASE=UPSTREAM)
    import httpx

    from litellm_claude_oauth.hook import ClaudeOAuthHandler
    from litellm_claude_oauth.manager import TokenManager
    from litellm_claude_oauth.settings import Settings
    from litellm_claude_oauth.tokens import TokenSet

    manager = TokenManager.from_settings(Settings.from_env())
    await manager.import_tokens(TokenSet(access_token="sk-ant-oat01-" + "a" * 80,
                                         refresh_token="sk-ant-ort01-" + "b" * 80, expires_at=time.time() + 8 * 3600))
    handler = ClaudeOAuthHandler(manager)
    answer = httpx.Response(200, headers=ANSWER_HEADERS)

    async def baseline() -> httpx.Request:
        call_kwargs()
        return httpx.Request("POST", f"{UPSTREAM}/v1/messages", headers=UPSTREAM_HEADERS)

    async def hook() -> tuple[dict[str, Any], httpx.Request]:
        kwargs = await handler.async_pre_call_deployment_hook(call_kwargs(), "acompletion")
        assert kwargs is not None
        return kwargs, httpx.Request("POST", f"{UPSTREAM}/v1/messages", headers=UPSTREAM_HEADERS)

    async def both() -> httpx.Request:
        kwargs, request = await hook()
        flow = kwargs["client"].client.auth.async_auth_flow(request)
        sent = await flow.__anext__()
        with contextlib.suppress(StopAsyncIteration):  # the flow ends at a 200
            await flow.asend(answer)
        return sent

    return {"baseline": baseline, "hook": hook, "all": both}


async def _repeat(step: Step, times: int) -> None:
    for _ in range(times):
        await step()


async def cpu_times(rounds: int, requests: int) -> dict[str, list[float]]:
    """Microseconds of CPU per request of each step, per round (steps alternate within a round)."""
    with tempfile.TemporaryDirectory(prefix="bench-hot-path-") as tmp:
        found = await steps(Path(tmp))
        for step in found.values():
            await _repeat(step, 1000)
        gc.collect()
        gc.freeze()  # what the warm-up left behind stays out of the collections being timed
        times: dict[str, list[float]] = {name: [] for name in found}
        for _ in range(rounds):
            for name, step in found.items():
                started = time.process_time()
                await _repeat(step, requests)
                times[name].append((time.process_time() - started) / requests * 1e6)
        return times


async def _collect_instructions(requests: int, helper: Path) -> None:
    """Under callgrind: one dump per step (baseline, hook, all), collected only while it runs."""
    lib = ctypes.CDLL(str(helper))
    with tempfile.TemporaryDirectory(prefix="bench-hot-path-") as tmp:
        found = await steps(Path(tmp))
        lib.start()
        for step in found.values():
            await _repeat(step, 300)
        gc.collect()
        gc.freeze()
        gc.disable()  # a collection would land in whichever step allocated the last object
        for step in found.values():
            lib.zero()
            lib.toggle()
            await _repeat(step, requests)
            lib.toggle()
            lib.dump()


def instructions(requests: int) -> dict[str, float]:
    """Instructions per request of each step, counted by callgrind in a child process."""
    missing = [tool for tool in ("valgrind", "gcc") if shutil.which(tool) is None]
    if missing or not Path("/usr/include/valgrind/callgrind.h").exists():
        raise SystemExit("--instructions needs valgrind, its headers (valgrind/callgrind.h) and gcc: "
                         f"missing {', '.join(missing) or 'valgrind/callgrind.h'}")
    with tempfile.TemporaryDirectory(prefix="bench-hot-path-cg-") as tmp:
        work = Path(tmp)
        (work / "helper.c").write_text(_HELPER)
        subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(work / "helper.so"), str(work / "helper.c")],
                       check=True)
        out = work / "callgrind.out"
        env = {**os.environ, _UNDER_CALLGRIND: str(work / "helper.so")}
        subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no", "--collect-atstart=no",
                        f"--callgrind-out-file={out}", sys.executable, "-m", "bench.hot_path",
                        "--requests", str(requests)], env=env, check=True, capture_output=True)
        totals = [_total(work / f"callgrind.out.{n}") for n in (1, 2, 3)]
    return {name: total / requests for name, total in zip(("baseline", "hook", "all"), totals, strict=True)}


def _total(dump: Path) -> int:
    for line in dump.read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise SystemExit(f"{dump}: no totals line")


def report(costs: dict[str, float], unit: str, spread: dict[str, tuple[float, float]] | None = None) -> None:
    base, hook, every = costs["baseline"], costs["hook"], costs["all"]
    print(f"per request, {unit}: baseline (kwargs + httpx.Request) {base:,.1f}")
    print(f"  hook  {hook - base:,.1f}")
    print(f"  flow  {every - hook:,.1f}")
    print(f"  hook + flow  {every - base:,.1f}  (all/baseline {every / base:.3f})")
    if spread:
        low, high = spread["all"]
        print(f"  spread of hook + flow over rounds: {low - base:,.1f} .. {high - base:,.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instructions", action="store_true", help="count instructions under callgrind")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=None,
                        help="per step and round (20000; 500 with --instructions)")
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS", "True")
    if helper := os.environ.get(_UNDER_CALLGRIND):
        asyncio.run(_collect_instructions(args.requests, Path(helper)))
        return
    if args.instructions:
        report(instructions(args.requests or 500), "instructions")
        return
    times = asyncio.run(cpu_times(args.rounds, args.requests or 20000))
    report({name: statistics.median(values) for name, values in times.items()}, "µs of CPU (median of rounds)",
           {name: (min(values), max(values)) for name, values in times.items()})


if __name__ == "__main__":
    main()
