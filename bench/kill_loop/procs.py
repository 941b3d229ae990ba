"""The kill loop's child processes: started ahead of time, driven over pipes, timed by their own markers."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from .classify import Markers

ROOT = Path(__file__).resolve().parents[2]
CHILD_MODULE = "bench.kill_loop.child"
WINDOW_SLACK = 1.25
# Where kills (and racing writes) are aimed; the phase is then read from what actually happened:
STRATA = (
    ("startup", 0.10),  # spawn -> imports done, never told to refresh
    ("pre-call", 0.15),  # go -> the request reaches the fake (store reads, lock, HTTP client set-up)
    ("call", 0.30),  # request received -> answer read, token_delay included
    ("write", 0.30),  # answer read -> save completed
    ("post", 0.15),  # save completed -> 25% later (process winding down)
)


def child_environment(values: dict[str, str]) -> dict[str, str]:
    """Our environment without anything that could point the child elsewhere (Redis, Postgres, a proxy)."""
    dropped = ("CLAUDE_", "REDIS_", "DATABASE_URL", "USER_ID")
    proxies = {"http_proxy", "https_proxy", "all_proxy"}
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped) and k.lower() not in proxies}
    env.update(values, NO_PROXY="127.0.0.1,localhost", LITELLM_LOCAL_MODEL_COST_MAP="True")
    return env


class Child:
    """One ``python -m bench.kill_loop.child``; started ahead of time so imports are off the clock."""

    def __init__(self, env: dict[str, str]):
        self.spawned = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", CHILD_MODULE], env=env, cwd=ROOT, bufsize=0,
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
                raise TimeoutError(f"kill-loop child not ready after {timeout:.0f}s") from None
            if line is None:
                _, _, err = self.finish(5)
                raise RuntimeError(f"kill-loop child died while starting: {err[-500:]}")
            if not line.startswith("ready "):
                raise RuntimeError(f"unexpected first line from the kill-loop child: {line!r}")
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

    def go(self, action: str, account: str, stall: float = 0.0) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"action": action, "account": account, "stall": stall}).encode() + b"\n")
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


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1] if text.strip() else "no output"


class Pool:
    """Children started ahead of time, so a loop never waits for imports."""

    def __init__(self, env: dict[str, str], size: int = 2):
        self.env = env
        self.size = size
        self.children: deque[Child] = deque()
        self.startup_times: list[float] = []
        self._retired: list[tuple[Child, Callable[[str], None]]] = []
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

    def retire(self, child: Child, on_failure: Callable[[str], None]) -> None:
        """A child that printed its success and is winding down: it must still exit 0 (checked at the next reap)."""
        self._retired.append((child, on_failure))

    def reap(self) -> None:
        for child, on_failure in self._retired:
            code, _, err = child.finish(10)
            child.close()
            if code != 0:
                on_failure(f"exit {code} after finishing: {last_line(err)}")
        self._retired.clear()

    def close(self) -> None:
        self.reap()
        while self.children:
            self.children.popleft().close()


class Timing:
    """Median phase boundaries (seconds after "go") of recent un-killed refreshes.

    They ran with no token_delay and no fsync stall; :meth:`aim` adds a loop's own.
    """

    def __init__(self) -> None:
        self.samples: dict[str, deque[float]] = {k: deque(maxlen=9) for k in ("arrival", "answer", "saved")}

    def add(self, child: Child, markers: Markers, arrival: float | None) -> bool:
        """Learn from an un-killed refresh (never from victims: only the fast ones would count).

        ``arrival``: when the parent saw the request reach the fake (testbed.wait_arrival).
        """
        go, answer, saved = child.go_at, markers.at("U-"), markers.at("W-")
        if go is None or arrival is None or answer is None or saved is None:
            return False
        # The parent polls for the arrival while the fake answers in a thread of the same process:
        # it may notice only after the child read the answer.
        arrival = min(arrival, answer)
        for key, stamp in zip(self.samples, (arrival, answer, saved), strict=True):
            self.samples[key].append(stamp - go)
        return True

    def median(self, key: str) -> float:
        return statistics.median(self.samples[key])

    def aim(self, stratum: str, token_delay: float, stall: float) -> tuple[str, float]:
        """(the event the stratum starts at, how long it lasts). Events: "go", the request's
        arrival at the fake, and the child's "U-" (answer read) and "W-" (save done) markers.
        Timing from the event, not from "go", keeps jitter from blurring the short write window.
        (The child's "U+" is no anchor: a fresh process sets up its HTTP client after it.)"""
        arrival, answer, saved = self.median("arrival"), self.median("answer"), self.median("saved")
        return {
            "pre-call": ("go", arrival),
            "call": ("arrival", answer - arrival + token_delay),
            "write": ("U-", saved - answer + 2 * stall),  # two fsyncs: the temp file's and the directory's
            "post": ("W-", (WINDOW_SLACK - 1) * (saved + token_delay + 2 * stall)),
        }[stratum]
