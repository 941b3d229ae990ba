"""Which part of the plugin costs what: several proxies loaded at once, CPU per request of each.

Every variant serves ``config.oauth.yaml``; ``static`` is the plugin's baseline from
bench.overhead (the static key in place of each marker, no plugin). The others:

* ``plugin`` (as shipped), ``plugin-noid`` (``CLAUDE_CODE_SYSTEM_PROMPT=""``);
* ``static2``: a second, identical static proxy: the spread between processes that
  run the same code (up to ~4% here), below which no difference means anything;
* ``static+id``: its clients send the identity line themselves;
* ``static+hook``, ``static+client``, ``static+cooldown``, ``static+identity``: one step of
  the plugin's hook each (bench/probes.py).

All are loaded at the same time for ``--seconds`` each round (bench.common.simultaneous:
the order in which their clients start rotates every round). Prints, per variant, the
median CPU time per request (from /proc) and its ratio to ``static`` (median over
rounds, min, max).

    .venv/bin/python -m bench.overhead_parts [--variants plugin,static,static2,static+hook]
        [--rounds 8] [--seconds 10] [--concurrency 6]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import yaml

from bench.common import freezable, freeze, simultaneous, spread
from bench.overhead import IDENTITY, static_config
from tests.e2e.harness import ROOT, FakeProcess, Proxy, login_and_export, proxy_env, start_proxy, stop_proxy

# Haiku: the API serves it without the identity line, so every variant (with or without it) works.
MODEL = "claude-haiku-4.5"
PROBES = {"hook": "bench.probes.hook", "client": "bench.probes.client", "cooldown": "bench.probes.cooldown",
          "identity": "bench.probes.identity"}  # fmt: skip
VARIANTS = ("plugin", "plugin-noid", "static", "static2", "static+id", *(f"static+{p}" for p in PROBES))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="plugin,plugin-noid,static,static2")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of a round")
    parser.add_argument("--concurrency", type=int, default=6, help="in flight per variant")
    args = parser.parse_args()
    wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
    if "static" not in wanted or any(v not in VARIANTS for v in wanted):
        parser.error(f"--variants: 'static' and any of {', '.join(VARIANTS)}")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

    tmp = Path(tempfile.mkdtemp(prefix="bench-overhead-parts-"))
    fake = FakeProcess(tmp)
    proxies: dict[str, Proxy] = {}
    try:
        env = proxy_env(fake, tmp, LITELLM_LOG="ERROR", **freezable())
        token = login_and_export(env, fake)
        for name in wanted:
            config, variant_env = ROOT / "config.oauth.yaml", dict(env)
            if name.startswith("static"):
                probe = PROBES.get(name.removeprefix("static+"))
                config = tmp / f"{name}.yaml"
                config.write_text(yaml.safe_dump(static_config(token, fake.url, [probe] if probe else [])))
            if name == "plugin-noid":
                variant_env["CLAUDE_CODE_SYSTEM_PROMPT"] = ""
            proxies[name] = start_proxy(variant_env, tmp / f"{name}.log", config=config)
        systems = {"static+id": IDENTITY}
        simultaneous(proxies, 1, 3.0, args.concurrency, MODEL, systems)  # warm-up
        freeze(proxies.values())  # start-up's heap out of full collections, in every variant alike
        results = simultaneous(proxies, args.rounds, args.seconds, args.concurrency, MODEL, systems)
    finally:
        for name, proxy in proxies.items():
            stop_proxy(proxy, check_log=name.startswith("plugin"))
        fake.stop()

    print(f"{args.rounds} rounds x {args.seconds:g} s, all variants loaded at once, "
          f"concurrency {args.concurrency} each, model {MODEL}")
    cpu = {name: [c * 1000 for c in results[name]["cpu"]] for name in wanted}
    for name in wanted:
        ratios = [a / b for a, b in zip(cpu[name], cpu["static"], strict=True)]
        print(f"{name:<16} CPU per request {statistics.median(cpu[name]):6.2f} ms; "
              f"ratio to static {spread(ratios, '{:.3f}')}")


if __name__ == "__main__":
    main()
