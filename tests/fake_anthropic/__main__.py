"""``python -m tests.fake_anthropic --port 8765``: run the fake in the foreground.

Control it over HTTP (``/_fake/state``, ``/_fake/control``, ``/_fake/authorize``).
"""

from __future__ import annotations

import argparse
import signal
import threading

from .server import FakeAnthropic


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fake_anthropic")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port (printed on start)")
    parser.add_argument("--access-ttl", type=float, default=3600, help="expires_in of issued access tokens")
    parser.add_argument("--require-claude-code-system", action="store_true")
    args = parser.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    fake = FakeAnthropic(port=args.port, access_ttl=args.access_ttl)
    fake.require_claude_code_system = args.require_claude_code_system
    with fake:
        # Parents wait for this exact line, so it must not sit in a pipe buffer.
        print(f"fake anthropic listening on {fake.url}", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
