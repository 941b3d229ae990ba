"""``python -m bench.kill_loop [--loops 100] [--races 40] [--seed N] [--accounts 3] [--verbose]``.

Runs the kill loop in both modes (rotating and non-rotating refresh tokens), then the
races; prints the tables and exits 1 when an invariant breaks: a corrupt file, a token
lost by us, a failed recovery, a loss without rotation, a revoked token written back or
any other race problem.
"""

from __future__ import annotations

import argparse
import sys

from .report import LoopOutcome, RaceOutcome, race_summary, summary
from .run import ACCOUNTS, run_mode, run_races


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loops", type=int, default=100, help="kills per mode (default 100; 0 skips them)")
    parser.add_argument("--races", type=int, default=40, help="cooldown/logout races (default 40; 0 skips them)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--accounts", type=int, default=3, choices=range(1, len(ACCOUNTS) + 1))
    parser.add_argument("--verbose", action="store_true", help="one line per loop")
    args = parser.parse_args()

    def on_kill(o: LoopOutcome) -> None:
        if args.verbose:
            flags = " ".join(filter(None, [
                "CORRUPT" if o.corrupt else "", "LOST-BY-US" if o.lost_by_us else "",
                "lost-upstream" if o.lost_upstream else "", f"+{o.new_tmp}tmp" if o.new_tmp else "",
                "RECOVERY-FAILED" if o.recovery_error else "",
            ]))  # fmt: skip
            print(f"{o.index:4d} {o.account:<8} aimed {o.aimed:<8} got {o.phase:<16} kill +{o.delay_ms:6.1f}ms "
                  f"(token_delay {o.token_delay_ms:4.1f}ms, stall {o.stall_ms:4.1f}ms) "
                  f"recovery {o.recovery_s:.2f}s {flags}", flush=True)  # fmt: skip

    def on_race(o: RaceOutcome) -> None:
        if args.verbose:
            print(f"{o.index:4d} {o.kind:<8} aimed {o.aimed:<8} ended {o.position:<16} refresh {o.refresh_result}"
                  f"{' PROBLEM' if o.problems else ''}", flush=True)  # fmt: skip

    bad = False
    if args.loops:
        reports = [run_mode(rotate=rotate, loops=args.loops, seed=args.seed, accounts=args.accounts, progress=on_kill)
                   for rotate in (True, False)]  # fmt: skip
        print(summary(reports))
        bad = any(r.broken for r in reports)
    if args.races:
        races = run_races(loops=args.races, seed=args.seed, progress=on_race)
        print()
        print(race_summary(races))
        bad = bad or races.failures > 0
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
