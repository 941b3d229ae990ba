"""What a kill or a race left behind, decided from facts alone: no processes, files or servers here.

The loop gathers the facts (the markers a child printed, what the store holds, which
refresh tokens the fake still accepts or saw spent) and these functions name the
outcome, so every rule can be checked by a unit test.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

PHASES = (
    "startup",  # killed while importing, before it was told to refresh
    "before-upstream",  # told to refresh; the fake never saw its request
    "during-upstream",  # the fake saw the request; the answer had not been read
    "before-write",  # answer read, file write not started
    "during-write",  # between the store's change and the end of its write (temp file, fsync, rename)
    "after-save",  # the save completed (or the process had already exited)
)
UPSTREAM_GROUPS = {
    "before": ("startup", "before-upstream"),
    "during": ("during-upstream",),
    "after": ("before-write", "during-write", "after-save"),
}
# Where a racing write (cooldown, logout) landed in the refresh it raced, by its end.
RACE_POSITIONS = ("before-upstream", "during-upstream", "before-commit", "after-commit")

RaceKind = Literal["cooldown", "logout"]


def fingerprint(token: str | None) -> str:
    """16 hex characters of the token's SHA-256: comparable across processes, never the token."""
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


@dataclass(frozen=True)
class Stored:
    """The part of a stored account record the checks read."""

    refresh: str | None
    relogin_reason: str | None = None
    cooldown_until: float | None = None


def phase(at_startup: bool, markers: Markers, reached_upstream: bool) -> str:
    """Where a kill landed, from the victim's last markers and whether its request reached the fake."""
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


@dataclass
class TokenCheck:
    lost_by_us: list[str] = field(default_factory=list)
    lost_upstream: bool = False  # rotated server-side, killed before the new one was saved: nobody's fault
    dead: list[str] = field(default_factory=list)  # accounts that need a new login before the next loop


def check_tokens(
    victim: str,
    stored: Mapping[str, Stored],
    expected: Mapping[str, str],
    markers: Markers,
    alive: Container[str],
    spent: Container[str],
) -> TokenCheck:
    """Classify every account's stored refresh token after ``victim``'s refresh was killed.

    ``expected``: each account's refresh token before the loop; ``alive``: the refresh
    tokens the fake would accept now; ``spent``: those a recorded request rotated away.
    A loss is blamed on the upstream only when the victim's request reached the server,
    the server rotated the token, and the victim died before saving the new one.
    """
    check = TokenCheck()
    new_fp = markers.arg("U-")
    saved = "W-" in markers
    returned = "T" in markers  # force_refresh handed out the new token: it must be in the file by then
    for name, record in stored.items():
        token, old = record.refresh, expected[name]
        is_alive = token is not None and token in alive
        problem: str | None
        if record.relogin_reason is not None:
            problem = f"'{name}' marked for a new login: {record.relogin_reason}"
        elif name != victim:
            problem = None if token == old and is_alive else (
                f"bystander '{name}': refresh token changed or dead (stored {fingerprint(token)}, "
                f"expected {fingerprint(old)})"
            )  # fmt: skip
        elif token != old and fingerprint(token) != new_fp:
            problem = f"'{name}': stored refresh token {fingerprint(token)} is neither the old nor the refreshed one"
        elif (saved or returned) and fingerprint(token) != new_fp:
            what = "the save completed" if saved else "the refresh returned"
            problem = f"'{name}': {what} ({new_fp}) but the file still holds {fingerprint(token)}"
        elif is_alive:
            problem = None
        elif token == old and not saved and old in spent:
            check.lost_upstream = True
            check.dead.append(name)
            problem = None
        else:
            problem = f"'{name}': stored refresh token {fingerprint(token)} is rejected upstream"
        if problem is not None:
            check.lost_by_us.append(problem)
            check.dead.append(name)
    return check


def race_position(refresher: Markers, racer: Markers) -> str:
    """Where the racer's write ended in the refresher's timeline (both stamp CLOCK_MONOTONIC)."""
    ended = racer.at("W-")
    if ended is None:
        ended = racer.at("D")
    sent, answered, committed = refresher.at("U+"), refresher.at("U-"), refresher.at("W-")
    if ended is None or sent is None or ended < sent:
        return "before-upstream"
    if answered is None or ended < answered:
        return "during-upstream"
    if committed is None or ended < committed:
        return "before-commit"
    return "after-commit"


def check_race(
    kind: RaceKind, stored: Stored | None, refresher: Markers, racer: Markers, alive: Container[str]
) -> list[str]:
    """What is wrong after a cooldown or a logout raced a refresh of the same account (both ran to the end).

    A logout must stay a logout: no refresh in flight may write the account back. A
    cooldown must change only the health fields: the stored refresh token is the live
    one (never the one the refresh spent), the refresh's result is what is stored, and
    the cooldown itself survives the refresh's commit.
    """
    problems: list[str] = []
    refreshed = refresher.arg("T")
    if kind == "logout":
        if "L" not in racer:
            problems.append(f"the logout did not finish ({racer.arg('E') or 'no marker'})")
        elif stored is not None:
            problems.append(
                f"logged out, yet the account is stored again (refresh token {fingerprint(stored.refresh)}, "
                f"{'live' if stored.refresh in alive else 'revoked'} upstream)"
            )
        if refreshed is None and refresher.arg("E") not in ("NotLoggedInError",):
            problems.append(f"the refresh failed with {refresher.arg('E') or 'no marker'}, not 'not logged in'")
        return problems

    until_text = racer.arg("C")
    if until_text is None:
        problems.append(f"the cooldown did not finish ({racer.arg('E') or 'no marker'})")
    if refreshed is None:
        problems.append(f"the refresh failed ({refresher.arg('E') or 'no marker'})")
    if stored is None:
        return [*problems, "the account vanished"]
    if stored.relogin_reason is not None:
        problems.append(f"marked for a new login: {stored.relogin_reason}")
    if stored.refresh is None or stored.refresh not in alive:
        problems.append(f"a revoked refresh token was written back ({fingerprint(stored.refresh)})")
    if refreshed is not None and fingerprint(stored.refresh) != refreshed:
        problems.append(f"the refresh returned {refreshed} but the store holds {fingerprint(stored.refresh)}")
    if until_text is not None and (stored.cooldown_until or 0.0) + 1e-3 < float(until_text):
        problems.append(f"the cooldown was lost (stored until {stored.cooldown_until}, set {until_text})")
    return problems
