"""The kill loop's results: one outcome per loop, a report per mode, and the table printed at the end."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from .classify import RACE_POSITIONS, UPSTREAM_GROUPS


@dataclass
class LoopOutcome:
    index: int
    account: str
    phase: str
    delay_ms: float
    token_delay_ms: float
    stall_ms: float
    aimed: str = ""  # the stratum the kill was aimed at (procs.STRATA)
    new_tmp: int = 0
    corrupt: str | None = None
    lost_by_us: list[str] = field(default_factory=list)
    lost_upstream: bool = False
    recovery_error: str | None = None
    recovery_s: float = 0.0  # go -> done
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
    refresh_base_ms: float = 0.0  # median go -> saved of un-killed refreshes: what the kills are aimed by
    baseline_s: list[float] = field(default_factory=list)  # go -> done of un-killed refreshes, same run
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

    @property
    def recovery_ratios(self) -> list[float]:
        """Each recovery refresh (the first after a kill) over the median un-killed refresh."""
        return _ratios([o.recovery_s for o in self.outcomes if o.recovery_error is None], self.baseline_s)

    @property
    def broken(self) -> bool:
        without_rotation_loss = not self.rotate and self.lost_upstream > 0  # nothing rotated: the loss was ours
        return bool(self.corrupt or self.lost_by_us or self.recovery_failures or without_rotation_loss)

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
        ("baseline: un-killed refresh, median (ms)", lambda r: _ms(r.baseline_s)),
        ("recovery / baseline, median", lambda r: _median(r.recovery_ratios)),
        ("  min", lambda r: f"{min(r.recovery_ratios, default=0):.2f}"),
        ("  max", lambda r: f"{max(r.recovery_ratios, default=0):.2f}"),
        ("refresh go->saved, median (ms)", lambda r: f"{r.refresh_base_ms:.0f}"),
        ("child start-up, median (ms)", lambda r: f"{r.startup_ms:.0f}"),
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


@dataclass
class RaceOutcome:
    index: int
    kind: str  # "cooldown" | "logout"
    account: str
    aimed: str  # the stratum of the refresh the racing write was aimed at
    position: str  # where it actually ended (classify.RACE_POSITIONS)
    refresh_result: str  # "refreshed" or the error class the refresh ended with
    refresh_s: float | None = None  # the raced refresh, go -> done
    token_delay_s: float = 0.0  # how long the fake held its answer (the baseline had none)
    problems: list[str] = field(default_factory=list)


@dataclass
class RaceReport:
    loops: int
    seed: int
    outcomes: list[RaceOutcome] = field(default_factory=list)
    refresh_base_ms: float = 0.0
    baseline_s: list[float] = field(default_factory=list)  # go -> done of un-raced refreshes, same run
    wall_s: float = 0.0

    def count(self, kind: str, position: str | None = None) -> int:
        return sum(o.kind == kind and (position is None or o.position == position) for o in self.outcomes)

    @property
    def written_back(self) -> int:
        """Races that left a revoked refresh token (or a logged-out account) in the store."""
        return sum(any("written back" in p or "stored again" in p for p in o.problems) for o in self.outcomes)

    @property
    def failures(self) -> int:
        return sum(bool(o.problems) for o in self.outcomes)


def race_summary(report: RaceReport) -> str:
    kinds = ("cooldown", "logout")
    lines = [
        f"a 429 cooldown or a logout racing a refresh of the same account: {report.loops} races, seed {report.seed}, "
        "encrypted file store (file locks), rotating refresh tokens",
        f"{'the racing write ended':<34}" + "".join(f"{k:>10}" for k in kinds),
    ]
    for position in RACE_POSITIONS:
        lines.append(f"  {position:<32}" + "".join(f"{report.count(k, position):>10}" for k in kinds))
    lines.append(f"{'races':<34}" + "".join(f"{report.count(k):>10}" for k in kinds))
    results = Counter((o.kind, o.refresh_result) for o in report.outcomes)
    lines.append("refresh results: " + ", ".join(f"{k} -> {r}: {n}" for (k, r), n in sorted(results.items())))
    lines.append(f"revoked tokens written back / logged-out accounts stored again: {report.written_back}")
    lines.append(f"races with any problem: {report.failures}")
    for kind in kinds:
        raced = [o.refresh_s - o.token_delay_s for o in report.outcomes if o.kind == kind and o.refresh_s]
        ratios = _ratios(raced, report.baseline_s)
        if ratios:
            lines.append(f"raced refresh ({kind}, upstream delay excluded) / un-raced baseline "
                         f"({_ms(report.baseline_s)} ms): median "
                         f"{_median(ratios)} (min {min(ratios):.2f}, max {max(ratios):.2f})")  # fmt: skip
    lines.append(f"refresh go->saved, median (ms): {report.refresh_base_ms:.0f}; wall time (s): {report.wall_s:.1f}")
    lines.append("targets: 0 written back, 0 problems (a logout stays a logout; a cooldown keeps the live "
                 "refresh token and survives the refresh's commit)")  # fmt: skip
    for o in report.outcomes:
        lines += [f"[race {o.index} {o.kind} {o.account} aimed {o.aimed} ended {o.position}] {p}" for p in o.problems]
    return "\n".join(lines)


def _ratios(values: list[float], baseline: list[float]) -> list[float]:
    if not baseline:
        return []
    base = statistics.median(baseline)
    return [v / base for v in values]


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "-"


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f}" if values else "-"
