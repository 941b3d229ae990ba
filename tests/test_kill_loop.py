"""kill -9 during refresh, in a loop, with the file store: nothing corrupt, nothing lost by us.

A short, seeded run of ``bench/kill_loop.py`` (which has the details) in both modes:
the fake rotating refresh tokens, and not. Run ``python -m bench.kill_loop`` for 100 loops.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.kill_loop import run_mode, summary

LOOPS = 15
SEED = 20240607


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
