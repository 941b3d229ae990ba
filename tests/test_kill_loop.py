"""kill -9 during refresh, and writes racing a refresh, with the file store: nothing corrupt, lost or written back.

The verdicts of ``bench.kill_loop.classify`` are checked on hand-made facts first (no
processes); then short, seeded runs of the real loops (``python -m bench.kill_loop``
runs 100 kills per mode and 40 races).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.kill_loop.classify import (
    Markers,
    Stored,
    TokenCheck,
    check_race,
    check_tokens,
    fingerprint,
    phase,
    race_position,
)
from bench.kill_loop.report import race_summary, summary
from bench.kill_loop.run import run_mode, run_races

LOOPS = 10
RACES = 6
SEED = 20240607

OLD, NEW, OTHER = "sk-ant-ort01-old", "sk-ant-ort01-new", "sk-ant-ort01-bystander"


def markers(*lines: str) -> Markers:
    return Markers.parse(lines)


# -- pure verdicts -------------------------------------------------------------------


def test_markers_keep_the_first_stamp_and_drop_a_line_cut_by_the_kill() -> None:
    m = markers("G 1.0", f"U- {fingerprint(NEW)} 2.0", "W+ 3.0", "W+ 4.0", "W- 5.")
    assert m.at("G") == 1.0 and m.arg("U-") == fingerprint(NEW)
    assert m.at("W+") == 3.0
    assert "W-" in m  # "5." parses; a line without its stamp would not
    assert "T" not in markers("T abc")  # tag and argument, stamp cut off: dropped
    assert fingerprint(None) == "-" and len(fingerprint(NEW)) == 16 and NEW not in fingerprint(NEW)


@pytest.mark.parametrize(
    ("lines", "reached", "expected"),
    [
        ((), False, "startup"),
        (("G 1",), False, "before-upstream"),
        (("G 1", "U+ 2"), True, "during-upstream"),
        (("G 1", "U+ 2", "U- x 3"), True, "before-write"),
        (("G 1", "U+ 2", "U- x 3", "W+ 4"), True, "during-write"),
        (("G 1", "U+ 2", "U- x 3", "W+ 4", "W- 5"), True, "after-save"),
    ],
)
def test_phase_is_read_from_the_last_marker_and_the_fakes_counter(
    lines: tuple[str, ...], reached: bool, expected: str
) -> None:
    assert phase(False, markers(*lines), reached) == expected
    assert phase(True, markers(*lines), reached) == "startup"


def _check(
    victim_token: str | None, m: Markers, alive: set[str], spent: set[str], relogin: str | None = None
) -> TokenCheck:
    stored = {"alice": Stored(victim_token, relogin), "bob": Stored(OTHER)}
    return check_tokens("alice", stored, {"alice": OLD, "bob": OTHER}, m, alive, spent)


def test_a_kill_after_the_rotation_and_before_the_save_is_the_upstreams_loss() -> None:
    check = _check(OLD, markers("G 1", f"U- {fingerprint(NEW)} 2"), alive={OTHER, NEW}, spent={OLD})
    assert check.lost_upstream and check.dead == ["alice"] and check.lost_by_us == []


def test_a_saved_token_missing_from_the_file_is_ours() -> None:
    m = markers("G 1", f"U- {fingerprint(NEW)} 2", "W+ 3", "W- 4")
    check = _check(OLD, m, alive={OTHER, NEW}, spent={OLD})
    assert not check.lost_upstream
    assert check.dead == ["alice"] and "the save completed" in check.lost_by_us[0]


def test_a_dead_token_nobody_rotated_and_a_touched_bystander_are_ours() -> None:
    check = _check(OLD, markers("G 1"), alive=set(), spent=set())
    assert [p.split(":")[0] for p in check.lost_by_us] == ["'alice'", "bystander 'bob'"]
    assert check.dead == ["alice", "bob"]


def test_the_refreshed_token_in_the_file_and_alive_is_fine() -> None:
    m = markers("G 1", f"U- {fingerprint(NEW)} 2", "W+ 3", "W- 4", f"T {fingerprint(NEW)} 5")
    check = _check(NEW, m, alive={OTHER, NEW}, spent={OLD})
    assert check.lost_by_us == [] and check.dead == [] and not check.lost_upstream
    assert _check(NEW, m, alive={OTHER, NEW}, spent={OLD}, relogin="invalid_grant").dead == ["alice"]


REFRESHED = markers("G 1", "U+ 2", f"U- {fingerprint(NEW)} 3", "W+ 4", "W- 5", f"T {fingerprint(NEW)} 6", "D 7")


def test_race_position_is_where_the_racing_write_ended() -> None:
    assert race_position(REFRESHED, markers("W- 1.5")) == "before-upstream"
    assert race_position(REFRESHED, markers("W- 2.5")) == "during-upstream"
    assert race_position(REFRESHED, markers("W- 4.5")) == "before-commit"
    assert race_position(REFRESHED, markers("W- 5.5")) == "after-commit"
    superseded = markers("G 1", "U+ 2", f"U- {fingerprint(NEW)} 3", "E NotLoggedInError 4")
    assert race_position(superseded, markers("W- 3.5")) == "before-commit"


def test_a_logout_must_stay_a_logout() -> None:
    logged_out = markers("W+ 1", "W- 2", "L 1 3", "D 4")
    assert check_race("logout", None, REFRESHED, logged_out, alive={NEW}) == []
    refused = markers("G 1", "U+ 2", "E NotLoggedInError 3")
    assert check_race("logout", None, refused, logged_out, alive=set()) == []
    back = check_race("logout", Stored(NEW), REFRESHED, logged_out, alive={NEW})
    assert len(back) == 1 and "stored again" in back[0] and "live" in back[0]
    assert "the refresh failed" in check_race("logout", None, markers("E OAuthError 3"), logged_out, alive=set())[0]


def test_a_cooldown_keeps_the_live_token_the_refresh_result_and_itself() -> None:
    cooled = markers("W+ 1", "W- 2", "C 1000.000 3", "D 4")
    assert check_race("cooldown", Stored(NEW, cooldown_until=1000.0), REFRESHED, cooled, alive={NEW}) == []
    written_back = check_race("cooldown", Stored(OLD, cooldown_until=1000.0), REFRESHED, cooled, alive={NEW})
    assert any("revoked refresh token was written back" in p for p in written_back)
    assert any("the refresh returned" in p for p in written_back)
    lost = check_race("cooldown", Stored(NEW, cooldown_until=None), REFRESHED, cooled, alive={NEW})
    assert lost == [lost[0]] and "cooldown was lost" in lost[0]
    assert check_race("cooldown", None, REFRESHED, cooled, alive={NEW})[-1] == "the account vanished"


# -- the real loops, short and seeded ------------------------------------------------


@pytest.mark.parametrize("rotate", [True, False], ids=["rotating", "non-rotating"])
def test_kill_9_loop_during_refresh(rotate: bool, tmp_path: Path) -> None:
    report = run_mode(rotate=rotate, loops=LOOPS, seed=SEED, accounts=3, workdir=tmp_path)
    table = summary([report])
    print(table)

    assert len(report.outcomes) == LOOPS, table
    assert report.corrupt == 0, table
    assert report.lost_by_us == 0, table
    assert report.recovery_failures == 0, table
    # Only a writer killed inside the write may leave a temp file behind.
    assert report.unexpected_tmp == 0, table
    assert report.tmp_leftovers <= report.phases["during-write"], table
    if rotate:
        # Only a kill after the server took the request and before the save can lose a token.
        in_flight = report.phases["during-upstream"] + report.phases["before-write"] + report.phases["during-write"]
        assert report.lost_upstream <= in_flight, table
    else:
        assert report.lost_upstream == 0, table  # nothing rotates: any loss would be ours
    # The schedule is seeded; real timings vary, but some kills must land past the start-up.
    assert report.kills("before") < LOOPS, table


def test_cooldowns_and_logouts_racing_a_refresh_write_nothing_back(tmp_path: Path) -> None:
    report = run_races(loops=RACES, seed=SEED, workdir=tmp_path)
    table = race_summary(report)
    print(table)

    assert len(report.outcomes) == RACES, table
    assert report.count("cooldown") and report.count("logout"), table  # the seed draws both kinds
    assert report.written_back == 0, table
    assert report.failures == 0, table
