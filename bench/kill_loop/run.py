"""The loops: kill a refreshing process (``run_mode``), or race a cooldown or a logout against one (``run_races``)."""

from __future__ import annotations

import contextlib
import logging
import random
import statistics
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from litellm_claude_oauth.settings import Settings
from tests.fake_anthropic import FakeAnthropic

from .classify import Markers, RaceKind, check_race, check_tokens, fingerprint, phase, race_position
from .procs import STRATA, WINDOW_SLACK, Child, Pool, Timing, child_environment, last_line
from .report import LoopOutcome, ModeReport, RaceOutcome, RaceReport
from .testbed import (
    Alive,
    login,
    read_account,
    read_store,
    settle_upstream,
    spent_tokens,
    store_env,
    stored,
    tmp_files,
    wait_arrival,
)

ACCOUNTS = ("default", "alice", "bob")
RECOVERY_TIMEOUT = 8.0  # seconds from "go" to success for the refresh after a kill
CALIBRATION_RUNS = 4  # un-killed, un-raced refreshes: the aim's first timings and the baseline
TOKEN_DELAY = (0.010, 0.050)  # the fake waits this long (random) before answering a token request
# Races: a slow upstream, so a racing process (which needs ~100 ms of its own before it writes)
# can land before, during and after the refresh's call rather than always after its commit.
RACE_TOKEN_DELAY = (0.100, 0.300)
MAX_STALL = 0.015  # seconds of sleep in each fsync (random up to this)


@dataclass
class World:
    """One mode's fake, token file, children and what each account's refresh token should be."""

    fake: FakeAnthropic
    pool: Pool
    settings: Settings
    token_file: Path
    names: tuple[str, ...]
    expected: dict[str, str]
    timing: Timing
    baseline_s: list[float]  # go -> done of the calibration refreshes, in this run

    def relogin(self, account: str) -> None:
        self.expected[account] = login(self.settings, self.fake, account)

    def stored_refresh(self, account: str) -> str:
        records, problem = read_store(self.token_file, self.settings, [account])
        if problem is not None:
            raise RuntimeError(problem)
        refresh = records[account].tokens.refresh
        assert refresh is not None
        return refresh


@contextlib.contextmanager
def world(name: str, *, rotate: bool, accounts: int, workdir: Path | None) -> Iterator[World]:
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kill-loop-")))
        root = Path(workdir) / name
        # A client killed mid-request makes aiohttp log "Connection lost" with a traceback: expected here.
        server_log = logging.getLogger("aiohttp.server")
        stack.callback(server_log.setLevel, server_log.level)
        server_log.setLevel(logging.CRITICAL)
        fake = stack.enter_context(FakeAnthropic(port=0))
        fake.rotate_refresh_tokens = rotate
        token_file = root / "tokens" / "claude_tokens.json"
        values = store_env(token_file, fake)
        settings = Settings.from_env(values)
        pool = Pool(child_environment(values))
        stack.callback(pool.close)
        names = ACCOUNTS[:accounts]
        expected = {a: login(settings, fake, a) for a in names}
        w = World(fake, pool, settings, token_file, names, expected, Timing(), [])
        # Un-killed refreshes: they time the phases the kills aim at (recoveries add more) and are the baseline.
        for _ in range(CALIBRATION_RUNS):
            child = pool.take(quiet=True)
            before = fake.refresh_count
            child.go("refresh", names[0])
            arrival = wait_arrival(fake, before, RECOVERY_TIMEOUT)
            code, markers, err = child.finish(RECOVERY_TIMEOUT)
            child.close()
            pool.refill()
            done = _took(child, markers)
            if code != 0 or done is None or not w.timing.add(child, markers, arrival):
                raise RuntimeError(f"calibration refresh failed: {err[-800:]}")
            w.baseline_s.append(done)
        w.expected[names[0]] = w.stored_refresh(names[0])
        yield w


def run_mode(
    *,
    rotate: bool,
    loops: int,
    seed: int,
    accounts: int = 3,
    workdir: Path | None = None,
    token_delay: tuple[float, float] = TOKEN_DELAY,
    max_stall: float = MAX_STALL,
    progress: Callable[[LoopOutcome], None] | None = None,
) -> ModeReport:
    """``loops`` times: SIGKILL a process refreshing a random account at a random moment, then check the file."""
    rng = random.Random(f"{seed}:{'rotate' if rotate else 'keep'}")
    report = ModeReport(rotate=rotate, loops=loops, seed=seed, accounts=min(accounts, len(ACCOUNTS)))
    started = time.monotonic()
    with world(report.name, rotate=rotate, accounts=accounts, workdir=workdir) as w:
        for index in range(loops):
            outcome = _one_kill(index, rng, w, token_delay, max_stall)
            report.outcomes.append(outcome)
            if progress is not None:
                progress(outcome)
        report.refresh_base_ms = w.timing.median("saved") * 1000
        report.baseline_s = w.baseline_s
        report.startup_ms = statistics.median(w.pool.startup_times) * 1000
        report.tmp_leftovers = len(tmp_files(w.token_file))
    report.wall_s = time.monotonic() - started
    return report


def _took(child: Child, markers: Markers) -> float | None:
    """Seconds from "go" to the child's last word ("D" done, or "E" failed), by its own stamps."""
    end = markers.at("D") if "D" in markers else markers.at("E")
    return None if end is None or child.go_at is None else end - child.go_at


def _aim(
    child: Child, w: World, refreshes_before: int, stratum: str, delay: float, stall: float, position: float
) -> tuple[bool, str]:
    """Wait for the event that opens ``stratum`` in ``child``'s refresh, then ``position`` of its span."""
    anchor, span = w.timing.aim(stratum, delay, stall)
    if anchor == "go":
        reached = True
    elif anchor == "arrival":
        reached = wait_arrival(w.fake, refreshes_before, 5) is not None
    else:
        reached = child.wait_marker(anchor, 5)
    time.sleep(position * span)
    return reached, anchor


def _one_kill(
    index: int, rng: random.Random, w: World, token_delay: tuple[float, float], max_stall: float
) -> LoopOutcome:
    # Every draw happens up front, in a fixed order: the seed fixes the schedule.
    account = rng.choice(w.names)
    stratum = rng.choices([name for name, _ in STRATA], [weight for _, weight in STRATA])[0]
    at_startup = stratum == "startup"
    delay_s = rng.uniform(*token_delay)
    stall = rng.uniform(0.0, max_stall)
    position = rng.random()

    notes: list[str] = []
    fake, token_file = w.fake, w.token_file
    tmp_before = len(tmp_files(token_file))
    fake.reset_records()
    fake.token_delay = delay_s
    refreshes_before = fake.refresh_count
    if at_startup:
        victim = Child(w.pool.env)
        kill_after = position * statistics.median(w.pool.startup_times)
        time.sleep(kill_after)
        victim.kill()
    else:
        victim = w.pool.take(quiet=True)
        victim.go("refresh", account, stall)
        assert victim.go_at is not None
        reached, anchor = _aim(victim, w, refreshes_before, stratum, delay_s, stall, position)
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
    outcome.phase = phase(at_startup, markers, fake.refresh_count > refreshes_before)
    outcome.new_tmp = len(tmp_files(token_file)) - tmp_before

    records, problem = read_store(token_file, w.settings, w.names)
    if problem is not None:
        outcome.corrupt = problem
        _start_over(w, index)
    else:
        check = check_tokens(
            account, {n: stored(r) for n, r in records.items()}, w.expected, markers, Alive(fake), spent_tokens(fake)
        )
        outcome.lost_by_us, outcome.lost_upstream = check.lost_by_us, check.lost_upstream
        for name in w.names:
            # A dead token (whoever lost it) needs a new login before the next loop.
            if name in check.dead:
                w.relogin(name)
            else:
                w.expected[name] = records[name].tokens.refresh  # type: ignore[assignment]

    _recover(outcome, w)
    w.pool.refill()  # replacements import while the next loop checks its pool
    return outcome


def _start_over(w: World, index: int) -> None:
    """After a corrupt file: move it aside (the store refuses to overwrite it) and log everyone in again."""
    if w.token_file.exists():
        w.token_file.rename(w.token_file.with_name(f"{w.token_file.name}.corrupt-{index}"))
    for name in w.names:
        w.relogin(name)


def _recover(outcome: LoopOutcome, w: World) -> None:
    """A refresh of the same account in a fresh process: proves the locks are free and the token good.

    Nothing else of ours runs meanwhile, so its phase times calibrate the victims' kill windows.
    """
    child = w.pool.take(quiet=True)
    before = w.fake.refresh_count
    child.go("refresh", outcome.account)
    assert child.go_at is not None
    arrival = wait_arrival(w.fake, before, RECOVERY_TIMEOUT)
    done = child.wait_marker("D", RECOVERY_TIMEOUT)
    outcome.recovery_s = _took(child, child.markers()) or time.monotonic() - child.go_at
    error = None
    if not done:
        code, _, err = child.finish(2)  # killed if still running
        child.close()
        error = f"no success after {outcome.recovery_s:.1f}s (exit {code}): {last_line(err)}"
    else:
        markers = child.markers()
        w.timing.add(child, markers, arrival)

        def late_failure(what: str) -> None:
            if outcome.recovery_error is None:
                outcome.recovery_error = what

        w.pool.retire(child, late_failure)
        records, problem = read_store(w.token_file, w.settings, w.names)
        got = markers.arg("T")
        if problem is not None:
            error = f"store after recovery: {problem}"
        else:
            token = records[outcome.account].tokens.refresh
            if fingerprint(token) != got:
                error = f"recovery returned {got} but the file holds {fingerprint(token)}"
            elif token not in Alive(w.fake):
                error = "the refresh token saved by the recovery is rejected upstream"
            else:
                w.expected[outcome.account] = token  # type: ignore[assignment]
    if error is not None:
        outcome.recovery_error = error
        with contextlib.suppress(Exception):
            w.relogin(outcome.account)


# -- races -----------------------------------------------------------------------------

RACE_STRATA = tuple((name, weight) for name, weight in STRATA if name != "startup")


def run_races(
    *,
    loops: int,
    seed: int,
    workdir: Path | None = None,
    token_delay: tuple[float, float] = RACE_TOKEN_DELAY,
    progress: Callable[[RaceOutcome], None] | None = None,
) -> RaceReport:
    """``loops`` times: a refresh of one account, and while it runs, a 429 cooldown or a logout of the same account.

    Nothing is killed: both run to the end, then the store must hold no revoked refresh
    token, no logged-out account, and every cooldown that was recorded.
    """
    rng = random.Random(f"{seed}:race")
    report = RaceReport(loops=loops, seed=seed)
    started = time.monotonic()
    with world("races", rotate=True, accounts=1, workdir=workdir) as w:
        w.pool.size = 3  # a refresher and a racer per loop, one more importing
        w.pool.refill()
        leads: dict[str, deque[float]] = {"cooldown": deque(maxlen=9), "logout": deque(maxlen=9)}
        for index in range(loops):
            outcome = _one_race(index, rng, w, token_delay, leads)
            report.outcomes.append(outcome)
            if progress is not None:
                progress(outcome)
        report.refresh_base_ms = w.timing.median("saved") * 1000
        report.baseline_s = w.baseline_s
    report.wall_s = time.monotonic() - started
    return report


def _race_target(timing: Timing, stratum: str, token_delay: float, position: float) -> float:
    """Seconds after the refresher's "go" at which the racing write should land."""
    arrival = timing.median("arrival")
    answer, saved = timing.median("answer") + token_delay, timing.median("saved") + token_delay
    low, high = {
        "pre-call": (0.0, arrival),
        "call": (arrival, answer),
        "write": (answer, saved),
        "post": (saved, WINDOW_SLACK * saved),
    }[stratum]
    return low + position * (high - low)


def _one_race(
    index: int, rng: random.Random, w: World, token_delay: tuple[float, float], leads: dict[str, deque[float]]
) -> RaceOutcome:
    kind: RaceKind = rng.choice(("cooldown", "logout"))
    stratum = rng.choices([name for name, _ in RACE_STRATA], [weight for _, weight in RACE_STRATA])[0]
    delay_s = rng.uniform(*token_delay)
    position = rng.random()
    account = w.names[0]

    fake = w.fake
    fake.reset_records()
    fake.token_delay = delay_s
    refresher = w.pool.take(quiet=True)
    racer = w.pool.take(quiet=False)
    # The racer needs time of its own (settings, manager, file lock) before its write lands:
    # start it that much ahead of the moment aimed at, before the refresher if need be.
    lead = statistics.median(leads[kind]) if leads[kind] else 0.0
    start = _race_target(w.timing, stratum, delay_s, position) - lead
    first, second = ((refresher, "refresh"), (racer, kind)) if start >= 0 else ((racer, kind), (refresher, "refresh"))
    first[0].go(first[1], account)
    time.sleep(abs(start))
    second[0].go(second[1], account)
    _, racer_markers, racer_err = racer.finish(RECOVERY_TIMEOUT)
    _, refresher_markers, refresher_err = refresher.finish(RECOVERY_TIMEOUT)
    racer.close()
    refresher.close()
    settle_upstream(fake)
    fake.token_delay = 0.0

    record, problem = read_account(w.token_file, w.settings, account)
    outcome = RaceOutcome(
        index, kind, account, stratum, race_position(refresher_markers, racer_markers),
        "refreshed" if "T" in refresher_markers else refresher_markers.arg("E") or "no marker",
        refresh_s=_took(refresher, refresher_markers), token_delay_s=delay_s,
    )  # fmt: skip
    if problem is not None:
        outcome.problems.append(f"store unreadable: {problem}")
    else:
        outcome.problems += check_race(
            kind, None if record is None else stored(record), refresher_markers, racer_markers, Alive(fake)
        )
    for who, markers, err in (("refresher", refresher_markers, refresher_err), ("racer", racer_markers, racer_err)):
        if "D" not in markers and "E" not in markers:
            outcome.problems.append(f"the {who} crashed: {last_line(err)}")
    racer_end = racer_markers.at("W-")
    if racer_end is not None and racer.go_at is not None:
        leads[kind].append(racer_end - racer.go_at)

    # The next race starts from a live login without a cooldown.
    w.relogin(account)
    w.pool.refill()
    return outcome

