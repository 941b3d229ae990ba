"""``GET /auth/claude/oauth/ui``: a small login page for the admin API in routes.py.

A browser cannot send an ``Authorization`` header when it navigates, so the page and
its script/style are served without auth: they are static and hold no data. The page
asks for the admin key (kept in the tab's sessionStorage, never in a URL) and calls
the admin-only JSON API with ``Authorization: Bearer <key>``. Everything is
same-origin, so the CSP is ``default-src 'self'`` with no inline script or style.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter, HTTPException
from fastapi.responses import RedirectResponse, Response

PREFIX = "/auth/claude/oauth/ui"

# No inline script or style: login.js and login.css come from this router.
CSP = "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
ASSETS = {
    "login.html": "text/html; charset=utf-8",
    "login.js": "text/javascript; charset=utf-8",
    "login.css": "text/css; charset=utf-8",
}

router = APIRouter(prefix=PREFIX, tags=["Claude OAuth"], include_in_schema=False)


@cache
def _read(name: str) -> bytes:
    return files("litellm_claude_oauth").joinpath("static", name).read_bytes()


def _asset(name: str) -> Response:
    return Response(_read(name), media_type=ASSETS[name], headers=SECURITY_HEADERS)


@router.get("")
async def page() -> Response:
    return _asset("login.html")


@router.get("/")
async def page_slash() -> RedirectResponse:
    # The page uses relative URLs (so it also works under a root path): keep one address.
    return RedirectResponse("../ui", status_code=308)


@router.get("/{name}")
async def asset(name: str) -> Response:
    if name not in ASSETS or name == "login.html":
        raise HTTPException(status_code=404, detail="not found")
    return _asset(name)


__all__ = ["PREFIX", "router"]
