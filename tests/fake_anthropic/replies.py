"""What the fake Messages API answers: the identity gate, and deterministic messages and SSE streams.

The text reply is always ``Hello from fake Claude (<model>): <last user text>`` so tests can
tell which model and which request produced it. On top of that, as the real API does:

* ``thinking`` requested (``enabled``/``adaptive``) → a signed ``thinking`` block first;
* ``tools`` given and the prompt asks (``tool_choice`` ``tool``/``any``, or ``auto`` and the
  last user text names a tool) → a ``tool_use`` block after the text, ``stop_reason:
  tool_use``; never in answer to a ``tool_result`` turn, so agent loops end;
* usage with the cache fields; ``cache_control`` prefixes are created once, then read.

Streams follow the real event order: ``message_start`` (usage incl. cache fields),
``content_block_start``, ``ping``, deltas (``thinking_delta`` + ``signature_delta``,
``text_delta``, ``input_json_delta``), ``content_block_stop`` per block, ``message_delta``,
``message_stop``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import secrets
from typing import Any

CLAUDE_CODE_SYSTEM = "You are Claude Code, Anthropic's official CLI for Claude."
AGENT_SDK_SYSTEMS = (
    "You are a Claude agent, built on Anthropic's Claude Agent SDK.",
    "You are Claude Code, Anthropic's official CLI for Claude, running within the Claude Agent SDK.",
)
IDENTITIES = (CLAUDE_CODE_SYSTEM, *AGENT_SDK_SYSTEMS)
BILLING_PREFIX = "x-anthropic-billing-header:"


def has_identity(system: Any) -> bool:
    """Does ``system`` carry the identity the way the live gate wants it (protocol-2026 §2.2)?

    A plain string must start with it; in a list, after any leading billing-header blocks,
    the next block must be exactly the identity: "identity + more text" in one block fails.
    """
    if isinstance(system, str):
        return system.startswith(IDENTITIES)
    if not isinstance(system, list):
        return False
    blocks = iter(system)
    for block in blocks:
        text = block.get("text") if isinstance(block, dict) and block.get("type") == "text" else None
        if isinstance(text, str) and text.startswith(BILLING_PREFIX):
            continue
        return text in IDENTITIES
    return False


def last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "\n".join(b["text"] for b in content if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str))
    return ""


def _answers_tool_result(messages: list[Any]) -> bool:
    last = messages[-1] if messages else None
    content = last.get("content") if isinstance(last, dict) and last.get("role") == "user" else None
    return isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)


def count_tokens(body: dict[str, Any]) -> int:
    """Roughly four characters a token, over everything the model would read."""
    return max(1, len(json.dumps([body.get("system"), body.get("messages"), body.get("tools")])) // 4)


def _chosen_tool(body: dict[str, Any], text: str) -> dict[str, Any] | None:
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and isinstance(t.get("name"), str)]
    choice = body.get("tool_choice") if isinstance(body.get("tool_choice"), dict) else {"type": "auto"}
    if not tools or choice.get("type") == "none" or _answers_tool_result(body["messages"]):
        return None
    if choice.get("type") == "tool":
        return next((t for t in tools if t["name"] == choice.get("name")), None)
    if choice.get("type") == "any":
        return tools[0]
    # Only the person's own words, whole words: Claude Code's turns carry <system-reminder>
    # text full of its tool names ("Agent", "Read"), and a model does not call a tool for those.
    own = re.sub(r"<system-reminder>.*?</system-reminder>", " ", text, flags=re.S)
    return next((t for t in tools if re.search(rf"(?<![\w-]){re.escape(t['name'])}(?![\w-])", own, re.I)), None)


def _example(schema: Any, name: str) -> Any:
    schema = schema if isinstance(schema, dict) else {}
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        wanted = schema.get("required") if isinstance(schema.get("required"), list) else list(props)
        return {p: _example(props.get(p), p) for p in wanted if isinstance(p, str)}
    return {"integer": 1, "number": 1, "boolean": True, "array": [], "null": None}.get(str(kind), f"fake-{name}")


def _signature(text: str) -> str:
    # Opaque to clients, like the real one; derived from the text so replays can be compared.
    return base64.b64encode(b"fake-sig:" + hashlib.sha256(text.encode()).digest()).decode()


class Cache:
    """Prompt-cache bookkeeping: a ``cache_control`` prefix is written once, then read."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def usage(self, body: dict[str, Any]) -> tuple[int, int, int]:
        """(uncached input, cache creation, cache read) tokens for this request."""
        total = count_tokens(body)
        prefix = _cached_prefix(body)
        if prefix is None:
            return total, 0, 0
        cached = min(total, max(1, len(prefix) // 4))
        key = hashlib.sha256(f"{body.get('model')}\0{prefix}".encode()).hexdigest()
        if key in self._seen:
            return max(1, total - cached), 0, cached
        self._seen.add(key)
        return max(1, total - cached), cached, 0


def _cached_prefix(body: dict[str, Any]) -> str | None:
    """Everything up to the last ``cache_control`` marker (tools, system, messages order), or None."""
    parts: list[Any] = []
    last = None
    for block in [*(body.get("tools") or []), *_blocks(body.get("system")),
                  *(b for m in body.get("messages") or [] if isinstance(m, dict) for b in _blocks(m.get("content")))]:  # fmt: skip
        parts.append(block)
        if isinstance(block, dict) and block.get("cache_control"):
            last = len(parts)
    return None if last is None else json.dumps(parts[:last], sort_keys=True)


def _blocks(content: Any) -> list[Any]:
    if isinstance(content, list):
        return content
    return [] if content is None else [content]


def build_message(body: dict[str, Any], cache: Cache) -> dict[str, Any]:
    """The complete (non-streamed) Messages API answer to ``body``."""
    model = body["model"]
    text = last_user_text(body["messages"])
    reply = f"Hello from fake Claude ({model}): " + text[:200]
    content: list[dict[str, Any]] = []
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive"):
        thought = f"The user wrote {len(text)} characters; answer them plainly."
        content.append({"type": "thinking", "thinking": thought, "signature": _signature(thought)})
    content.append({"type": "text", "text": reply})
    stop_reason = "end_turn"
    tool = _chosen_tool(body, text)
    if tool is not None:
        content.append({"type": "tool_use", "id": "toolu_" + secrets.token_hex(12), "name": tool["name"],
                        "input": _example(tool.get("input_schema"), tool["name"])})  # fmt: skip
        stop_reason = "tool_use"
    uncached, created, read = cache.usage(body)
    output_tokens = max(1, len(json.dumps(content)) // 4)
    return {
        "id": "msg_" + secrets.token_hex(12), "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": stop_reason, "stop_sequence": None,
        "usage": {"input_tokens": uncached, "cache_creation_input_tokens": created, "cache_read_input_tokens": read,
                  "cache_creation": {"ephemeral_5m_input_tokens": created, "ephemeral_1h_input_tokens": 0},
                  "output_tokens": output_tokens, "service_tier": "standard"},
    }  # fmt: skip


def _chunks(text: str, parts: int = 5) -> list[str]:
    size = max(1, math.ceil(len(text) / parts))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def stream_events(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The SSE events that stream ``message``, in the real API's order."""
    start = {**message, "content": [], "stop_reason": None, "usage": {**message["usage"], "output_tokens": 1}}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        if kind == "thinking":
            opening: dict[str, Any] = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": c} for c in _chunks(block["thinking"], 3)]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        elif kind == "tool_use":
            opening = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": c} for c in _chunks(json.dumps(block["input"]), 3)]
        else:
            opening = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": c} for c in _chunks(block["text"])]
        events.append({"type": "content_block_start", "index": index, "content_block": opening})
        if index == 0:
            events.append({"type": "ping"})
        events += [{"type": "content_block_delta", "index": index, "delta": d} for d in deltas]
        events.append({"type": "content_block_stop", "index": index})
    events += [
        {"type": "message_delta", "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
         "usage": {"output_tokens": message["usage"]["output_tokens"]}},
        {"type": "message_stop"},
    ]  # fmt: skip
    return events


def sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
