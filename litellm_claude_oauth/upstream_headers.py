"""Anthropic's rate-limit headers on the proxy's error responses.

LiteLLM's ``/v1/messages`` answers an upstream error with its own headers only, so a
client (Claude Code shows "resets at …" from them) never sees ``retry-after`` or the
``anthropic-ratelimit-unified-*`` family. The hook's failure callback drops what the
client should see (from the failed call's response: upstream's, or our own 429) into a
per-request holder; this ASGI wrapper adds it to the error response.

The holder is a mutable dict put in a ContextVar by the wrapper: the request's tasks
copy the context, so they share the same dict and their writes reach the wrapper.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from contextvars import ContextVar
from typing import Any

ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]

_collected: ContextVar[dict[str, str] | None] = ContextVar("claude_oauth_upstream_headers", default=None)


def _wanted(name: str) -> bool:
    name = name.lower()
    return name == "retry-after" or name.startswith("anthropic-ratelimit-")


def remember(headers: Mapping[str, str]) -> None:
    """Keep the headers a client needs from an upstream (or our own) rate-limit answer."""
    holder = _collected.get()
    if holder is not None:
        holder.update({k.lower(): v for k, v in headers.items() if _wanted(k)})


class ForwardRateLimitHeaders:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        holder: dict[str, str] = {}
        token = _collected.set(holder)

        async def send_with_headers(message: MutableMapping[str, Any]) -> None:
            if message.get("type") == "http.response.start" and message.get("status", 200) >= 400 and holder:
                present = {bytes(k).lower() for k, _ in message.get("headers", [])}
                extra = [(k.encode(), v.encode()) for k, v in holder.items() if k.encode() not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            _collected.reset(token)


def install(app: Any) -> None:
    """Wrap the proxy app's middleware stack, once, whether or not it is built yet."""
    if getattr(app.state, "claude_oauth_headers", False):
        return
    if getattr(app, "middleware_stack", None) is None:
        app.add_middleware(ForwardRateLimitHeaders)
    else:  # LiteLLM loads callbacks at startup, after Starlette has built the stack
        app.middleware_stack = ForwardRateLimitHeaders(app.middleware_stack)
    app.state.claude_oauth_headers = True
