"""The ASGI wrapper that puts Anthropic's rate-limit headers on the proxy's error responses."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from litellm_claude_oauth.upstream_headers import install, remember


async def refused(request: Any) -> JSONResponse:
    # What a handler deep in LiteLLM learns from upstream, in a task of its own.
    import asyncio

    async def upstream_call() -> None:
        remember({"retry-after": "42", "anthropic-ratelimit-unified-5h-status": "rejected", "x-other": "no"})

    await asyncio.create_task(upstream_call())
    return JSONResponse({"error": "rate limited"}, status_code=429)


async def fine(request: Any) -> JSONResponse:
    remember({"retry-after": "42"})
    return JSONResponse({"ok": True})


def app() -> Starlette:
    return Starlette(routes=[Route("/v1/messages", refused, methods=["POST"]), Route("/ok", fine)])


@pytest.mark.parametrize("built", [False, True])
async def test_error_responses_get_the_remembered_headers(built: bool) -> None:
    target = app()
    if built:  # LiteLLM loads our callback after Starlette built its middleware stack
        target.middleware_stack = target.build_middleware_stack()
    install(target)
    install(target)  # once only
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=target), base_url="http://proxy") as client:
        response = await client.post("/v1/messages")
        ok = await client.get("/ok")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "42"
    assert response.headers["anthropic-ratelimit-unified-5h-status"] == "rejected"
    assert "x-other" not in response.headers
    assert "retry-after" not in ok.headers  # success responses are left alone
