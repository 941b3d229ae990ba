"""The one line the Messages API requires of subscription tokens: Claude Code's identity.

For non-Haiku models Anthropic answers a request without it with a headerless
``429 "Error"``. It must be the *whole* first entry of the ``system`` array (a first
block "identity + more text" is refused), or the start of a plain-string ``system``
(research/protocol-2026.md §2.2). Sources differ on whether a plain string that merely
starts with it is enough, so we always send it as its own block: that works under both.

A request that already carries Claude Code's own system blocks (its
``x-anthropic-billing-header:`` block, then its identity or the Agent SDK's) is left
exactly as it is: never a second identity, never reordered.
"""

from __future__ import annotations

from typing import Any

BILLING_PREFIX = "x-anthropic-billing-header:"
AGENT_SDK_IDENTITIES = (
    "You are a Claude agent, built on Anthropic's Claude Agent SDK.",
    "You are Claude Code, Anthropic's official CLI for Claude, running within the Claude Agent SDK.",
)


def add_identity(kwargs: dict[str, Any], identity: str, call_type: str) -> None:
    """Make the identity the first system block of a LiteLLM call's kwargs, in place."""
    if "messages" in kwargs and call_type != "anthropic_messages":
        kwargs["messages"] = _with_identity_message(list(kwargs.get("messages") or []), identity)
    else:
        kwargs["system"] = with_identity(kwargs.get("system"), identity)


def with_identity(system: Any, identity: str) -> Any:
    """An Anthropic ``system`` value (None, str or list of blocks) with the identity block first."""
    if system is None or system == "" or system == []:
        return [{"type": "text", "text": identity}]
    if isinstance(system, str):
        if system == identity:
            return [{"type": "text", "text": identity}]
        rest = system.removeprefix(identity).lstrip() if system.startswith(identity) else system
        return [{"type": "text", "text": identity}, {"type": "text", "text": rest}]
    if not isinstance(system, list):
        return system  # not a shape we know: let the API judge it
    blocks = list(system)
    if blocks and _text(blocks[0]).startswith(BILLING_PREFIX):
        return system  # Claude Code's own request: its blocks are signed as they are
    first = _text(blocks[0]) if blocks else ""
    if first == identity or first in AGENT_SDK_IDENTITIES:
        return system
    if first.startswith(identity):
        head = dict(blocks[0]) if isinstance(blocks[0], dict) else {"type": "text"}
        head["text"] = first.removeprefix(identity).lstrip()
        return [{"type": "text", "text": identity}, head, *blocks[1:]]
    return [{"type": "text", "text": identity}, *blocks]


def _with_identity_message(messages: list[Any], identity: str) -> list[Any]:
    """The OpenAI-shaped path: LiteLLM turns each system message into its own system block."""
    first = messages[0] if messages else None
    if not (isinstance(first, dict) and first.get("role") == "system"):
        return [{"role": "system", "content": identity}, *messages]
    content = first.get("content")
    text = _text(content)
    if text == identity or text in AGENT_SDK_IDENTITIES or text.startswith(BILLING_PREFIX):
        return messages  # each content block becomes its own system block: the identity is whole
    if text.startswith(identity):
        # Split "identity + more" into the identity message and the caller's remainder.
        if isinstance(content, list):
            head = dict(content[0]) if isinstance(content[0], dict) else {"type": "text"}
            head["text"] = text.removeprefix(identity).lstrip()
            remainder: Any = [head, *content[1:]] if head["text"] else list(content[1:])
        else:
            remainder = text.removeprefix(identity).lstrip()
        rest = [{**first, "content": remainder}] if remainder else []
        return [{"role": "system", "content": identity}, *rest, *messages[1:]]
    return [{"role": "system", "content": identity}, *messages]


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or "")
    if isinstance(content, list) and content:
        return _text(content[0])
    return ""
