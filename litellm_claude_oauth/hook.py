"""The LiteLLM side: put a fresh OAuth token on every request to an OAuth-marked deployment.

Enable it in the proxy config::

    litellm_settings:
      callbacks: [litellm_claude_oauth.hook.handler]

and mark deployments with ``api_key: claude-oauth`` (or ``claude-oauth:<account>``,
or ``claude-oauth:pool``; see :mod:`litellm_claude_oauth.routing`). Other deployments
are never touched.

Per attempt (``async_pre_call_deployment_hook`` runs again on every router retry):
the access token comes from the shared :class:`TokenManager` (memory, refreshed
ahead of expiry); the request goes through an httpx client whose auth flow, when
Anthropic answers 401, refreshes once and re-sends, and when it answers 429, rests
that account and re-sends with the pool's next one; the Claude Code identity block
is placed first in the system prompt.

Importing this module also mounts ``/auth/claude/oauth/*`` on the proxy's app.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from typing import Any

import httpx
import litellm
from litellm.integrations.custom_logger import CustomLogger
from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

from .errors import ClaudeOAuthError, NotLoggedInError, OAuthError, RateLimitedError, ReloginRequiredError
from .manager import TokenManager, get_manager
from .ratelimit import cooldown_from_headers
from .routing import AllAccountsCoolingDown, Pool, Route, route_for

log = logging.getLogger(__name__)

_NOT_FIXED_BY_REFRESH = "not supported"  # "OAuth authentication is currently not supported." is a missing beta


def _bearer(request: httpx.Request) -> str:
    return request.headers.get("authorization", "").removeprefix("Bearer ").strip()


def _use(request: httpx.Request, access_token: str) -> None:
    request.headers["authorization"] = f"Bearer {access_token}"
    request.headers.pop("x-api-key", None)


class ClaudeOAuthFlow(httpx.Auth):
    """httpx auth flow: 401 → refresh once and re-send; 429 → rest the account, re-send on the next.

    A refresh is keyed on the token that failed, so a burst of 401s from concurrent
    requests costs one refresh. A 429 puts the account on cooldown until Anthropic's
    reset time; with a pool, the same request is re-sent with the next usable account
    (each account at most once), so the client never sees the 429 while any account
    has capacity.
    """

    def __init__(self, manager: TokenManager, account: str | None, pool: Pool | None):
        self.manager = manager
        self.account = account
        self.pool = pool

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        refreshed: set[str | None] = set()
        rested: set[str] = set()
        while True:
            response = yield request
            if response.status_code not in (401, 429):
                return
            token = _bearer(request)
            account = self.manager.account_of(token) if self.pool is not None else self.account
            if self.pool is not None and account is None:
                return  # cannot tell whose token failed; let the client see the answer
            await response.aread()
            if response.status_code == 401:
                if account in refreshed or _NOT_FIXED_BY_REFRESH in response.text:
                    return
                try:
                    tokens = await self.manager.force_refresh(account, stale_access=token or None)
                except ClaudeOAuthError as exc:
                    log.warning("Claude OAuth: refresh after 401 failed: %s", exc)
                    return
                log.info("Claude OAuth: upstream 401, retrying once with a refreshed token")
                refreshed.add(account)
                _use(request, tokens.access)
                continue
            name = self.manager.account_id(account)
            cooldown = cooldown_from_headers(response.headers)
            await self.manager.cool_down(name, cooldown)
            rested.add(name)
            if self.pool is None:
                return
            try:
                next_account, tokens = await self.pool.next_tokens(frozenset(rested))
            except AllAccountsCoolingDown as exc:
                response.headers["retry-after"] = str(exc.retry_after)
                return
            except ClaudeOAuthError:
                return
            log.info("Claude OAuth: '%s' is rate-limited, retrying on '%s'", name, next_account)
            _use(request, tokens.access)


class ClaudeOAuthHandler(CustomLogger):
    def __init__(self, manager: TokenManager | None = None) -> None:
        super().__init__()
        self._manager = manager
        self._pool: Pool | None = None
        self._clients: dict[Route, AsyncHTTPHandler] = {}

    @property
    def manager(self) -> TokenManager:
        return self._manager or get_manager()

    @property
    def pool(self) -> Pool:
        if self._pool is None:
            self._pool = Pool(self.manager)
        return self._pool

    def _client(self, route: Route) -> AsyncHTTPHandler:
        # One pooled client per route, reused: connection reuse is most of the hot path.
        client = self._clients.get(route)
        if client is None:
            client = AsyncHTTPHandler(timeout=httpx.Timeout(600.0, connect=10.0))
            client.client.auth = ClaudeOAuthFlow(self.manager, route.account, self.pool if route.pool else None)
            self._clients[route] = client
        return client

    async def async_pre_call_deployment_hook(self, kwargs: dict[str, Any], call_type: Any) -> dict[str, Any] | None:
        manager = self.manager
        metadata = kwargs.get("metadata") or kwargs.get("litellm_metadata")
        route = route_for(kwargs.get("api_key"), metadata, manager.settings.account_map)
        if route is None:
            return None
        manager.listen_for_changes(on_change=lambda _account: self.pool.forget_members())
        model = str(kwargs.get("model") or "")
        try:
            token = await self._token_for(route)
        except (NotLoggedInError, ReloginRequiredError) as exc:
            raise litellm.AuthenticationError(message=str(exc), llm_provider="anthropic", model=model) from None
        except (AllAccountsCoolingDown, RateLimitedError) as exc:
            retry_after = str(int(getattr(exc, "retry_after", None) or 60))
            # `headers=` (not the response's) is what the proxy hands to the client as is.
            raise litellm.RateLimitError(
                message=str(exc), llm_provider="anthropic", model=model, headers={"retry-after": retry_after}
            ) from None
        except (OAuthError, ClaudeOAuthError) as exc:
            raise litellm.ServiceUnavailableError(
                message=f"Claude OAuth credentials unavailable: {exc}", llm_provider="anthropic", model=model
            ) from None
        kwargs["api_key"] = token
        kwargs["client"] = self._client(route)
        if not kwargs.get("api_base"):
            kwargs["api_base"] = manager.settings.api_base
        identity = manager.settings.system_prompt
        if identity:
            _prepend_identity(kwargs, identity, str(getattr(call_type, "value", call_type) or ""))
        return kwargs

    async def _token_for(self, route: Route) -> str:
        if route.pool:
            _account, tokens = await self.pool.next_tokens()
            return tokens.access
        tokens = await self.manager.get_tokens(route.account)
        if (cooldown := self.manager.cooldown(self.manager.account_id(route.account))) is not None:
            raise AllAccountsCoolingDown(cooldown)
        return tokens.access


def _prepend_identity(kwargs: dict[str, Any], identity: str, call_type: str) -> None:
    """Claude Code's identity must be the first system block; add it once, keep the caller's after it."""
    if "messages" in kwargs and call_type != "anthropic_messages":
        messages = list(kwargs.get("messages") or [])
        if messages and messages[0].get("role") == "system" and _text_of(messages[0].get("content")).startswith(identity):
            return
        kwargs["messages"] = [{"role": "system", "content": identity}, *messages]
        return
    system = kwargs.get("system")
    if isinstance(system, str):
        if not system.startswith(identity):
            kwargs["system"] = [{"type": "text", "text": identity}, {"type": "text", "text": system}]
    elif isinstance(system, list):
        if not (system and _text_of(system[0]).startswith(identity)):
            kwargs["system"] = [{"type": "text", "text": identity}, *system]
    else:
        kwargs["system"] = [{"type": "text", "text": identity}]


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or "")
    if isinstance(content, list) and content:
        return _text_of(content[0])
    return ""


handler = ClaudeOAuthHandler()


def _mount_routes() -> None:
    try:
        from litellm.proxy.proxy_server import app
    except Exception as exc:  # pragma: no cover - proxy extras missing: the hook still works
        log.warning("Claude OAuth: proxy app not available, /auth/claude/oauth/* not mounted (%s)", exc)
        return
    from .routes import mount

    mount(app)


_mount_routes()
