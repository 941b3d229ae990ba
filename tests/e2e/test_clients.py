"""Real clients nobody here wrote, through the real proxy, against the fake Anthropic (issue 11).

- Claude Code (`claude -p`, pinned by scripts/claude_code.sh) in both modes: the proxy's
  stored account (``ANTHROPIC_AUTH_TOKEN`` = a LiteLLM key) and Claude Code's own login
  (``CLAUDE_CODE_OAUTH_TOKEN`` + ``x-litellm-api-key``); each run's traffic other than
  to loopback goes to an EgressTrap and must be empty.
- The official ``anthropic`` SDK (Messages stream and not, count_tokens, models.list,
  tools / thinking signatures / cache_control / images) and ``openai`` SDK (chat
  completions stream and not), on the stored account.

What "unchanged" means is measured, not assumed: Claude Code's request is first
recorded against a plain recorder (same HOME, same prompt), and the fake must receive
the same system blocks, messages and tools; a stream's event order is compared with
what the fake itself sends for the same request.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.fake_anthropic import FakeAnthropic
from tests.fake_anthropic.server import RecordedRequest

from .clients import EgressTrap, Recorder, Seen, claude_binary, claude_env, run_claude
from .harness import LITELLM, MASTER_KEY, Proxy, cli_login, proxy_env, start_proxy, stop_proxy

pytestmark = pytest.mark.e2e

STORED_EMAIL = "stored-account@example.com"
CLIENT_EMAIL = "claude-code-user@example.com"
MODEL = "claude-sonnet-4.6"  # config.oauth.yaml: anthropic/claude-sonnet-4-6
UPSTREAM_MODEL = "claude-sonnet-4-6"
CLAUDE_CODE_IDENTITY = "You are Claude Code, Anthropic's official CLI for Claude."
AGENT_SDK_IDENTITY = "You are a Claude agent, built on Anthropic's Claude Agent SDK."
IDENTITIES = (CLAUDE_CODE_IDENTITY, AGENT_SDK_IDENTITY)
# A 1x1 transparent PNG.
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
).decode()


@dataclass
class Stack:
    proxy: Proxy
    fake: FakeAnthropic
    stored_token: str  # the proxy's logged-in account
    client_token: str  # a second account's token, held only by the client (Claude Code's own login)
    trap: EgressTrap
    homes: Path


@pytest.fixture(scope="module")
def claude() -> Path:
    return claude_binary()


@pytest.fixture(scope="module")
def stack(fake: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("clients")
    fake.next_email = STORED_EMAIL
    proxy = start_proxy(proxy_env(fake, tmp), tmp / "proxy.log")
    try:
        cli_login(proxy.env, fake)
        exported = subprocess.run(
            [str(LITELLM), "claude", "export", "--show-tokens"], env=proxy.env, capture_output=True, text=True, check=True
        )
        stored = json.loads(exported.stdout)["access_token"]
        client_token = fake.issue_tokens(email=CLIENT_EMAIL)["access_token"]
        with EgressTrap() as trap:
            yield Stack(proxy, fake, stored, client_token, trap, tmp / "homes")
    finally:
        stop_proxy(proxy)


# --- helpers -------------------------------------------------------------------------------------


def new_requests(fake: FakeAnthropic, since: int) -> list[RecordedRequest]:
    return fake.requests[since:]  # a slice is a copy; the fake only ever appends


def bearer(request: RecordedRequest) -> str:
    return request.headers.get("authorization", "").removeprefix("Bearer ").strip()


def system_texts(body: dict[str, Any]) -> list[str]:
    system = body.get("system")
    if isinstance(system, str):
        return [system]
    return [b.get("text", "") for b in system or [] if isinstance(b, dict)]


def identity_blocks(body: dict[str, Any]) -> list[str]:
    return [t for t in system_texts(body) if t.strip() in IDENTITIES]


def record_claude(claude: Path, home: Path, prompt: str, **env: str) -> Seen:
    """What this Claude Code sends for ``prompt`` from ``home``, captured without any proxy."""
    with Recorder() as recorder, EgressTrap() as trap:
        done = run_claude(claude, claude_env(home, recorder.url, trap.url, **env), prompt)
        assert done.returncode == 0, done.stdout + done.stderr
        assert trap.attempts == []
        messages = [s for s in recorder.seen if s.path == "/v1/messages"]
        assert len(messages) == 1, [(s.method, s.path) for s in recorder.seen]
        return messages[0]


def claude_through_proxy(
    stack: Stack, claude: Path, home: Path, prompt: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], list[RecordedRequest]]:
    since = len(stack.fake.requests)
    attempts = len(stack.trap.attempts)
    done = run_claude(claude, claude_env(home, stack.proxy.url, stack.trap.url, **env), prompt)
    assert stack.trap.attempts[attempts:] == [], "Claude Code tried to reach a host other than ANTHROPIC_BASE_URL"
    return done, [r for r in new_requests(stack.fake, since) if r.path.startswith("/v1/messages")]


def describe(sent: list[RecordedRequest], stack: Stack) -> str:
    """What reached the fake, for failure messages (whose token, never the token)."""
    owner = {stack.stored_token: "the stored account", stack.client_token: "the client's own login"}
    return "\n".join(
        f"  {r.method} {r.path} -> {r.status}; bearer of {owner.get(bearer(r), 'someone else')}; model {r.body.get('model') if isinstance(r.body, dict) else None}; "
        f"system[:3] {[t[:50] for t in system_texts(r.body)[:3]] if isinstance(r.body, dict) else None}"
        for r in sent
    ) or "  nothing"


def stored_mode(**extra: str) -> dict[str, str]:
    return {"ANTHROPIC_AUTH_TOKEN": MASTER_KEY, **extra}


def own_login_mode(token: str, **extra: str) -> dict[str, str]:
    return {"CLAUDE_CODE_OAUTH_TOKEN": token, "ANTHROPIC_CUSTOM_HEADERS": f"x-litellm-api-key: Bearer {MASTER_KEY}", **extra}


def assert_passed_unchanged(sent: RecordedRequest, recorded: Seen) -> None:
    """The fake got Claude Code's own request: one identity, its blocks, messages and tools as sent."""
    body = sent.body
    assert len(identity_blocks(body)) == 1, f"identity blocks at the fake: {identity_blocks(body)}"
    assert system_texts(body) == system_texts(recorded.body), "system blocks changed on the way"
    assert body["system"] == recorded.body["system"], "system block fields (cache_control…) changed on the way"
    assert body["messages"] == recorded.body["messages"], "messages changed on the way"
    assert body.get("tools") == recorded.body.get("tools"), "tools changed on the way"
    for field in ("thinking", "context_management", "output_config", "max_tokens", "stream"):
        assert body.get(field) == recorded.body.get(field), f"{field} changed on the way"


# --- Claude Code ---------------------------------------------------------------------------------


def test_claude_code_on_the_stored_account(stack: Stack, claude: Path) -> None:
    home = stack.homes / "stored"
    recorded = record_claude(claude, home, "hi", **stored_mode(ANTHROPIC_MODEL=MODEL))
    done, sent = claude_through_proxy(stack, claude, home, "hi", **stored_mode(ANTHROPIC_MODEL=MODEL))
    assert done.returncode == 0, f"exit {done.returncode}: {done.stdout}{done.stderr}\nat the fake:\n{describe(sent, stack)}"
    assert f"Hello from fake Claude ({UPSTREAM_MODEL}):" in done.stdout
    assert sent and all(r.status == 200 for r in sent), [(r.path, r.status) for r in sent]
    assert {bearer(r) for r in sent} == {stack.stored_token}, "not answered by the stored account"
    assert all("x-api-key" not in r.headers for r in sent)
    assert_passed_unchanged(sent[0], recorded)  # the first turn; the fake may answer with tool calls


@pytest.mark.parametrize("mode", ["stored", "own-login"])
def test_claude_code_default_model_ids_resolve(stack: Stack, claude: Path, mode: str) -> None:
    """No ANTHROPIC_MODEL: whatever Claude Code picks by default must be served as that model."""
    env = stored_mode() if mode == "stored" else own_login_mode(stack.client_token)
    home = stack.homes / f"default-{mode}"
    default_model = record_claude(claude, home, "hi", **env).body["model"]
    done, sent = claude_through_proxy(stack, claude, home, "hi", **env)
    assert done.returncode == 0, (
        f"default model {default_model!r}: exit {done.returncode}: {done.stdout}{done.stderr}\nat the fake:\n{describe(sent, stack)}"
    )
    assert f"Hello from fake Claude ({default_model}):" in done.stdout
    assert [r.body["model"] for r in sent] == [default_model]


def test_claude_code_with_its_own_login(stack: Stack, claude: Path) -> None:
    home = stack.homes / "own-login"
    env = own_login_mode(stack.client_token, ANTHROPIC_MODEL=MODEL)
    recorded = record_claude(claude, home, "hi", **env)
    done, sent = claude_through_proxy(stack, claude, home, "hi", **env)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stdout}{done.stderr}\nat the fake:\n{describe(sent, stack)}"
    assert f"Hello from fake Claude ({UPSTREAM_MODEL}):" in done.stdout
    assert sent and all(r.status == 200 for r in sent), [(r.path, r.status) for r in sent]
    tokens = {bearer(r) for r in sent}
    assert stack.stored_token not in tokens, "answered by the proxy's stored account, not the client's own login"
    assert tokens == {stack.client_token}
    assert "oauth-2025-04-20" in sent[0].headers.get("anthropic-beta", "")
    assert_passed_unchanged(sent[0], recorded)  # the first turn; the fake may answer with tool calls


def test_claude_code_with_a_bogus_own_token_gets_401_not_the_stored_account(stack: Stack, claude: Path) -> None:
    bogus = "sk-ant-oat01-" + "x" * 40 + "-not-issued-by-anyone"
    done, sent = claude_through_proxy(stack, claude, stack.homes / "bogus", "hi", **own_login_mode(bogus, ANTHROPIC_MODEL=MODEL))
    output = done.stdout + done.stderr
    assert done.returncode != 0, f"a bogus client token was answered: {output}\nat the fake:\n{describe(sent, stack)}"
    assert "Hello from fake Claude" not in output
    assert "401" in output or "authentication" in output.lower(), output
    assert all(bearer(r) != stack.stored_token for r in sent), f"the stored account answered:\n{describe(sent, stack)}"
    assert all(r.status == 401 for r in sent), describe(sent, stack)


# --- the anthropic SDK ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def anthropic_client(stack: Stack) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=stack.proxy.url, api_key=MASTER_KEY, max_retries=0, timeout=60) as client:
        yield client


def test_anthropic_sdk_message(stack: Stack, anthropic_client: anthropic.Anthropic) -> None:
    since = len(stack.fake.requests)
    message = anthropic_client.messages.create(
        model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "Hello there"}]
    )
    assert message.type == "message" and message.role == "assistant"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == f"Hello from fake Claude ({UPSTREAM_MODEL}): Hello there"
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0
    (sent,) = [r for r in new_requests(stack.fake, since) if r.path == "/v1/messages"]
    assert bearer(sent) == stack.stored_token and "x-api-key" not in sent.headers
    assert sent.body["model"] == UPSTREAM_MODEL
    assert system_texts(sent.body) == [CLAUDE_CODE_IDENTITY]


def sse_events(url: str, headers: dict[str, str], body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every SSE event a POST to ``url`` streams back, ``ping`` included."""
    with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as response:
        assert response.status_code == 200, response.read()
        return [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]


def event_shape(event: dict[str, Any]) -> tuple[str, ...]:
    """An event's type and its block/delta type; plus the payload that must survive byte for byte."""
    block, delta = event.get("content_block") or {}, event.get("delta") or {}
    kept = {k: delta.get(k) for k in ("thinking", "signature", "text", "partial_json", "stop_reason") if k in delta}
    kept |= {k: block.get(k) for k in ("name", "signature") if k in block}
    return (event["type"], str(block.get("type", "")), str(delta.get("type", "")), json.dumps(kept, sort_keys=True))


STREAM_CASES = {
    "text": {"messages": [{"role": "user", "content": "Stream this please"}]},
    "thinking-and-tool-use": {
        "messages": [{"role": "user", "content": "Please call get_weather for Paris"}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [{"name": "get_weather", "description": "Weather for a city",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
    },
}  # fmt: skip


@pytest.mark.parametrize("case", list(STREAM_CASES))
def test_anthropic_stream_passes_events_unchanged(stack: Stack, anthropic_client: anthropic.Anthropic, case: str) -> None:
    request = {"model": MODEL, "max_tokens": 2048, **STREAM_CASES[case]}
    since = len(stack.fake.requests)
    events = list(anthropic_client.messages.create(**request, stream=True))
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta")
    prompt = request["messages"][0]["content"]
    assert text == f"Hello from fake Claude ({UPSTREAM_MODEL}): {prompt}"
    assert events[0].type == "message_start" and events[0].message.usage.input_tokens > 0
    (sent,) = [r for r in new_requests(stack.fake, since) if r.path == "/v1/messages"]
    assert bearer(sent) == stack.stored_token and sent.body.get("stream") is True

    # The same request straight to the fake, and raw through the proxy (the SDK hides `ping`).
    upstream_headers = {"authorization": f"Bearer {stack.stored_token}", "anthropic-version": "2023-06-01",
                        "anthropic-beta": "oauth-2025-04-20"}  # fmt: skip
    direct = [event_shape(e) for e in sse_events(f"{stack.fake.url}/v1/messages", upstream_headers, sent.body)]
    proxied = [
        event_shape(e)
        for e in sse_events(f"{stack.proxy.url}/v1/messages", {"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01"},
                            {**request, "stream": True})
    ]  # fmt: skip
    assert [e.type for e in events] == [shape[0] for shape in direct if shape[0] != "ping"]
    assert proxied == direct, "through the proxy:\n" + "\n".join(map(str, proxied)) + "\nfrom the fake:\n" + "\n".join(map(str, direct))


def test_anthropic_sdk_tools_thinking_cache_control_and_image_pass_unchanged(
    stack: Stack, anthropic_client: anthropic.Anthropic
) -> None:
    signature = "EqQBCkYIBxgCKkCz" + "A" * 64 + "=="  # opaque to everyone but Anthropic: must arrive byte for byte
    tools = [{
        "name": "get_weather", "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "cache_control": {"type": "ephemeral"},
    }]  # fmt: skip
    messages = [
        {"role": "user", "content": [
            {"type": "text", "text": "What is in this picture, and the weather in Paris?", "cache_control": {"type": "ephemeral"}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        ]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "A one-pixel image; then call the weather tool.", "signature": signature},
            {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "sunny, 21 C"},
            {"type": "text", "text": "thanks"},
        ]},
    ]  # fmt: skip
    system = [{"type": "text", "text": "Answer in one line.", "cache_control": {"type": "ephemeral"}}]
    thinking = {"type": "enabled", "budget_tokens": 1024}
    since = len(stack.fake.requests)
    message = anthropic_client.messages.create(
        model=MODEL, max_tokens=2048, system=system, messages=messages, tools=tools, thinking=thinking
    )
    assert [b.text for b in message.content if b.type == "text"] == [f"Hello from fake Claude ({UPSTREAM_MODEL}): thanks"]
    (sent,) = [r for r in new_requests(stack.fake, since) if r.path == "/v1/messages"]
    assert bearer(sent) == stack.stored_token
    assert sent.body["messages"] == messages, json.dumps(sent.body["messages"])[:2000]
    assert sent.body["tools"] == tools
    assert sent.body["thinking"] == thinking
    assert sent.body["system"] == [{"type": "text", "text": CLAUDE_CODE_IDENTITY}, *system]
    # The reply's own thinking block and signature come back as the fake wrote them.
    direct = httpx.post(f"{stack.fake.url}/v1/messages", json=sent.body, timeout=30, headers={
        "authorization": f"Bearer {stack.stored_token}", "anthropic-version": "2023-06-01", "anthropic-beta": "oauth-2025-04-20"})
    assert direct.status_code == 200, direct.text
    upstream_thinking = [(b["thinking"], b["signature"]) for b in direct.json()["content"] if b["type"] == "thinking"]
    assert upstream_thinking, "the fake answers a thinking request with a signed thinking block"
    assert [(b.thinking, b.signature) for b in message.content if b.type == "thinking"] == upstream_thinking


def test_anthropic_sdk_count_tokens(stack: Stack, anthropic_client: anthropic.Anthropic) -> None:
    since = len(stack.fake.requests)
    counted = anthropic_client.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "How many tokens is this sentence?"}]
    )
    assert isinstance(counted.input_tokens, int) and counted.input_tokens > 0
    # Counted locally or by Anthropic; if it went upstream, it went as the stored account.
    upstream = [r for r in new_requests(stack.fake, since) if r.path.startswith("/v1/messages")]
    assert all(bearer(r) == stack.stored_token and "x-api-key" not in r.headers for r in upstream), [
        (r.path, r.status, sorted(r.headers)) for r in upstream
    ]


def test_anthropic_sdk_models_list_in_anthropic_shape(stack: Stack, anthropic_client: anthropic.Anthropic) -> None:
    page = anthropic_client.models.list()
    ids = {m.id for m in page.data}
    assert {MODEL, "claude-haiku-4.5", "claude-opus-4.6"} <= ids, ids
    for model in page.data:
        assert model.type == "model", model
        assert isinstance(model.display_name, str) and model.display_name
        assert model.created_at is not None


# --- the openai SDK ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openai_client(stack: Stack) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{stack.proxy.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=60) as client:
        yield client


def test_openai_sdk_chat_completion(stack: Stack, openai_client: openai.OpenAI) -> None:
    since = len(stack.fake.requests)
    completion = openai_client.chat.completions.create(
        model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "Hello from OpenAI land"}]
    )
    choice = completion.choices[0]
    assert choice.message.content == f"Hello from fake Claude ({UPSTREAM_MODEL}): Hello from OpenAI land"
    assert choice.finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    (sent,) = [r for r in new_requests(stack.fake, since) if r.path == "/v1/messages"]
    assert bearer(sent) == stack.stored_token


def test_openai_sdk_chat_completion_stream(stack: Stack, openai_client: openai.OpenAI) -> None:
    since = len(stack.fake.requests)
    chunks = list(
        openai_client.chat.completions.create(
            model=MODEL, max_tokens=50, stream=True, messages=[{"role": "user", "content": "Stream from OpenAI land"}]
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"Hello from fake Claude ({UPSTREAM_MODEL}): Stream from OpenAI land"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    (sent,) = [r for r in new_requests(stack.fake, since) if r.path == "/v1/messages"]
    assert bearer(sent) == stack.stored_token and sent.body.get("stream") is True
