"""Real clients nobody here wrote (Claude Code, the anthropic and openai SDKs), run offline.

- ``claude_binary()``: the pinned Claude Code from ``scripts/claude_code.sh``.
- ``claude_env()`` / ``run_claude()``: ``claude -p`` in a throwaway HOME, with every
  optional call turned off and any HTTP(S) traffic that is not for loopback sent to an
  ``EgressTrap``, so a test can assert it never tried another host.
- ``Recorder``: a tiny Anthropic look-alike that answers anything plausible and records
  every request verbatim (paths, headers, bodies) -- to learn what a client sends.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = ROOT / "scripts" / "claude_code.sh"
NO_NODE_EXIT = 2  # scripts/claude_code.sh: Node.js or npm is missing

# Claude Code's own switches for "call nothing but the API": telemetry, error reports,
# auto-update, feedback command; NONESSENTIAL_TRAFFIC covers the rest (release notes,
# feature flags, model list refresh).
QUIET_ENV = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_BUG_COMMAND": "1",
}


def claude_binary() -> Path:
    """Install (or find) the pinned Claude Code; skip the test only when Node/npm are missing."""
    done = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=600)
    if done.returncode == NO_NODE_EXIT:
        pytest.skip(f"Claude Code needs Node.js and npm: {done.stderr.strip()}")
    if done.returncode != 0:
        raise RuntimeError(f"scripts/claude_code.sh failed ({done.returncode}):\n{done.stderr}")
    return Path(done.stdout.strip().splitlines()[-1])


def claude_env(home: Path, base_url: str, trap_url: str, **extra: str) -> dict[str, str]:
    """A clean environment for `claude`: nothing inherited but PATH, locale and TERM."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TERM") if k in os.environ}
    env.update(QUIET_ENV)
    env.update(
        HOME=str(home),
        CLAUDE_CONFIG_DIR=str(home / ".claude"),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        ANTHROPIC_BASE_URL=base_url,
        # Anything not for loopback goes to the trap, which records it and refuses.
        HTTP_PROXY=trap_url,
        HTTPS_PROXY=trap_url,
        http_proxy=trap_url,
        https_proxy=trap_url,
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    env.update(extra)
    return env


def run_claude(
    binary: Path, env: dict[str, str], prompt: str, *args: str, cwd: Path | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """`claude -p PROMPT ARGS…` as a person would type it, with no stdin."""
    return subprocess.run(
        [str(binary), "-p", prompt, *args],
        env=env, cwd=cwd or env["HOME"], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@dataclass
class Seen:
    """One request as it arrived: nothing parsed away but JSON bodies."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: Any

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(values) if values else None


class _LoopThread:
    """An asyncio loop on a daemon thread, so sync tests can run servers next to subprocesses."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="client-test-servers", daemon=True)
        self._thread.start()

    def run(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class Recorder:
    """Answers like Anthropic's Messages API (echo text, stream or not), records everything.

    Paths it does not know get a 404 in Anthropic's error shape, and are recorded too.
    """

    reply: str = "Hello from the recorder"
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    _lt: _LoopThread | None = None
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Recorder:
        self._lt = _LoopThread()
        self._lt.run(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._lt is not None
        if self._runner is not None:
            self._lt.run(self._runner.cleanup())
        self._lt.close()

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        self.seen.append(Seen(request.method, request.path, request.query_string, list(request.headers.items()), body))
        if request.method == "POST" and request.path == "/v1/messages/count_tokens":
            return web.json_response({"input_tokens": max(1, len(raw) // 4)})
        if request.method == "POST" and request.path == "/v1/messages" and isinstance(body, dict):
            return await self._message(request, body)
        if request.method == "GET" and request.path == "/v1/models":
            return web.json_response(_models_page())
        error = {"type": "error", "error": {"type": "not_found_error", "message": f"{request.method} {request.path}"}}
        return web.json_response(error, status=404)

    async def _message(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        model = str(body.get("model", "unknown"))
        message = {
            "id": "msg_" + secrets.token_hex(12), "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": self.reply}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0},
        }  # fmt: skip
        if not body.get("stream"):
            return web.json_response(message)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in sse_events(message):
            await response.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
        await response.write_eof()
        return response


def _models_page() -> dict[str, Any]:
    ids = ["claude-sonnet-4-6", "claude-opus-4-6", "claude-haiku-4-5-20251001"]
    data = [{"type": "model", "id": i, "display_name": i, "created_at": "2026-01-01T00:00:00Z"} for i in ids]
    return {"data": data, "has_more": False, "first_id": ids[0], "last_id": ids[-1]}


def sse_events(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The Messages API's streaming events for a finished text message, in their documented order."""
    start = {**message, "content": [], "stop_reason": None, "usage": {**message["usage"], "output_tokens": 1}}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(message["content"]):
        events.append({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})
        events.append({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": block["text"]}})
        events.append({"type": "content_block_stop", "index": index})
    events.append({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                   "usage": {"output_tokens": message["usage"]["output_tokens"]}})  # fmt: skip
    events.append({"type": "message_stop"})
    return events


@dataclass
class EgressTrap:
    """An HTTP proxy on loopback that forwards nothing: it records each request line
    (``CONNECT host:443`` for HTTPS, ``GET http://host/...`` for HTTP) and answers 403."""

    attempts: list[str] = field(default_factory=list)
    port: int = 0
    _lt: _LoopThread | None = None
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> EgressTrap:
        self._lt = _LoopThread()
        self._server = self._lt.run(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._lt is not None and self._server is not None
        self._server.close()
        self._lt.run(self._server.wait_closed())
        self._lt.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            self.attempts.append(line.decode(errors="replace").strip())
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
