"""Anthropic's OAuth endpoints: authorize URL, code exchange, refresh.

Bodies are JSON (not form-encoded) because that is what the token endpoint accepts.
Requests say who they are (``User-Agent: litellm-claude-oauth/<version>``): the
endpoint's edge refuses some library defaults outright.

``CLAUDE_OAUTH_TOKEN_URL`` may list several endpoints. The next one is tried only when
the request provably never reached the previous one (connection refused, connect
timeout) or it answered 404/405. Codes and refresh tokens are single use: after a read
timeout or a dropped connection Anthropic may already have spent it, so sending it
again elsewhere would only earn an ``invalid_grant`` (audit M6).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlparse

from .errors import InvalidGrantError, OAuthError, RateLimitedError
from .settings import Settings
from .tokens import TokenSet

log = logging.getLogger(__name__)

# Raised before a single byte of the request left: safe to try the next URL.
if TYPE_CHECKING:
    import httpx
_BODY_EXCERPT = 200
_SECRET_RE = re.compile(r"sk-ant-[A-Za-z0-9_-]+")
# `code=…&state=…` as some callback pages and tools show it (keys in any order).
_QUERY_RE = re.compile(r"^\??(?:[A-Za-z_]+=[^&#]*&)*code=")


def build_authorize_url(settings: Settings, *, code_challenge: str, state: str, redirect_uri: str | None = None) -> str:
    """The page a person opens to log in. ``redirect_uri`` must be the one stored with the
    pending login (the exchange repeats it); it defaults to ``settings.redirect_uri``."""
    query = {
        "code": "true",  # makes the callback page show CODE#STATE for pasting
        "client_id": settings.client_id,
        "response_type": "code",
        "redirect_uri": redirect_uri or settings.redirect_uri,
        "scope": settings.scopes,
        "code_challenge": code_challenge,
        "code_challenge_method": "S256",
        "state": state,
    }
    return f"{settings.authorize_url}?{urlencode(query)}"


def parse_authorization_input(text: str) -> tuple[str, str | None]:
    """Accept what people paste: ``code#state``, a bare code, ``code=…&state=…``, or the
    whole callback URL. Returns ``(code, state or None)``; raises ValueError otherwise."""
    text = text.strip().strip("'\"").strip()
    if not text:
        raise ValueError("the authorization code is empty")
    if text.startswith(("http://", "https://")):
        url = urlparse(text)
        query, fragment = url.query, url.fragment
        if "code" not in parse_qs(query):
            raise ValueError("that URL has no ?code= parameter; paste the code shown on the page instead")
    elif _QUERY_RE.match(text):
        query, _, fragment = text.removeprefix("?").partition("#")
    else:
        code, sep, state = text.partition("#")
        return _checked_code(code), (state.strip() or None) if sep else None
    params = parse_qs(query)
    state = (params.get("state") or [""])[0] or fragment
    return _checked_code((params.get("code") or [""])[0]), state or None


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
        import httpx  # here, not at import: `litellm claude status` never makes a request

        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.settings.http_timeout_seconds)
        return self._http

    async def aclose(self) -> None:
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    async def exchange_code(
        self, *, code: str, state: str, code_verifier: str, redirect_uri: str | None = None
    ) -> TokenSet:
        """Trade a pasted code for tokens. ``redirect_uri`` must equal the authorize
        request's (pass the pending login's); it defaults to ``settings.redirect_uri``."""
        body = {
            "grant_type": "authorization_code",
            "code": code,
            "state": state,
            "client_id": self.settings.client_id,
            "redirect_uri": redirect_uri or self.settings.redirect_uri,
            "code_verifier": code_verifier,
        }
        now = time.time()
        data = await self._post_token(body, "exchange", secrets=(code, code_verifier))
        return TokenSet.from_token_response(
            data, now=now, default_refresh_lifetime=self.settings.refresh_token_default_seconds
        )

    async def refresh(self, tokens: TokenSet) -> TokenSet:
        if tokens.refresh is None:
            raise InvalidGrantError("this token has no refresh token (setup tokens cannot be refreshed)")
        body: dict[str, Any] = {
            "grant_type": "refresh_token",
            "refresh_token": tokens.refresh,
            "client_id": self.settings.client_id,
        }
        now = time.time()
        try:
            data = await self._post_token(body, "refresh", secrets=(tokens.refresh,))
        except InvalidGrantError as exc:
            if tokens.refresh_expired(now):
                # Say why: the absolute lifetime ran out; refreshing never extends it.
                ended = time.strftime("%Y-%m-%d", time.gmtime(tokens.refresh_expires_at))
                raise InvalidGrantError(
                    f"{exc} (the refresh token's lifetime ended on {ended}; a new browser login is needed)",
                    status_code=exc.status_code,
                    error=exc.error,
                ) from None
            raise
        return TokenSet.from_token_response(
            data, previous=tokens, now=now, default_refresh_lifetime=self.settings.refresh_token_default_seconds
        )

    def _headers(self) -> dict[str, str]:
        return {
            "User-Agent": self.settings.user_agent,
            "Accept": "application/json",
            "Content-Type": "application/json",
        }

    async def _post_token(self, body: Mapping[str, Any], what: str, *, secrets: Iterable[str]) -> Mapping[str, Any]:
        import httpx

        # Errors that prove the request never left: only then may a single-use credential be re-sent.
        not_sent = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
        urls = self.settings.token_urls
        unreachable: list[str] = []
        for i, url in enumerate(urls):
            last = i == len(urls) - 1
            try:
                response = await self._client().post(url, json=dict(body), headers=self._headers())
            except not_sent as exc:
                log.warning("Claude OAuth %s: %s unreachable (%s)", what, url, type(exc).__name__)
                unreachable.append(f"{url}: {type(exc).__name__}")
                continue
            except httpx.TransportError as exc:
                # The request may have been processed: do not send the credential again.
                log.warning("Claude OAuth %s: %s failed after sending (%s)", what, url, type(exc).__name__)
                raise OAuthError(
                    f"the Claude token endpoint {url} did not answer the {what} ({type(exc).__name__}); "
                    "not retried, since it may already have used the single-use credential",
                    reached_server=True,
                ) from None
            if response.status_code in (404, 405) and not last:
                log.info("Claude OAuth %s: %s answered %s, trying the next token URL", what, url, response.status_code)
                continue
            return _token_response(response, what, user_agent=self.settings.user_agent, secrets=tuple(secrets))
        raise OAuthError(f"cannot reach the Claude token endpoint ({'; '.join(unreachable)})", reached_server=False)


def _token_response(
    response: httpx.Response, what: str, *, user_agent: str = "", secrets: tuple[str, ...] = ()
) -> Mapping[str, Any]:
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.is_success and isinstance(data, Mapping) and data.get("access_token"):
        return data
    error, description = _oauth_error_fields(data)
    if response.status_code == 429:
        # Can be a real rate limit or the edge refusing an unrecognised client.
        excerpt = description or _excerpt(response, secrets)
        raise RateLimitedError(
            f"Claude token endpoint answered 429 to the {what}"
            + (f": {excerpt}" if excerpt else "")
            + f"; retry later (User-Agent sent: {user_agent})",
            retry_after=_retry_after(response.headers.get("retry-after")),
        )
    if error == "invalid_grant" or (response.status_code in (400, 401) and "invalid_grant" in (description or "")):
        raise InvalidGrantError(
            f"Claude rejected the {what}: {_clean(description or 'invalid_grant', secrets)}",
            status_code=response.status_code,
            error="invalid_grant",
        )
    if response.is_success:
        raise OAuthError(
            f"Claude token endpoint returned an unexpected {what} response", status_code=response.status_code
        )
    if response.status_code == 403:
        detail = description or _excerpt(response, secrets) or response.reason_phrase
        raise OAuthError(
            f"Claude token endpoint refused the {what} (HTTP 403): {_clean(detail, secrets)}; its edge may be "
            f"refusing this client (User-Agent sent: {user_agent}, see CLAUDE_OAUTH_USER_AGENT)",
            status_code=403,
            error=error,
        )
    detail = description or error or response.reason_phrase
    raise OAuthError(
        f"Claude token endpoint refused the {what} (HTTP {response.status_code}): {_clean(detail, secrets)}",
        status_code=response.status_code,
        error=error,
    )


def _excerpt(response: httpx.Response, secrets: tuple[str, ...]) -> str:
    """The start of a non-JSON error body, one line, without anything token-like."""
    try:
        text = response.text
    except (UnicodeDecodeError, LookupError, RuntimeError):  # httpx.ResponseNotRead is a RuntimeError
        return ""
    text = _clean(text, secrets)
    return text if len(text) <= _BODY_EXCERPT else text[: _BODY_EXCERPT - 1] + "…"


def _clean(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return " ".join(_SECRET_RE.sub("[redacted]", text).split())


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
