"""``python -m tests.fake_anthropic --port 8765``: run the fake in the foreground.

Strict like the live service by default; the flags relax one rule each. Control it over
HTTP (``/_fake/state``, ``/_fake/control``, ``/_fake/authorize``).
"""

from __future__ import annotations

import argparse
import signal
import threading

from .oauth_state import ACCESS_TTL_SECONDS
from .server import FakeAnthropic


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fake_anthropic")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port (printed on start)")
    parser.add_argument("--access-ttl", type=float, default=ACCESS_TTL_SECONDS, help="expires_in of issued access tokens")
    parser.add_argument("--no-identity-gate", action="store_true", help="serve requests without Claude Code's identity block")
    parser.add_argument("--any-model", action="store_true", help="serve any model id, not only current ones")
    parser.add_argument("--any-user-agent", action="store_true", help="token endpoint: no User-Agent checks")
    # Kept for old scripts: the gate is on by default now.
    parser.add_argument("--require-claude-code-system", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    fake = FakeAnthropic(port=args.port, access_ttl=args.access_ttl, require_claude_code_system=not args.no_identity_gate,
                         enforce_models=not args.any_model, check_token_user_agent=not args.any_user_agent)  # fmt: skip
    with fake:
        # Parents wait for this exact line, so it must not sit in a pipe buffer.
        print(f"fake anthropic listening on {fake.url}", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
