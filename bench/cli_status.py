"""How long `litellm claude status` takes, beside a bare `python -c pass` in the same run.

Runs both as fresh processes, alternating A B B A each round so drifting machine load
hits both alike, against a throwaway encrypted file store holding one logged-in
account (so status reads and decrypts a real record). Prints the median and the
spread (min, max) of each, wall and CPU, their ratio, and status's own cost (the
difference).
A third line, timed in the same rounds, is a bare ``import litellm_claude_oauth.manager``:
the floor under status for as long as status goes through the TokenManager.
With --imports, also the slowest top-level imports of one status run
(``python -X importtime``), which is where the time goes.

    .venv/bin/python -m bench.cli_status [--runs 20] [--imports]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 0.3


def isolated_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLAUDE_", "REDIS_", "DATABASE_URL", "USER_ID"))}
    env.update(
        CLAUDE_TOKEN_FILE=str(root / "claude_tokens.json"),
        CLAUDE_TOKEN_ENCRYPTION_KEY=secrets.token_hex(32),
        CLAUDE_OAUTH_TOKEN_URL="http://127.0.0.1:9/v1/oauth/token",  # never contacted by status
    )
    return env


def log_in(litellm: Path, env: dict[str, str]) -> None:
    doc = {"access_token": "sk-ant-oat01-bench", "refresh_token": "sk-ant-ort01-bench",
           "expires_at": time.time() + 8 * 3600}
    proc = subprocess.run([str(litellm), "claude", "import", "-"], input=json.dumps(doc), env=env,
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        sys.exit(f"could not set up the store: {proc.stderr.strip()}")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], env: dict[str, str], cpu: list[float] | None = None) -> float:
    """Wall time of one run; its CPU time (user + system) goes to ``cpu``.

    CPU time barely moves with the machine's load, so it is the steadier figure on a
    shared machine; wall time is what a user waits.
    """
    cpu_before = _children_cpu()
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {proc.stderr.decode().strip()}")
    if cpu is not None:
        cpu.append(_children_cpu() - cpu_before)
    return elapsed


def slowest_imports(cmd: list[str], env: dict[str, str], top: int = 12) -> list[tuple[float, str]]:
    proc = subprocess.run([sys.executable, "-X", "importtime", *cmd], env=env, capture_output=True, text=True)
    rows: list[tuple[float, str]] = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "[us]" in line:
            continue
        _, cumulative, name = line.split("|")
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        if depth <= 1:  # top-level imports and what they import directly
            rows.append((int(cumulative) / 1e6, ("  " * depth) + name.strip()))
    return sorted(rows, reverse=True)[:top]


def describe(values: list[float]) -> str:
    median, low, high = (v * 1000 for v in (statistics.median(values), min(values), max(values)))
    return f"median {median:6.1f} ms  (min {low:6.1f}, max {high:6.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="runs of each command (even; default 20)")
    parser.add_argument("--imports", action="store_true", help="also show the slowest imports of one status run")
    args = parser.parse_args()
    litellm = Path(sys.executable).parent / "litellm"
    if not litellm.exists():
        sys.exit(f"{litellm} not found: install the package into this interpreter's environment first")

    with tempfile.TemporaryDirectory() as root:
        env = isolated_env(Path(root))
        log_in(litellm, env)
        status_cmd = [str(litellm), "claude", "status"]
        baseline_cmd = [sys.executable, "-c", "pass"]
        manager_cmd = [sys.executable, "-c", "import litellm_claude_oauth.manager"]
        timed(status_cmd, env)  # warm the page cache and .pyc files
        timings: dict[str, list[float]] = {"status": [], "python -c pass": [], "import manager": []}
        cpu: dict[str, list[float]] = {name: [] for name in timings}
        ratios: list[float] = []
        for _ in range(max(1, args.runs // 2)):
            a1 = timed(status_cmd, env, cpu["status"])
            b1 = timed(baseline_cmd, env, cpu["python -c pass"])
            m = timed(manager_cmd, env, cpu["import manager"])
            b2 = timed(baseline_cmd, env, cpu["python -c pass"])
            a2 = timed(status_cmd, env, cpu["status"])
            timings["status"] += [a1, a2]
            timings["python -c pass"] += [b1, b2]
            timings["import manager"].append(m)
            ratios.append((a1 + a2) / (b1 + b2))
        imports = slowest_imports(["-m", "litellm_claude_oauth", "claude", "status"], env) if args.imports else []

    status_median = statistics.median(timings["status"])
    baseline_median = statistics.median(timings["python -c pass"])
    print("wall time:")
    print(f"  litellm claude status  {describe(timings['status'])}")
    print(f"  python -c pass         {describe(timings['python -c pass'])}")
    print(f"  import manager only    {describe(timings['import manager'])}")
    print("CPU time (user + system):")
    print(f"  litellm claude status  {describe(cpu['status'])}")
    print(f"  python -c pass         {describe(cpu['python -c pass'])}")
    print(f"  import manager only    {describe(cpu['import manager'])}")
    print(f"wall ratio (per ABBA round) median {statistics.median(ratios):.1f}x  "
          f"(min {min(ratios):.1f}, max {max(ratios):.1f})")
    print(f"status's own cost: {(status_median - baseline_median) * 1000:.1f} ms wall, "
          f"{(statistics.median(cpu['status']) - statistics.median(cpu['python -c pass'])) * 1000:.1f} ms CPU")
    verdict = "meets" if status_median < TARGET_SECONDS else "misses"
    print(f"target < {TARGET_SECONDS:.2f} s: {verdict} ({status_median:.3f} s)")
    if imports:
        print("\nslowest imports of one status run (cumulative):")
        for seconds, name in imports:
            print(f"  {seconds * 1000:7.1f} ms  {name}")


if __name__ == "__main__":
    main()
