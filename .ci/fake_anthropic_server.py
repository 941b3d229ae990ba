"""The fake Anthropic (tests/fake_anthropic) as a container of the CI compose stack.

`python -m tests.fake_anthropic` listens on 127.0.0.1 only; in a container it must
listen on the container's own interfaces so the proxy container reaches it as
http://fake-anthropic:8765 (the port is published on the host's 127.0.0.1 only).
"""

from __future__ import annotations

import signal
import sys
import threading

sys.path.insert(0, "/srv")  # tests/ is mounted at /srv/tests

from tests.fake_anthropic import FakeAnthropic


def main() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with FakeAnthropic(port=8765, host="0.0.0.0") as fake:
        print(f"fake anthropic listening on {fake.url}", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
