"""kill -9 during refresh, in a loop, against the encrypted file store.

Each loop picks one of the logged-in accounts, starts a process that force-refreshes
it (what ``litellm claude refresh`` does) and SIGKILLs that process at a random moment,
then checks what the kill left behind:

* the token file still parses and decrypts (``FileTokenStore.load`` of every account);
* every account's stored refresh token is still accepted by the fake Anthropic (the
  killed process's account and the bystanders alike);
* temp files left by killed writers are counted (they are expected; nothing removes them);
* neither lock is wedged: a refresh in a fresh process succeeds within a few seconds.

A lost refresh token is blamed on the upstream when the killed process's request
reached the server, the server rotated the token (so the one in the file died), and
the process was killed before it had saved the new one: no client can prevent that.
Anything else (a token the server never rotated but we cannot find, a save that
completed but is not in the file) is counted as lost by us. Both modes run: with
refresh-token rotation (as Anthropic does) and without, where any loss is ours.

Kill timing: the seeded RNG picks a stratum, then a uniform moment inside it. 10% of
loops kill a process while it starts up (spawn -> imports done); the rest send "go" to
an already started process and kill it somewhere between "go" and 25% past its save:
15% before its request reaches the fake, 30% between that and reading the answer, 30%
between the answer and the completed save, 15% after. Each stratum is timed from the
event that opens it (go, the request's arrival, the child's "answer read" and "saved"
markers, read live from its stdout) for as long as it lasted in recent un-killed
refreshes, plus this loop's ``token_delay`` (the fake waits 10-50 ms, random, before
answering) and fsync stall (the child sleeps 0-15 ms, random, in each fsync: test-side
fault injection that widens the file-write window; the store's code is unchanged).
Timings still jitter, so the phase a kill actually landed in is read from the markers
the child printed before dying and from the fake's request counter.

    .venv/bin/python -m bench.kill_loop [--loops 100] [--seed N] [--accounts 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import select
import signal
import stat
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from litellm_claude_oauth.manager import TokenManager
from litellm_claude_oauth.settings import Settings
from litellm_claude_oauth.store import AccountRecord, cipher_for
from litellm_claude_oauth.store.file import FileTokenStore
from tests.fake_anthropic import FakeAnthropic

ACCOUNTS = ("default", "alice", "bob")
ENCRYPTION_KEY = "c3" * 32
RECOVERY_TIMEOUT = 8.0  # seconds from "go" to success for the refresh after a kill
WINDOW_SLACK = 1.25
# Where kills are aimed (the phase is then read from what actually happened):
STRATA = (
    ("startup", 0.10),  # spawn -> imports done, never told to refresh
    ("pre-call", 0.15),  # go -> the request reaches the fake (store reads, lock, HTTP client set-up)
    ("call", 0.30),  # request received -> answer read, token_delay included
    ("write", 0.30),  # answer received -> save completed
    ("post", 0.15),  # save completed -> 25% later (process winding down)
)

PHASES = (
    "startup",  # killed while importing, before it was told to refresh
    "before-upstream",  # told to refresh; the fake never saw its request
    "during-upstream",  # the fake saw the request; the answer had not been read
    "before-write",  # answer read, file write not started
    "during-write",  # inside FileTokenStore._write (temp file, fsync, rename, dir fsync)
    "after-save",  # the save completed (or the process had already exited)
)
UPSTREAM_GROUPS = {
    "before": ("startup", "before-upstream"),
    "during": ("during-upstream",),
    "after": ("before-write", "during-write", "after-save"),
}

# The refreshing process: marks every step on stdout (unbuffered), so the phase a kill
# landed in can be read from what it printed before dying.
CHILD = r"""
import asyncio, hashlib, json, os, sys, time

def mark(text):
    # CLOCK_MONOTONIC is system-wide on Linux: the parent can compare these stamps with its own.
    os.write(1, ("%s %.6f\n" % (text, time.monotonic())).encode())

def fp(token):
    return hashlib.sha256(token.encode()).hexdigest()[:16] if token else "-"

from litellm_claude_oauth.manager import TokenManager
from litellm_claude_oauth.oauth import OAuthClient
from litellm_claude_oauth.store.file import FileTokenStore

_write, _refresh, _fsync = FileTokenStore._write, OAuthClient.refresh, os.fsync
STALL = 0.0

def write(self, doc):
    mark("W+")
    _write(self, doc)
    mark("W-")

def fsync(fd):
    if STALL:
        time.sleep(STALL)
    _fsync(fd)

async def refresh(self, tokens):
    mark("U+")
    new = await _refresh(self, tokens)
    mark("U- " + fp(new.refresh))
    return new

FileTokenStore._write, OAuthClient.refresh, os.fsync = write, refresh, fsync

async def main(account):
    manager = TokenManager.from_settings()
    try:
        tokens = await manager.force_refresh(account)
        mark("T " + fp(tokens.refresh))
    finally:
        await manager.aclose()

mark("ready")
line = sys.stdin.readline()
if not line.strip():
    sys.exit(0)
command = json.loads(line)
STALL = float(command.get("stall", 0))
mark("G")
asyncio.run(main(command["account"]))
mark("D")
"""


def fingerprint(token: str | None) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16] if token else "-"


@dataclass
class Markers:
    """What a child printed: tag -> (argument, monotonic time), first occurrence of each."""

    seen: dict[str, tuple[str | None, float]] = field(default_factory=dict)

    @classmethod
    def parse(cls, lines: Iterable[str]) -> Markers:
        seen: dict[str, tuple[str | None, float]] = {}
        for line in lines:
            parts = line.split()
            if len(parts) in (2, 3):  # a line cut short by the kill is dropped
                with contextlib.suppress(ValueError):
                    seen.setdefault(parts[0], (parts[1] if len(parts) == 3 else None, float(parts[-1])))
        return cls(seen)

    def __contains__(self, tag: str) -> bool:
        return tag in self.seen

    def arg(self, tag: str) -> str | None:
        return self.seen[tag][0] if tag in self.seen else None

    def at(self, tag: str) -> float | None:
        return self.seen[tag][1] if tag in self.seen else None


# -- child processes -----------------------------------------------------------------


class Child:
    """One refreshing process; started ahead of time so imports are off the clock."""

    def __init__(self, env: dict[str, str]):
        self.spawned = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD], env=env, cwd=ROOT, bufsize=0,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.ready_at: float | None = None
        self.go_at: float | None = None
        self._buf = b""
        self._lines: list[str] = []  # marker lines read so far, "ready" excluded

    def _read_line(self, deadline: float) -> str | None:
        """The next line of stdout; None at end of file. TimeoutError past ``deadline``."""
        assert self.proc.stdout is not None
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Seconds from spawn to imports done."""
        if self.ready_at is None:
            try:
                line = self._read_line(time.monotonic() + timeout)
            except TimeoutError:
                self.kill()
                raise TimeoutError(f"refresh process not ready after {timeout:.0f}s") from None
            if line is None:
                _, _, err = self.finish(5)
                raise RuntimeError(f"refresh process died while starting: {err[-500:]}")
            if not line.startswith("ready "):
                raise RuntimeError(f"unexpected first line from refresh process: {line!r}")
            self.ready_at = time.monotonic()
        return self.ready_at - self.spawned

    def wait_marker(self, tag: str, timeout: float) -> bool:
        """Read markers until ``tag``; False if the process ended or the time ran out first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._read_line(deadline)
            except TimeoutError:
                return False
            if line is None:
                return False
            self._lines.append(line)
            if line.split(" ", 1)[0] == tag:
                return True

    def markers(self) -> Markers:
        return Markers.parse(self._lines)

    def go(self, account: str, stall: float) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"account": account, "stall": stall}).encode() + b"\n")
        self.go_at = time.monotonic()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)  # a no-op once the process has been reaped

    def finish(self, timeout: float) -> tuple[int, Markers, str]:
        """Wait for exit: (returncode, markers printed after "ready", stderr)."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            out, err = self.proc.communicate()
        self._lines += (self._buf + (out or b"")).decode(errors="replace").splitlines()
        self._buf = b""
        return self.proc.returncode, self.markers(), (err or b"").decode(errors="replace")

    def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()  # an idle child exits on EOF
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


class Pool:
    def __init__(self, env: dict[str, str], size: int = 2):
        self.env = env
        self.size = size
        self.children: deque[Child] = deque()
        self.startup_times: list[float] = []
        self.retired: list[tuple[Child, LoopOutcome]] = []
        self.refill()

    def take(self, *, quiet: bool) -> Child:
        """A started child; ``quiet`` waits for the others to start or end, so none competes for the CPU."""
        if quiet:
            self.reap()
        for child in list(self.children) if quiet else [self.children[0]]:
            self.startup_times.append(child.wait_ready())
        return self.children.popleft()

    def refill(self) -> None:
        while len(self.children) < self.size:
            self.children.append(Child(self.env))

    def retire(self, child: Child, outcome: LoopOutcome) -> None:
        self.retired.append((child, outcome))

    def reap(self) -> None:
        """Wait for the recovery processes to exit: after printing success they must exit 0."""
        for child, outcome in self.retired:
            code, _, err = child.finish(10)
            child.close()
            if code != 0 and outcome.recovery_error is None:
                tail = err.strip().splitlines()[-1] if err.strip() else "no output"
                outcome.recovery_error = f"exit {code} after finishing the refresh: {tail}"
        self.retired.clear()

    def close(self) -> None:
        self.reap()
        while self.children:
            self.children.popleft().close()


# -- the store and the fake ----------------------------------------------------------


class TimedFake(FakeAnthropic):
    """The fake Anthropic, noting when each token request reaches its handler (monotonic clock)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.token_arrivals: list[float] = []
        self.arrived = threading.Event()

    async def _h_token(self, request):  # type: ignore[no-untyped-def]
        self.token_arrivals.append(time.monotonic())
        self.arrived.set()
        return await super()._h_token(request)


def store_env(token_file: Path, fake: FakeAnthropic) -> dict[str, str]:
    return {
        "CLAUDE_TOKEN_FILE": str(token_file),
        "CLAUDE_TOKEN_ENCRYPTION_KEY": ENCRYPTION_KEY,
        "CLAUDE_OAUTH_TOKEN_URL": fake.token_url,
        "CLAUDE_OAUTH_AUTHORIZE_URL": fake.authorize_url,
        "CLAUDE_OAUTH_HTTP_TIMEOUT": "10",
    }


def child_environment(values: dict[str, str]) -> dict[str, str]:
    """Our environment without anything that could point the child elsewhere (Redis, Postgres, a proxy)."""
    dropped = ("CLAUDE_", "REDIS_", "DATABASE_URL", "USER_ID")
    proxies = {"http_proxy", "https_proxy", "all_proxy"}
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped) and k.lower() not in proxies}
    env.update(values, NO_PROXY="127.0.0.1,localhost", LITELLM_LOCAL_MODEL_COST_MAP="True")
    return env


def login(settings: Settings, fake: FakeAnthropic, account: str) -> str:
    """Log ``account`` in through the fake's authorize step; returns the stored refresh token."""

    async def go() -> str:
        manager = TokenManager.from_settings(settings)
        try:
            start = await manager.start_login(account)
            code, state = fake.authorize(start.authorization_url, email=f"{account}@example.com")
            record = await manager.complete_login(f"{code}#{state}", account=account)
            assert record.tokens.refresh is not None
            return record.tokens.refresh
        finally:
            await manager.aclose()

    return asyncio.run(go())


def refresh_token_alive(fake: FakeAnthropic, token: str | None) -> bool:
    """Would the fake accept this refresh token? Asked without spending it."""
    with fake._lock:  # the fake is ours: a real refresh would rotate the token
        return token is not None and token in fake._refresh_tokens


def rotated_by_request(fake: FakeAnthropic, token: str) -> bool:
    """Did a recorded request spend ``token`` successfully (the server rotated it)?"""
    return any(
        isinstance(r.body, dict) and r.body.get("grant_type") == "refresh_token"
        and r.body.get("refresh_token") == token and r.status == 200
        for r in fake.token_requests()
    )  # fmt: skip


def settle_upstream(fake: FakeAnthropic, timeout: float = 5.0) -> bool:
    """Wait until the fake has answered every token request and no new one came for 50 ms.

    A killed client's request still runs to completion on the server (aiohttp does not
    cancel handlers when the peer goes away), so the rotation may land after the kill.
    """
    deadline = time.monotonic() + timeout
    last: tuple[int, int] | None = None
    since = time.monotonic()
    while time.monotonic() < deadline:
        requests = fake.token_requests()
        now = (len(requests), fake.refresh_count)
        if now != last or any(r.status is None for r in requests):
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= 0.05:
            return True
        time.sleep(0.005)
    return False


def read_store(path: Path, settings: Settings, accounts: Iterable[str]) -> tuple[dict[str, AccountRecord], str | None]:
    """Every account's record through a fresh FileTokenStore, or what is wrong with the file."""
    try:
        raw = path.read_bytes()
        json.loads(raw)
    except (OSError, ValueError) as exc:
        return {}, f"token file unreadable: {type(exc).__name__}: {exc}"
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode != 0o600:
        return {}, f"token file mode is {oct(mode)}, not 0o600"
    store = FileTokenStore(path, cipher_for(settings), lock_timeout=5)

    async def load_all() -> dict[str, AccountRecord | None]:
        return {account: await store.load(account) for account in accounts}

    try:
        loaded = asyncio.run(load_all())
    except Exception as exc:  # noqa: BLE001 - any failure to load is what we count
        return {}, f"load failed: {type(exc).__name__}: {exc}"
    missing = sorted(a for a, r in loaded.items() if r is None)
    records = {a: r for a, r in loaded.items() if r is not None}
    return records, (f"account(s) missing from the file: {', '.join(missing)}" if missing else None)


def tmp_files(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


class Timing:
    """Median phase boundaries (seconds after "go") of recent un-killed refreshes.

    They ran with no token_delay and no fsync stall; :meth:`aim` adds a loop's own.
    """

    def __init__(self) -> None:
        self.samples: dict[str, deque[float]] = {k: deque(maxlen=9) for k in ("arrival", "answer", "saved")}

    def add(self, child: Child, markers: Markers, fake: TimedFake) -> bool:
        """Learn from an un-killed refresh (never from victims: only the fast ones would count)."""
        go, answer, saved = child.go_at, markers.at("U-"), markers.at("W-")
        if go is None or answer is None or saved is None:
            return False
        arrivals = [t for t in fake.token_arrivals if go <= t <= answer]
        if not arrivals:
            return False
        offsets = (arrivals[0] - go, answer - go, saved - go)
        for key, offset in zip(self.samples, offsets):
            self.samples[key].append(offset)
        return True

    def median(self, key: str) -> float:
        return statistics.median(self.samples[key])

    def aim(self, stratum: str, token_delay: float, stall: float) -> tuple[str, float]:
        """(the event the stratum starts at, how long it lasts). Events: "go", the request's
        arrival at the fake, and the child's "U-" (answer read) and "W-" (save done) markers.
        Timing from the event, not from "go", keeps jitter from blurring the short write window."""
        arrival, answer, saved = self.median("arrival"), self.median("answer"), self.median("saved")
        return {
            "pre-call": ("go", arrival),
            "call": ("arrival", answer - arrival + token_delay),
            "write": ("U-", saved - answer + 2 * stall),  # two fsyncs: the temp file's and the directory's
            "post": ("W-", (WINDOW_SLACK - 1) * (saved + token_delay + 2 * stall)),
        }[stratum]


# -- one mode --------------------------------------------------------------------------


@dataclass
class LoopOutcome:
    index: int
    account: str
    phase: str
    delay_ms: float
    token_delay_ms: float
    stall_ms: float
    aimed: str = ""  # the stratum the kill was aimed at (STRATA)
    new_tmp: int = 0
    corrupt: str | None = None
    lost_by_us: list[str] = field(default_factory=list)
    lost_upstream: bool = False
    recovery_error: str | None = None
    recovery_s: float = 0.0  # go -> exit
    notes: list[str] = field(default_factory=list)


@dataclass
class ModeReport:
    rotate: bool
    loops: int
    seed: int
    accounts: int
    outcomes: list[LoopOutcome] = field(default_factory=list)
    tmp_leftovers: int = 0
    wall_s: float = 0.0
    refresh_base_ms: float = 0.0
    startup_ms: float = 0.0

    @property
    def name(self) -> str:
        return "rotating" if self.rotate else "non-rotating"

    @property
    def phases(self) -> Counter[str]:
        return Counter(o.phase for o in self.outcomes)

    def kills(self, group: str) -> int:
        return sum(self.phases[p] for p in UPSTREAM_GROUPS[group])

    @property
    def corrupt(self) -> int:
        return sum(o.corrupt is not None for o in self.outcomes)

    @property
    def lost_by_us(self) -> int:
        return sum(len(o.lost_by_us) for o in self.outcomes)

    @property
    def lost_upstream(self) -> int:
        return sum(o.lost_upstream for o in self.outcomes)

    @property
    def recovery_failures(self) -> int:
        return sum(o.recovery_error is not None for o in self.outcomes)

    @property
    def unexpected_tmp(self) -> int:
        """Temp files left by a kill that was not inside the file write."""
        return sum(o.new_tmp for o in self.outcomes if o.phase != "during-write")

    @property
    def recovery_max_s(self) -> float:
        return max((o.recovery_s for o in self.outcomes), default=0.0)

    def problems(self) -> list[str]:
        found = []
        for o in self.outcomes:
            where = f"[{self.name} loop {o.index} {o.account} {o.phase} +{o.delay_ms:.0f}ms]"
            if o.corrupt:
                found.append(f"{where} corrupt: {o.corrupt}")
            found.extend(f"{where} lost by us: {what}" for what in o.lost_by_us)
            if o.recovery_error:
                found.append(f"{where} recovery failed: {o.recovery_error}")
        return found


def run_mode(
    *,
    rotate: bool,
    loops: int,
    seed: int,
    accounts: int = 3,
    workdir: Path | None = None,
    token_delay: tuple[float, float] = (0.010, 0.050),
    max_stall: float = 0.015,
    progress: Callable[[LoopOutcome], None] | None = None,
) -> ModeReport:
    rng = random.Random(f"{seed}:{'rotate' if rotate else 'keep'}")
    names = ACCOUNTS[:accounts]
    report = ModeReport(rotate=rotate, loops=loops, seed=seed, accounts=len(names))
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kill-loop-")))
        root = Path(workdir) / report.name
        # A client killed mid-request makes aiohttp log "Connection lost" with a traceback: expected here.
        server_log = logging.getLogger("aiohttp.server")
        stack.callback(server_log.setLevel, server_log.level)
        server_log.setLevel(logging.CRITICAL)
        fake = stack.enter_context(TimedFake(port=0))
        fake.rotate_refresh_tokens = rotate
        token_file = root / "tokens" / "claude_tokens.json"
        values = store_env(token_file, fake)
        settings = Settings.from_env(values)
        pool = Pool(child_environment(values))
        stack.callback(pool.close)
        expected = {account: login(settings, fake, account) for account in names}

        # Calibrate the phases of a refresh with two un-killed runs; recoveries add more.
        timing = Timing()
        for _ in range(2):
            child = pool.take(quiet=True)
            child.go(names[0], 0.0)
            code, markers, err = child.finish(RECOVERY_TIMEOUT)
            child.close()
            pool.refill()
            if code != 0 or not timing.add(child, markers, fake):
                raise RuntimeError(f"calibration refresh failed: {err[-800:]}")
        expected[names[0]] = _stored_refresh(token_file, settings, names[0])

        for index in range(loops):
            outcome = _one_loop(index, rng, fake, pool, settings, token_file, names, expected, timing,
                                token_delay, max_stall)  # fmt: skip
            report.outcomes.append(outcome)
            if progress is not None:
                progress(outcome)
        report.refresh_base_ms = timing.median("saved") * 1000
        report.startup_ms = statistics.median(pool.startup_times) * 1000
        report.tmp_leftovers = len(tmp_files(token_file))
    report.wall_s = time.monotonic() - started
    return report


def _stored_refresh(token_file: Path, settings: Settings, account: str) -> str:
    records, problem = read_store(token_file, settings, [account])
    if problem is not None:
        raise RuntimeError(problem)
    refresh = records[account].tokens.refresh
    assert refresh is not None
    return refresh


def _one_loop(
    index: int,
    rng: random.Random,
    fake: TimedFake,
    pool: Pool,
    settings: Settings,
    token_file: Path,
    names: tuple[str, ...],
    expected: dict[str, str],
    timing: Timing,
    token_delay: tuple[float, float],
    max_stall: float,
) -> LoopOutcome:
    # Every draw happens up front, in a fixed order: the seed fixes the schedule.
    account = rng.choice(names)
    stratum = rng.choices([name for name, _ in STRATA], [weight for _, weight in STRATA])[0]
    at_startup = stratum == "startup"
    delay_s = rng.uniform(*token_delay)
    stall = rng.uniform(0.0, max_stall)
    position = rng.random()

    notes: list[str] = []
    tmp_before = len(tmp_files(token_file))
    fake.reset_records()
    fake.token_delay = delay_s
    refreshes_before = fake.refresh_count
    if at_startup:
        victim = Child(pool.env)
        kill_after = position * statistics.median(pool.startup_times)
        time.sleep(kill_after)
        victim.kill()
    else:
        victim = pool.take(quiet=True)
        anchor, span = timing.aim(stratum, delay_s, stall)
        fake.arrived.clear()
        victim.go(account, stall)
        assert victim.go_at is not None
        if anchor == "go":
            reached = True
        elif anchor == "arrival":
            reached = fake.arrived.wait(5)
        else:
            reached = victim.wait_marker(anchor, 5)
        time.sleep(position * span)
        victim.kill()
        kill_after = time.monotonic() - victim.go_at
        if not reached:
            notes.append(f"aimed after {anchor!r}, which did not happen")
    _, markers, _ = victim.finish(10)
    victim.close()
    outcome = LoopOutcome(
        index, account, "", kill_after * 1000, delay_s * 1000, stall * 1000, aimed=stratum, notes=notes
    )
    if not settle_upstream(fake):
        outcome.notes.append("the fake still had an unanswered token request after 5 s")
    fake.token_delay = 0.0
    reached_upstream = fake.refresh_count > refreshes_before
    outcome.phase = _phase(at_startup, markers, reached_upstream)
    outcome.new_tmp = len(tmp_files(token_file)) - tmp_before

    records, problem = read_store(token_file, settings, names)
    if problem is not None:
        outcome.corrupt = problem
        _start_over(token_file, settings, fake, names, expected, index)
    else:
        dead = _check_tokens(outcome, fake, records, expected, markers)
        for name in names:
            # A dead token (whoever lost it) needs a new login before the next loop.
            if name in dead:
                expected[name] = login(settings, fake, name)
            else:
                expected[name] = records[name].tokens.refresh  # type: ignore[assignment]

    _recover(outcome, pool, fake, settings, token_file, names, expected, timing)
    pool.refill()  # replacements import while the next loop checks its pool
    return outcome


def _phase(at_startup: bool, markers: Markers, reached_upstream: bool) -> str:
    if at_startup or "G" not in markers:
        return "startup"
    if not reached_upstream:
        return "before-upstream"
    if "U-" not in markers:
        return "during-upstream"
    if "W+" not in markers:
        return "before-write"
    if "W-" not in markers:
        return "during-write"
    return "after-save"


def _check_tokens(
    outcome: LoopOutcome,
    fake: FakeAnthropic,
    records: dict[str, AccountRecord],
    expected: dict[str, str],
    markers: Markers,
) -> list[str]:
    """Classify every account's stored refresh token; returns the accounts that need a new login."""
    dead: list[str] = []
    new_fp = markers.arg("U-")
    saved = "W-" in markers
    returned = "T" in markers  # force_refresh handed out the new token: it must be in the file by then
    for name, record in records.items():
        stored = record.tokens.refresh
        old = expected[name]
        if record.relogin_reason is not None:
            problem = f"'{name}' marked for a new login: {record.relogin_reason}"
        elif name != outcome.account:
            problem = None if stored == old and refresh_token_alive(fake, stored) else (
                f"bystander '{name}': refresh token changed or dead (stored {fingerprint(stored)}, "
                f"expected {fingerprint(old)})"
            )
        elif stored != old and fingerprint(stored) != new_fp:
            problem = f"'{name}': stored refresh token {fingerprint(stored)} is neither the old nor the refreshed one"
        elif (saved or returned) and fingerprint(stored) != new_fp:
            what = "the save completed" if saved else "the refresh returned"
            problem = f"'{name}': {what} ({new_fp}) but the file still holds {fingerprint(stored)}"
        elif refresh_token_alive(fake, stored):
            problem = None
        elif stored == old and not saved and rotated_by_request(fake, old):
            outcome.lost_upstream = True  # rotated server-side, killed before the new one was saved
            dead.append(name)
            problem = None
        else:
            problem = f"'{name}': stored refresh token {fingerprint(stored)} is rejected upstream"
        if problem is not None:
            outcome.lost_by_us.append(problem)
            dead.append(name)
    return dead


def _start_over(
    token_file: Path, settings: Settings, fake: FakeAnthropic, names: tuple[str, ...], expected: dict[str, str], index: int
) -> None:
    """After a corrupt file: move it aside (the store refuses to overwrite it) and log everyone in again."""
    if token_file.exists():
        token_file.rename(token_file.with_name(f"{token_file.name}.corrupt-{index}"))
    for name in names:
        expected[name] = login(settings, fake, name)


def _recover(
    outcome: LoopOutcome,
    pool: Pool,
    fake: TimedFake,
    settings: Settings,
    token_file: Path,
    names: tuple[str, ...],
    expected: dict[str, str],
    timing: Timing,
) -> None:
    """A refresh of the same account in a fresh process: proves the locks are free and the token good.

    Nothing else of ours runs meanwhile, so its phase times calibrate the victims' kill windows.
    """
    child = pool.take(quiet=True)
    child.go(outcome.account, 0.0)
    assert child.go_at is not None
    done = child.wait_marker("D", RECOVERY_TIMEOUT)
    outcome.recovery_s = time.monotonic() - child.go_at
    error = None
    if not done:
        code, _, err = child.finish(2)  # killed if still running
        child.close()
        tail = err.strip().splitlines()[-1] if err.strip() else "no output"
        error = f"no success after {outcome.recovery_s:.1f}s (exit {code}): {tail}"
    else:
        markers = child.markers()
        timing.add(child, markers, fake)
        pool.retire(child, outcome)  # its exit status is checked once it has wound down
        records, problem = read_store(token_file, settings, names)
        got = markers.arg("T")
        if problem is not None:
            error = f"store after recovery: {problem}"
        else:
            stored = records[outcome.account].tokens.refresh
            if fingerprint(stored) != got:
                error = f"recovery returned {got} but the file holds {fingerprint(stored)}"
            elif not refresh_token_alive(fake, stored):
                error = "the refresh token saved by the recovery is rejected upstream"
            else:
                expected[outcome.account] = stored  # type: ignore[assignment]
    if error is not None:
        outcome.recovery_error = error
        with contextlib.suppress(Exception):
            expected[outcome.account] = login(settings, fake, outcome.account)


# -- report ----------------------------------------------------------------------------


def summary(reports: list[ModeReport]) -> str:
    first = reports[0]
    head = (
        f"kill -9 during refresh: {first.loops} loops per mode, seed {first.seed}, {first.accounts} accounts, "
        "encrypted file store (file locks)"
    )
    rows: list[tuple[str, Callable[[ModeReport], str]]] = [
        ("loops", lambda r: str(len(r.outcomes))),
        ("kills before the upstream call", lambda r: str(r.kills("before"))),
        ("  of which during start-up", lambda r: str(r.phases["startup"])),
        ("kills during the upstream call", lambda r: str(r.kills("during"))),
        ("kills after the upstream call", lambda r: str(r.kills("after"))),
        ("  answer read, before the write", lambda r: str(r.phases["before-write"])),
        ("  during the file write", lambda r: str(r.phases["during-write"])),
        ("  after the save", lambda r: str(r.phases["after-save"])),
        ("corrupt / undecryptable files", lambda r: str(r.corrupt)),
        ("lost by us", lambda r: str(r.lost_by_us)),
        ("lost by upstream rotation in flight", lambda r: str(r.lost_upstream)),
        ("tmp leftovers (at the end)", lambda r: str(r.tmp_leftovers)),
        ("  left by a kill outside the write", lambda r: str(r.unexpected_tmp)),
        ("recovery-refresh failures", lambda r: str(r.recovery_failures)),
        ("slowest recovery refresh (s)", lambda r: f"{r.recovery_max_s:.2f}"),
        ("refresh go->saved, median (ms)", lambda r: f"{r.refresh_base_ms:.0f}"),
        ("wall time (s)", lambda r: f"{r.wall_s:.1f}"),
    ]
    width = max(len(label) for label, _ in rows) + 2
    lines = [head, " " * width + "".join(f"{r.name:>14}" for r in reports)]
    lines += [f"{label:<{width}}" + "".join(f"{cell(r):>14}" for r in reports) for label, cell in rows]
    lines.append("targets: 0 corrupt, 0 lost by us, 0 recovery failures in both modes; "
                 "0 lost by upstream rotation without rotation")  # fmt: skip
    for report in reports:
        lines += report.problems()
        for o in report.outcomes:
            lines += [f"[{report.name} loop {o.index}] note: {note}" for note in o.notes]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loops", type=int, default=100, help="kills per mode (default 100)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--accounts", type=int, default=3, choices=range(1, len(ACCOUNTS) + 1))
    parser.add_argument("--verbose", action="store_true", help="one line per loop")
    args = parser.parse_args()

    def progress(o: LoopOutcome) -> None:
        if args.verbose:
            flags = " ".join(filter(None, [
                "CORRUPT" if o.corrupt else "", "LOST-BY-US" if o.lost_by_us else "",
                "lost-upstream" if o.lost_upstream else "", f"+{o.new_tmp}tmp" if o.new_tmp else "",
                "RECOVERY-FAILED" if o.recovery_error else "",
            ]))  # fmt: skip
            print(f"{o.index:4d} {o.account:<8} aimed {o.aimed:<8} got {o.phase:<16} kill +{o.delay_ms:6.1f}ms "
                  f"(token_delay {o.token_delay_ms:4.1f}ms, stall {o.stall_ms:4.1f}ms) "
                  f"recovery {o.recovery_s:.2f}s {flags}", flush=True)  # fmt: skip

    reports = [run_mode(rotate=rotate, loops=args.loops, seed=args.seed, accounts=args.accounts, progress=progress)
               for rotate in (True, False)]  # fmt: skip
    print(summary(reports))
    bad = any(r.corrupt or r.lost_by_us or r.recovery_failures for r in reports) or reports[1].lost_upstream
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
