"""The LiteLLM side: put a fresh OAuth token on every request to an OAuth-marked deployment.

Enable it in the proxy config::

    litellm_settings:
      callbacks: [litellm_claude_oauth.hook.handler]

and mark deployments with ``api_key: claude-oauth`` (or ``claude-oauth:<account>``).
Other deployments are never touched.

Per attempt (``async_pre_call_deployment_hook`` runs again on every router retry):
the access token comes from the shared :class:`TokenManager` (memory, refreshed
ahead of expiry), the request goes through an httpx client whose auth flow
refreshes once and re-sends when Anthropic answers 401 for an expired token, and
the Claude Code identity block is placed first in the system prompt.

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

log = logging.getLogger(__name__)

OAUTH_MARKER = "claude-oauth"
_NOT_FIXED_BY_REFRESH = "not supported"  # "OAuth authentication is currently not supported." is a missing beta


def oauth_account(api_key: object) -> str | None:
    """The account a deployment's ``api_key`` marker names, or None if it is not ours."""
    if not isinstance(api_key, str):
        return None
    if api_key == OAUTH_MARKER:
        return ""
    prefix, sep, account = api_key.partition(":")
    return account if prefix == OAUTH_MARKER and sep and account else None


class RefreshOn401(httpx.Auth):
    """httpx auth flow: on a 401 for an expired/invalid token, refresh once and re-send.

    The refresh is keyed on the token that failed, so a burst of 401s from concurrent
    requests costs one refresh, and a request that raced a refresh just retries with
    the token that is already new.
    """

    def __init__(self, manager: TokenManager, account: str | None):
        self.manager = manager
        self.account = account or None

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        response = yield request
        if response.status_code != 401:
            return
        await response.aread()
        if _NOT_FIXED_BY_REFRESH in response.text:
            return
        failed = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        try:
            tokens = await self.manager.force_refresh(self.account, stale_access=failed or None)
        except ClaudeOAuthError as exc:
            log.warning("Claude OAuth: refresh after 401 failed: %s", exc)
            return
        log.info("Claude OAuth: upstream 401, retrying once with a refreshed token")
        request.headers["authorization"] = f"Bearer {tokens.access}"
        request.headers.pop("x-api-key", None)
        yield request


class ClaudeOAuthHandler(CustomLogger):
    def __init__(self, manager: TokenManager | None = None) -> None:
        super().__init__()
        self._manager = manager
        self._clients: dict[str, AsyncHTTPHandler] = {}

    @property
    def manager(self) -> TokenManager:
        return self._manager or get_manager()

    def _client(self, account: str) -> AsyncHTTPHandler:
        # One pooled client per account, reused: connection reuse is most of the hot path.
        client = self._clients.get(account)
        if client is None:
            client = AsyncHTTPHandler(timeout=httpx.Timeout(600.0, connect=10.0))
            client.client.auth = RefreshOn401(self.manager, account)
            self._clients[account] = client
        return client

    async def async_pre_call_deployment_hook(self, kwargs: dict[str, Any], call_type: Any) -> dict[str, Any] | None:
        account = oauth_account(kwargs.get("api_key"))
        if account is None:
            return None
        manager = self.manager
        manager.listen_for_changes()
        model = str(kwargs.get("model") or "")
        try:
            token = await manager.get_access_token(account or None)
        except (NotLoggedInError, ReloginRequiredError) as exc:
            raise litellm.AuthenticationError(message=str(exc), llm_provider="anthropic", model=model) from None
        except RateLimitedError as exc:
            raise litellm.RateLimitError(message=str(exc), llm_provider="anthropic", model=model) from None
        except (OAuthError, ClaudeOAuthError) as exc:
            raise litellm.ServiceUnavailableError(
                message=f"Claude OAuth credentials unavailable: {exc}", llm_provider="anthropic", model=model
            ) from None
        kwargs["api_key"] = token
        kwargs["client"] = self._client(account)
        if not kwargs.get("api_base"):
            kwargs["api_base"] = manager.settings.api_base
        identity = manager.settings.system_prompt
        if identity:
            _prepend_identity(kwargs, identity, str(getattr(call_type, "value", call_type) or ""))
        return kwargs


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
