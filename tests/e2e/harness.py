"""Start the real `litellm` proxy process (with our plugin) against the fake Anthropic server.

Shared by the e2e tests and the benchmarks in bench/."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.fake_anthropic import FakeAnthropic

ROOT = Path(__file__).resolve().parents[2]
MASTER_KEY = "sk-oauth-test-1234"
LITELLM = Path(sys.executable).parent / "litellm"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proxy:
    url: str
    env: dict[str, str]
    log_path: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    def client(self, key: str | None = MASTER_KEY) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        """`litellm claude …` in its own process, sharing the proxy's environment (and store)."""
        return subprocess.run(
            [str(LITELLM), "claude", *args], env=self.env, input=input, capture_output=True, text=True, timeout=60
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def proxy_env(fake: FakeAnthropic, tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLAUDE_", "REDIS_", "DATABASE_URL", "USER_ID"))}
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS="True",
        LITELLM_MASTER_KEY=MASTER_KEY,
        CLAUDE_TOKEN_FILE=str(tmp / "claude_tokens.json"),
        CLAUDE_TOKEN_ENCRYPTION_KEY="5e" * 32,
        CLAUDE_OAUTH_TOKEN_URL=fake.token_url,
        CLAUDE_OAUTH_AUTHORIZE_URL=fake.authorize_url,
        CLAUDE_API_BASE=fake.url,
        NO_PROXY="127.0.0.1,localhost",
        # Every e2e proxy logs at DEBUG: stop_proxy() then checks that no token leaked.
        LITELLM_LOG="DEBUG",
    )
    env.update(extra)
    return env


def start_proxy(
    env: dict[str, str], log_path: Path, *args: str, config: Path = ROOT / "config.oauth.yaml", timeout: float = 120
) -> Proxy:
    port = free_port()
    log = log_path.open("ab")
    proc = subprocess.Popen(
        [str(LITELLM), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), *args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        start_new_session=True,
    )
    proxy = Proxy(url=f"http://127.0.0.1:{port}", env=env, log_path=log_path, processes=[proc])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"proxy exited with {proc.returncode}:\n{proxy.log()[-3000:]}")
        try:
            if httpx.get(f"{proxy.url}/health/liveliness", timeout=1).status_code == 200:
                return proxy
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    stop_proxy(proxy, check_log=False)
    raise RuntimeError(f"proxy did not become healthy in {timeout}s:\n{proxy.log()[-3000:]}")


TOKEN_PATTERN = re.compile(r"sk-ant-[A-Za-z0-9_\-]{4,}")


class TokenLeak(AssertionError):
    pass


def stop_proxy(proxy: Proxy, *, check_log: bool = True) -> None:
    """Stop the proxy; then fail if its log holds anything that looks like an Anthropic token."""
    _terminate(proxy)
    if check_log:
        leaked = sorted({m.group(0)[:18] + "…" for m in TOKEN_PATTERN.finditer(proxy.log())})
        if leaked:
            raise TokenLeak(f"{proxy.log_path} contains tokens: {leaked}")


def _terminate(proxy: Proxy) -> None:
    for proc in proxy.processes:
        terminate_group(proc, grace=15)


def terminate_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM a process started with start_new_session, and its children; SIGKILL after ``grace``."""
    import signal

    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def wait_for_port(port: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class FakeProcess:
    """The fake Anthropic in its own process, so it does not share our GIL."""

    def __init__(self, tmp: Path, access_ttl: int = 86400) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token_url = f"{self.url}/v1/oauth/token"
        self.authorize_url = f"{self.url}/oauth/authorize"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fake_anthropic", "--port", str(self.port), "--access-ttl", str(access_ttl)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=(tmp / "fake.log").open("wb"), text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening" not in line:
            raise RuntimeError(f"fake Anthropic did not start: {line!r}")

    def authorize(self, url: str) -> tuple[str, str]:
        answer = httpx.post(f"{self.url}/_fake/authorize", json={"authorize_url": url})
        if answer.status_code != 200:  # the fake checks client_id, redirect_uri, state like the real page
            raise ValueError(answer.json().get("error_description", answer.text))
        data = answer.json()
        return data["code"], data["state"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


    def control(self, **settings: object) -> dict:
        return httpx.post(f"{self.url}/_fake/control", json=settings).json()

    def state(self) -> dict:
        return httpx.get(f"{self.url}/_fake/state").json()


def cli_login(env: dict[str, str], fake: FakeProcess | FakeAnthropic, account: str | None = None) -> None:
    """Log in with `litellm claude login` + `callback`, each in its own process, as a person would."""
    import json

    def run(*args: str) -> str:
        done = subprocess.run(
            [str(LITELLM), "claude", *args, *(["--account", account] if account else [])],
            env=env, capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 0, f"litellm claude {args[0]}: {done.stdout}{done.stderr}"
        return done.stdout

    code, state = fake.authorize(json.loads(run("login", "--json"))["authorization_url"])
    run("callback", f"{code}#{state}")


def login_and_export(env: dict[str, str], fake: FakeProcess | FakeAnthropic) -> str:
    """Log in through the CLI and return the access token (for a static-key baseline)."""
    cli_login(env, fake)
    return exported_access_token(env)


def exported_access_token(env: dict[str, str]) -> str:
    """The stored access token, as `litellm claude export --show-tokens` gives it."""
    import json

    exported = subprocess.run(
        [str(LITELLM), "claude", "export", "--show-tokens"], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(exported.stdout)["access_token"]


def login_via_cli(proxy: Proxy, fake: FakeAnthropic, account: str | None = None) -> None:
    cli_login(proxy.env, fake, account)


def chat(client: httpx.Client, model: str = "claude-haiku-3.5", text: str = "Hello, how are you?") -> httpx.Response:
    return client.post(
        "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 50},
    )
