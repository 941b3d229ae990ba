"""Anthropic's OAuth endpoints: authorize URL, code exchange, refresh.

Bodies are JSON (not form-encoded) because that is what the token endpoint accepts.
``CLAUDE_OAUTH_TOKEN_URL`` may list several endpoints; a transport error or a 404/405
moves on to the next, any other answer is final.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx

from .errors import InvalidGrantError, OAuthError, RateLimitedError
from .settings import Settings
from .tokens import TokenSet

log = logging.getLogger(__name__)


def build_authorize_url(settings: Settings, *, code_challenge: str, state: str) -> str:
    query = {
        "code": "true",
        "client_id": settings.client_id,
        "response_type": "code",
        "redirect_uri": settings.redirect_uri,
        "scope": settings.scopes,
        "code_challenge": code_challenge,
        "code_challenge_method": "S256",
        "state": state,
    }
    return f"{settings.authorize_url}?{urlencode(query)}"


def parse_authorization_input(text: str) -> tuple[str, str | None]:
    """Accept what people paste: ``code#state``, a bare code, or the whole callback URL."""
    text = text.strip().strip("'\"")
    if not text:
        raise ValueError("the authorization code is empty")
    if text.startswith(("http://", "https://")):
        url = urlparse(text)
        query = parse_qs(url.query)
        codes = query.get("code")
        if not codes:
            raise ValueError("that URL has no ?code= parameter; paste the code shown on the page instead")
        code = codes[0]
        state = (query.get("state") or [None])[0]
        if state is None and url.fragment:
            state = url.fragment
        return _checked_code(code), state
    code, sep, state = text.partition("#")
    return _checked_code(code), (state or None) if sep else None


def _checked_code(code: str) -> str:
    code = code.strip()
    if not code or len(code) > 2048 or any(c.isspace() for c in code):
        raise ValueError("that does not look like an authorization code")
    return code


class OAuthClient:
    def __init__(self, settings: Settings, http: httpx.AsyncClient | None = None):
        self.settings = settings
        self._http = http
        self._owns_http = http is None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.settings.http_timeout_seconds)
        return self._http

    async def aclose(self) -> None:
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    async def exchange_code(self, *, code: str, state: str, code_verifier: str) -> TokenSet:
        body = {
            "grant_type": "authorization_code",
            "code": code,
            "state": state,
            "client_id": self.settings.client_id,
            "redirect_uri": self.settings.redirect_uri,
            "code_verifier": code_verifier,
        }
        now = time.time()
        return TokenSet.from_token_response(await self._post_token(body, "exchange"), now=now)

    async def refresh(self, tokens: TokenSet) -> TokenSet:
        if tokens.refresh is None:
            raise InvalidGrantError("this token has no refresh token (setup tokens cannot be refreshed)")
        body: dict[str, Any] = {
            "grant_type": "refresh_token",
            "refresh_token": tokens.refresh,
            "client_id": self.settings.client_id,
        }
        now = time.time()
        return TokenSet.from_token_response(await self._post_token(body, "refresh"), previous=tokens, now=now)

    async def _post_token(self, body: Mapping[str, Any], what: str) -> Mapping[str, Any]:
        last_error: Exception | None = None
        for url in self.settings.token_urls:
            try:
                response = await self._client().post(
                    url, json=dict(body), headers={"Content-Type": "application/json", "Accept": "application/json"}
                )
            except httpx.TransportError as exc:
                log.warning("Claude OAuth %s: %s unreachable (%s)", what, url, type(exc).__name__)
                last_error = OAuthError(f"cannot reach the Claude token endpoint {url}: {type(exc).__name__}")
                continue
            if response.status_code in (404, 405) and url != self.settings.token_urls[-1]:
                log.info("Claude OAuth %s: %s answered %s, trying the next token URL", what, url, response.status_code)
                continue
            return _token_response(response, what)
        assert last_error is not None
        raise last_error


def _token_response(response: httpx.Response, what: str) -> Mapping[str, Any]:
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.is_success and isinstance(data, Mapping) and data.get("access_token"):
        return data
    error, description = _oauth_error_fields(data)
    if response.status_code == 429:
        raise RateLimitedError(
            f"Claude token endpoint rate-limited the {what}; retry later",
            retry_after=_retry_after(response.headers.get("retry-after")),
        )
    if error == "invalid_grant" or (response.status_code in (400, 401) and "invalid_grant" in (description or "")):
        raise InvalidGrantError(
            f"Claude rejected the {what}: {description or 'invalid_grant'}",
            status_code=response.status_code,
            error="invalid_grant",
        )
    if response.is_success:
        raise OAuthError(f"Claude token endpoint returned an unexpected {what} response", status_code=response.status_code)
    detail = description or error or response.reason_phrase
    raise OAuthError(
        f"Claude token endpoint refused the {what} (HTTP {response.status_code}): {detail}",
        status_code=response.status_code,
        error=error,
    )


def _oauth_error_fields(data: object) -> tuple[str | None, str | None]:
    if not isinstance(data, Mapping):
        return None, None
    error = data.get("error")
    if isinstance(error, Mapping):  # Anthropic API style: {"error": {"type", "message"}}
        return str(error.get("type") or ""), str(error.get("message") or "") or None
    description = data.get("error_description") or data.get("message")
    return (str(error) if error else None), (str(description) if description else None)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None
