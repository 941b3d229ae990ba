"""Refresh storms: N proxy workers x C concurrent requests all need a new access token at once.

Against the real proxy (``--num_workers N``) and one fake Anthropic process (strict:
single-use refresh tokens), with the file store and no Redis by default
(``--store postgres`` for PostgreSQL + Redis):

  revoked   the upstream rejects every access token at once (a server-side
            revocation): every request meets a 401 and is retried on a refreshed token;
  twice     as revoked, and the token the first refresh fetched is refused once more (the
            first request to retry on it meets a 401 again, as after a second revocation):
            that request needs a second refresh, so exactly 2 per storm;
  clock     the token every worker holds reaches its refresh margin;
  cli       `litellm claude refresh` rotates the token while the proxy serves a steady
            load; then every access token is revoked: the proxy must refresh with the
            CLI's new refresh token (a spent one would fail), and a second CLI refresh
            must still work;
  relogin   the grant ends (refresh -> invalid_grant) and every token is revoked: a burst
            of 401s; then a fresh login over HTTP, and the very next burst must succeed
            (LiteLLM's router must not have put the deployment in cooldown).

Baseline: the same burst on a valid token, in the same run, in ABBA order with the
revoked storm (baseline, storm, storm, baseline each round). Prints per storm the
requests, failures, upstream refreshes, and the burst's wall time with its ratio to the
baseline's (median, min and max over the rounds).

Invariants (exit status 1 when one breaks): 0 failed client requests in every storm
(the relogin burst's 401s are expected; after the login, 0 again); at most 2 upstream
refreshes per storm; the refresh token stored after the CLI's rotation still works.

    .venv/bin/python -m bench.refresh_storm [--workers 4] [--concurrency 40] [--rounds 3] [--store file|postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx

from bench.common import percentile, spread
from tests.backends import TEST_DSN, ensure_database, flush_redis
from tests.e2e.harness import MASTER_KEY, FakeProcess, Proxy, cli_login, proxy_env, start_proxy, stop_proxy

# CLAUDE_OAUTH_REFRESH_MARGIN_SECONDS. The margin is capped at half a token's lifetime, so
# the clock storm's token lives 2 * MARGIN + HOLD seconds: fresh for MARGIN + HOLD, then due.
MARGIN = 2
HOLD = 3.0
MAX_REFRESHES = 2  # per storm: one, plus one if the first only found a token revoked too
HELD_REFRESH = 2.0  # seconds the twice storm's first refresh is held at the fake
TRANSPORT_ERROR = -1
# Not the tests' Redis database (CLAUDE_OAUTH_TEST_REDIS_URL, index 15): the run flushes this one.
BENCH_REDIS_URL = os.environ.get("CLAUDE_OAUTH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
CLI_WINDOW = 8.0  # seconds of steady load around the CLI refresh (and of its baseline)


@dataclass
class Burst:
    statuses: list[int]
    latencies: list[float]
    wall: float
    refreshes: int

    @property
    def failed(self) -> int:
        return sum(status != 200 for status in self.statuses)


@dataclass
class Storm:
    name: str
    bursts: list[Burst] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)  # burst wall time / the round's baseline

    @property
    def requests(self) -> int:
        return sum(len(b.statuses) for b in self.bursts)

    @property
    def failed(self) -> int:
        return sum(b.failed for b in self.bursts)

    @property
    def max_refreshes(self) -> int:
        return max((b.refreshes for b in self.bursts), default=0)


def _client(proxy: Proxy, concurrency: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=proxy.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=120,
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
    )  # fmt: skip


def _body(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10}


async def _one(client: httpx.AsyncClient, model: str) -> tuple[int, float]:
    started = time.perf_counter()
    try:
        status = (await client.post("/v1/chat/completions", json=_body(model))).status_code
    except httpx.HTTPError:
        status = TRANSPORT_ERROR
    return status, time.perf_counter() - started


def _fire(proxy: Proxy, concurrency: int, model: str) -> tuple[list[tuple[int, float]], float]:
    """``concurrency`` requests at once: (status, latency) each, and the wall time."""

    async def run() -> tuple[list[tuple[int, float]], float]:
        async with _client(proxy, concurrency) as client:
            started = time.perf_counter()
            results = await asyncio.gather(*(_one(client, model) for _ in range(concurrency)))
            return list(results), time.perf_counter() - started

    return asyncio.run(run())


def burst(proxy: Proxy, fake: FakeProcess, concurrency: int, model: str) -> Burst:
    """``concurrency`` requests at once; the refreshes they cost are read from the fake."""
    before = fake.state()["refresh_count"]
    results, wall = _fire(proxy, concurrency, model)
    refreshes = fake.state()["refresh_count"] - before
    return Burst([s for s, _ in results], [t for _, t in results], wall, refreshes)


def burst_revoked_twice(proxy: Proxy, fake: FakeProcess, concurrency: int, model: str) -> Burst:
    """Every token revoked; the first refresh is held until every request has met its 401, then
    the first retry on the refreshed token is refused too (one forced 401)."""
    fake.control(expire_all_access_tokens=True, token_delay=HELD_REFRESH)
    start = fake.state()
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(_fire, proxy, concurrency, model)
        deadline = time.monotonic() + 60
        while True:
            now = fake.state()
            if (now["refresh_count"] > start["refresh_count"]
                    and now["messages_count"] >= start["messages_count"] + concurrency):  # fmt: skip
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the held refresh or the first attempts never reached the fake")
            time.sleep(0.01)
        fake.control(token_delay=0.0, force_401_next=1)  # the held refresh keeps its delay
        results, wall = running.result()
    refreshes = fake.state()["refresh_count"] - start["refresh_count"]
    return Burst([s for s, _ in results], [t for _, t in results], wall, refreshes)


def steady_load(proxy: Proxy, concurrency: int, model: str, stop: threading.Event) -> list[tuple[int, float]]:
    """Closed-loop requests until ``stop`` is set (run it in a thread)."""

    async def run() -> list[tuple[int, float]]:
        results: list[tuple[int, float]] = []

        async def worker(client: httpx.AsyncClient) -> None:
            while not stop.is_set():
                results.append(await _one(client, model))

        async with _client(proxy, concurrency) as client:
            await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return results

    return asyncio.run(run())


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    litellm = Path(sys.executable).parent / "litellm"
    return subprocess.run([str(litellm), "claude", *args], env=env, capture_output=True, text=True, timeout=120)


def http_login(proxy: Proxy, fake: FakeProcess) -> None:
    """A fresh login through the proxy's own routes (what the admin UI does): no CLI start-up on the clock."""
    with proxy.client() as client:
        start = client.get("/auth/claude/oauth/start")
        if start.status_code != 200:
            raise RuntimeError(f"login start over HTTP: {start.status_code} {start.text[:300]}")
        code, state = fake.authorize(start.json()["authorization_url"])
        done = client.post("/auth/claude/oauth/exchange", json={"code": f"{code}#{state}"})
        if done.status_code != 200:
            raise RuntimeError(f"login exchange over HTTP: {done.status_code} {done.text[:300]}")


@contextlib.contextmanager
def backend_env(store: str) -> Iterator[dict[str, str]]:
    """The store's environment. PostgreSQL: a schema of the run's own on the test database, and
    a Redis database index the tests do not use, so tests running meanwhile keep their tables and keys."""
    if store == "file":
        yield {}  # proxy_env already points at a token file in the run's temp dir, and drops REDIS_*
        return
    import psycopg
    from psycopg import sql

    dsn = ensure_database(TEST_DSN)
    schema = f"bench_storm_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    flush_redis(BENCH_REDIS_URL)
    try:
        yield {"CLAUDE_TOKEN_STORE": "postgres", "REDIS_URL": BENCH_REDIS_URL,
               "CLAUDE_OAUTH_DATABASE_URL": dsn + ("&" if "?" in dsn else "?") + urlencode({"schema": schema})}
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        flush_redis(BENCH_REDIS_URL)


@dataclass
class CliPhase:
    baseline: list[tuple[int, float]] = field(default_factory=list)  # steady load, no CLI
    load: list[tuple[int, float]] = field(default_factory=list)
    refreshes: int = 0
    cli_exit: int = 0
    cli_error: str = ""
    after: Burst | None = None  # the revocation storm after the CLI's rotation
    second_cli_exit: int = 0
    second_cli_error: str = ""


@dataclass
class ReloginPhase:
    burst: Burst | None = None  # the 401 burst
    login_s: float = 0.0
    after: Burst | None = None


@dataclass
class Run:
    baseline: Storm = field(default_factory=lambda: Storm("baseline"))
    revoked: Storm = field(default_factory=lambda: Storm("revoked"))
    twice: Storm = field(default_factory=lambda: Storm("twice"))
    clock: Storm = field(default_factory=lambda: Storm("clock"))
    cli: CliPhase = field(default_factory=CliPhase)
    relogin: ReloginPhase = field(default_factory=ReloginPhase)


def run_rounds(run: Run, proxy: Proxy, fake: FakeProcess, rounds: int, concurrency: int, model: str) -> None:
    for _ in range(rounds):
        walls: dict[str, list[float]] = {"baseline": [], "revoked": []}
        for kind in ("baseline", "revoked", "revoked", "baseline"):
            if kind == "revoked":
                fake.control(expire_all_access_tokens=True)
            b = burst(proxy, fake, concurrency, model)
            getattr(run, kind).bursts.append(b)
            walls[kind].append(b.wall)
        base = statistics.mean(walls["baseline"])
        run.revoked.ratios += [w / base for w in walls["revoked"]]

        b = burst_revoked_twice(proxy, fake, concurrency, model)
        run.twice.bursts.append(b)
        run.twice.ratios.append(max(0.0, b.wall - HELD_REFRESH) / base)

        # Clock storm: hand out a token that is fresh for MARGIN + HOLD seconds, let every worker take it, wait.
        fake.control(access_ttl=2 * MARGIN + HOLD, expire_all_access_tokens=True)
        burst(proxy, fake, concurrency, model)  # the refresh that issues the short-lived token
        issued = time.monotonic()
        burst(proxy, fake, concurrency, model)  # workers that missed the first burst take it now
        fake.control(access_ttl=3600)
        time.sleep(max(0.0, issued + MARGIN + HOLD + 0.5 - time.monotonic()))
        b = burst(proxy, fake, concurrency, model)
        run.clock.bursts.append(b)
        run.clock.ratios.append(b.wall / base)


def run_cli(run: Run, proxy: Proxy, fake: FakeProcess, concurrency: int, model: str) -> None:
    phase = run.cli
    steady = max(1, concurrency // 4)
    with ThreadPoolExecutor(1) as pool:
        # Baseline: the same steady load for as long, without the CLI.
        stop = threading.Event()
        future = pool.submit(steady_load, proxy, steady, model, stop)
        time.sleep(CLI_WINDOW)
        stop.set()
        phase.baseline = future.result()

        stop = threading.Event()
        before = fake.state()["refresh_count"]
        future = pool.submit(steady_load, proxy, steady, model, stop)
        started = time.monotonic()
        time.sleep(1.0)
        done = cli(proxy.env, "refresh")
        phase.cli_exit, phase.cli_error = done.returncode, (done.stdout + done.stderr).strip()[-300:]
        # Past the CLI's exit by more than the file-watch poll (1 s), and at least as long as the baseline.
        time.sleep(max(2.5, CLI_WINDOW - (time.monotonic() - started)))
        stop.set()
        phase.load = future.result()
        phase.refreshes = fake.state()["refresh_count"] - before
    fake.control(expire_all_access_tokens=True)
    phase.after = burst(proxy, fake, concurrency, model)
    again = cli(proxy.env, "refresh")
    phase.second_cli_exit, phase.second_cli_error = again.returncode, (again.stdout + again.stderr).strip()[-300:]


def run_relogin(run: Run, proxy: Proxy, fake: FakeProcess, concurrency: int, model: str) -> None:
    phase = run.relogin
    fake.control(end_refresh_lifetime=True, expire_all_access_tokens=True)
    phase.burst = burst(proxy, fake, concurrency, model)
    started = time.perf_counter()
    http_login(proxy, fake)
    phase.login_s = time.perf_counter() - started
    phase.after = burst(proxy, fake, concurrency, model)


def report(run: Run, args: argparse.Namespace) -> list[str]:
    """Print the figures; return the invariants that broke."""
    store = "PostgreSQL + Redis" if args.store == "postgres" else "file store, no Redis"
    print(f"{args.workers} workers, {args.concurrency} concurrent requests per burst, {store}, model {args.model}, "
          f"{args.rounds} ABBA rounds")  # fmt: skip
    print(f"{'storm':<9} {'requests':>8} {'failed':>6} {'refreshes':>9}   {'burst wall ms: median (min, max)':<36}"
          f" ratio to baseline: median (min, max)")  # fmt: skip
    for storm in (run.baseline, run.revoked, run.twice, run.clock):
        walls = spread([b.wall * 1000 for b in storm.bursts], "{:.0f}")
        ratio = spread(storm.ratios) if storm.ratios else "1 (the baseline)"
        refreshes = "/".join(str(b.refreshes) for b in storm.bursts)
        print(f"{storm.name:<9} {storm.requests:8d} {storm.failed:6d} {refreshes:>9}   {walls:<36} {ratio}")

    print(f"(twice: its first refresh is held {HELD_REFRESH:.0f} s at the fake; the ratio leaves that out)")
    broken: list[str] = []
    for storm in (run.baseline, run.revoked, run.twice, run.clock):
        if storm.failed:
            codes = Counter(s for b in storm.bursts for s in b.statuses if s != 200)
            broken.append(f"{storm.name}: {storm.failed} failed client requests {dict(codes)}")
        if storm is run.clock and any(b.refreshes == 0 for b in storm.bursts):
            broken.append("clock: a storm without a refresh: the token never reached its margin (bench timing)")
        if storm is run.twice and any(b.refreshes < 2 for b in storm.bursts) and not storm.failed:
            broken.append("twice: a storm with one refresh: the forced 401 met a first attempt (bench timing)")
        if storm.max_refreshes > MAX_REFRESHES:
            broken.append(f"{storm.name}: {storm.max_refreshes} upstream refreshes in one storm (max {MAX_REFRESHES})")

    phase = run.cli
    base_lat = [t for s, t in phase.baseline if s == 200] or [0.0]
    load_lat = [t for s, t in phase.load if s == 200] or [0.0]
    load_failed = sum(s != 200 for s, _ in phase.load) + sum(s != 200 for s, _ in phase.baseline)
    ratios = [percentile(load_lat, q) / max(percentile(base_lat, q), 1e-9) for q in (0.5, 0.99)]
    print(f"cli: `litellm claude refresh` behind the running proxy, steady load of {max(1, args.concurrency // 4)}: "
          f"{len(phase.load)} requests, {load_failed} failed, {phase.refreshes} upstream refreshes (the CLI's: 1), "
          f"CLI exit {phase.cli_exit}; p50/p99 {percentile(load_lat, 0.5) * 1000:.0f}/"
          f"{percentile(load_lat, 0.99) * 1000:.0f} ms vs {percentile(base_lat, 0.5) * 1000:.0f}/"
          f"{percentile(base_lat, 0.99) * 1000:.0f} ms without the CLI ({len(phase.baseline)} requests), "
          f"ratio {ratios[0]:.2f}/{ratios[1]:.2f}")  # fmt: skip
    if phase.after is not None:
        print(f"     then every token revoked: {len(phase.after.statuses)} requests, {phase.after.failed} failed, "
              f"{phase.after.refreshes} refreshes; a second CLI refresh exits {phase.second_cli_exit}")
    if phase.cli_exit:
        broken.append(f"cli: `litellm claude refresh` exited {phase.cli_exit}: {phase.cli_error}")
    if load_failed:
        codes = Counter(s for s, _ in phase.baseline + phase.load if s != 200)
        broken.append(f"cli: {load_failed} client requests failed under the steady load (with or without the CLI) "
                      f"{dict(codes)}")
    if phase.refreshes > MAX_REFRESHES:
        broken.append(f"cli: {phase.refreshes} upstream refreshes around one CLI refresh")
    if phase.after is not None and (phase.after.failed or phase.after.refreshes > MAX_REFRESHES):
        broken.append(f"cli: after the CLI's rotation a revocation storm had {phase.after.failed} failures and "
                      f"{phase.after.refreshes} refreshes (a spent refresh token was used?)")  # fmt: skip
    if phase.second_cli_exit:
        broken.append(f"cli: the stored refresh token no longer works: {phase.second_cli_error}")

    relogin = run.relogin
    if relogin.burst is not None and relogin.after is not None:
        codes = Counter(relogin.burst.statuses)
        print(f"relogin: grant ended + tokens revoked: {dict(codes)} (401 expected); login over HTTP "
              f"{relogin.login_s * 1000:.0f} ms; next burst {len(relogin.after.statuses)} requests, "
              f"{relogin.after.failed} failed")  # fmt: skip
        if relogin.after.failed:
            after_codes = Counter(s for s in relogin.after.statuses if s != 200)
            broken.append(f"relogin: {relogin.after.failed} requests failed right after a fresh login "
                          f"{dict(after_codes)}"
                          " (429 = LiteLLM's router cooled the deployment down after the 401 burst)")  # fmt: skip
    print(f"invariants: 0 failed client requests, <= {MAX_REFRESHES} upstream refreshes per storm, "
          "the rotated refresh token stays usable, a fresh login works at once: "
          + ("all held" if not broken else f"{len(broken)} BROKEN"))
    for line in broken:
        print(f"  BROKEN {line}")
    return broken


def measure(run: Run, args: argparse.Namespace, tmp: Path) -> None:
    with contextlib.ExitStack() as stack:
        fake = FakeProcess(tmp, access_ttl=3600)
        stack.callback(fake.stop)
        backend = stack.enter_context(backend_env(args.store))
        # proxy_env reads only the fake's URLs, which FakeProcess has too.
        env = proxy_env(
            fake, tmp, LITELLM_LOG="ERROR", CLAUDE_OAUTH_REFRESH_MARGIN_SECONDS=str(MARGIN),  # type: ignore[arg-type]
            **backend,
        )  # fmt: skip
        proxy = start_proxy(env, tmp / "proxy.log", "--num_workers", str(args.workers), timeout=600)
        stack.callback(stop_proxy, proxy)
        cli_login(env, fake)
        for _ in range(2):  # warm: every worker has loaded the token and opened its connections
            burst(proxy, fake, args.concurrency, args.model)
        run_rounds(run, proxy, fake, args.rounds, args.concurrency, args.model)
        run_cli(run, proxy, fake, args.concurrency, args.model)
        run_relogin(run, proxy, fake, args.concurrency, args.model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--store", choices=["file", "postgres"], default="file")
    parser.add_argument("--model", default="claude-haiku-4.5")
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS", "True")

    tmp = Path(tempfile.mkdtemp(prefix="bench-storm-"))
    run = Run()
    try:
        measure(run, args, tmp)
    except Exception:
        print(f"proxy log: {tmp / 'proxy.log'}; fake log: {tmp / 'fake.log'}", file=sys.stderr)
        raise
    broken = report(run, args)
    if broken:
        print(f"proxy log: {tmp / 'proxy.log'}")
    sys.exit(1 if broken else 0)

if __name__ == "__main__":
    main()
