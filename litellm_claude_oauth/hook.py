"""The LiteLLM side: credentials and the identity block for requests to OAuth-marked deployments.

Enable it in the proxy config::

    litellm_settings:
      callbacks: [litellm_claude_oauth.hook.handler]

and mark deployments with ``api_key: claude-oauth`` (or ``claude-oauth:<account>``,
or ``claude-oauth:pool``; see :mod:`litellm_claude_oauth.routing`). Other deployments
are never touched, and a bad plugin setting never fails them (audit M4).

Per attempt (``async_pre_call_deployment_hook`` runs again on every router retry) the
hook decides whose credential the request uses:

* the client's own Anthropic credential (``Authorization: Bearer sk-ant-oat…`` or
  ``x-api-key: sk-ant-…``, with the LiteLLM key in ``x-litellm-api-key``): forwarded
  unchanged, body untouched — Anthropic's documented way to use a subscription through a
  gateway (``CLAUDE_OAUTH_PASSTHROUGH``: ``auto``, ``off``, ``required``);
* otherwise a stored account: the pinned one, the mapped one, or the pool's pick; the
  Claude Code identity line goes first in the system prompt, as the API requires for
  subscription tokens — the only thing we add.

The credential itself is set by :class:`~.auth_flow.ClaudeOAuthFlow` on the wire
request; LiteLLM's ``api_key`` only ever holds a placeholder.

Importing this module also mounts ``/auth/claude/oauth/*`` on the proxy's app.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import httpx

from . import litellm_api
from .auth_flow import PLACEHOLDER, Attempt, ClaudeOAuthFlow, RefusalMemo, base_origin, current_attempt
from .errors import ClaudeOAuthError, ConfigError, NotLoggedInError, ReloginRequiredError, RetryLater
from .identity import add_identity
from .manager import TokenManager, get_manager
from .ratelimit import model_family
from .routing import AllAccountsCoolingDown, Pool, Route, caller_identity, is_marker, route_for
from .tokens import TokenSet
from .upstream_headers import install as install_header_forwarding
from .upstream_headers import remember as remember_headers

log = logging.getLogger(__name__)

_CLIENT_CREDENTIAL_PREFIX = "sk-ant-"
# How often the hook makes sure its background work (change feed, alert monitor) still runs.
_UPKEEP_SECONDS = 10.0


def request_headers(raw_headers: Mapping[str, Any] | None) -> dict[str, str]:
    """The client's request headers, names lower-cased once for every lookup of the request."""
    return {str(k).lower(): str(v) for k, v in (raw_headers or {}).items()}


def client_credential(headers: Mapping[str, str]) -> tuple[str, str] | None:
    """The caller's own Anthropic credential, if it sent one beside its LiteLLM key.

    ``headers``: from :func:`request_headers`. ``Authorization: Bearer sk-ant-…`` counts
    only when the LiteLLM key came in ``x-litellm-api-key`` (otherwise Authorization *is*
    the LiteLLM key).
    """
    api_key = headers.get("x-api-key", "").strip()
    if api_key.startswith(_CLIENT_CREDENTIAL_PREFIX):
        return "x-api-key", api_key
    bearer = headers.get("authorization", "").strip()
    if bearer.lower().startswith("bearer ") and "x-litellm-api-key" in headers:
        token = bearer[7:].strip()
        if token.startswith(_CLIENT_CREDENTIAL_PREFIX):
            return "authorization", f"Bearer {token}"
    return None


class OwnLoginRequired(ClaudeOAuthError):
    http_status = 401

    def __init__(self) -> None:
        super().__init__(
            "this proxy forwards your own Claude login only (CLAUDE_OAUTH_PASSTHROUGH=required): send it as "
            "Authorization: Bearer <your sk-ant-oat token> with your LiteLLM key in x-litellm-api-key"
        )


class ClaudeOAuthHandler(litellm_api.CustomLogger):
    def __init__(self, manager: TokenManager | None = None) -> None:
        super().__init__()
        self._manager = manager
        self._pool: Pool | None = None
        self._clients: dict[Route, litellm_api.AuthedAsyncHTTPHandler] = {}
        # Without an account map a marker always means the same route: parsed once.
        self._routes: dict[str, tuple[Route, litellm_api.AuthedAsyncHTTPHandler]] = {}
        self._refused = RefusalMemo()
        self._checked_store = False  # once: is the token store encrypted?
        self._upkept: tuple[asyncio.AbstractEventLoop | None, float] = (None, 0.0)

    @property
    def manager(self) -> TokenManager:
        return self._manager or get_manager()

    @property
    def pool(self) -> Pool:
        if self._pool is None:
            self._pool = Pool(self.manager)
        return self._pool

    def _account_changed(self, _account: str) -> None:
        self.pool.forget_members()

    def _route(self, api_key: str, kwargs: Mapping[str, Any], account_map: Mapping[str, str]) -> tuple[
        Route, litellm_api.AuthedAsyncHTTPHandler
    ]:
        if not account_map:
            found = self._routes.get(api_key)
            if found is None:
                route = route_for(api_key, None, account_map)
                assert route is not None  # api_key is a marker
                found = self._routes[api_key] = (route, self._client(route))
            return found
        # Who the caller is matters only to an account map.
        identity = caller_identity(kwargs.get("litellm_metadata") or kwargs.get("metadata") or {})
        route = route_for(api_key, identity, account_map)
        assert route is not None
        return route, self._client(route)

    def _upkeep(self, manager: TokenManager) -> None:
        """Make sure this loop follows other processes' changes and runs the alert monitor.

        Once per event loop, then every few seconds (a task that died is started again);
        not on every request: each check costs more than the rest of a cached-token hook.
        """
        loop, due = self._upkept
        now = time.monotonic()
        if loop is asyncio.get_running_loop() and now < due:
            return
        self._upkept = (asyncio.get_running_loop(), now + _UPKEEP_SECONDS)
        manager.listen_for_changes(on_change=self._account_changed)
        manager.alerts.start_monitor(manager, manager.quotas)  # checks every few minutes
        if not self._checked_store:
            self._checked_store = True
            if not manager.store.encrypted:
                log.warning("Claude OAuth: tokens are stored unencrypted in %s; set CLAUDE_TOKEN_ENCRYPTION_KEY "
                            "(openssl rand -hex 32)", manager.store.location)

    def _client(self, route: Route) -> litellm_api.AuthedAsyncHTTPHandler:
        # One pooled client per route, reused: connection reuse is most of the hot path.
        client = self._clients.get(route)
        if client is None:
            flow = ClaudeOAuthFlow(
                self.manager, route.account, self.pool if route.pool else None, self.trusts, self._refused
            )
            client = litellm_api.AuthedAsyncHTTPHandler(flow, timeout=httpx.Timeout(600.0, connect=10.0))
            self._clients[route] = client
        return client

    # -- the proxy's own config ------------------------------------------------------

    def trusts(self, target: str) -> bool:
        """May a Claude token go to the origin ``target``: CLAUDE_API_BASE's, or an api_base of our deployments."""
        if target == base_origin(self.manager.settings.api_base):
            return True
        # The config is read on every request that goes elsewhere, not cached: the admin API
        # edits deployments in place (an update keeps the list, its identity and its length).
        for deployment in getattr(litellm_api.proxy_router(), "model_list", None) or ():
            params = _get(deployment, "litellm_params") or {}
            base = _get(params, "api_base")
            if base and is_marker(_get(params, "api_key")) and base_origin(str(base)) == target:
                return True
        return False

    @staticmethod
    def _configured(kwargs: dict[str, Any]) -> Mapping[str, Any] | None:
        """The deployment's litellm_params as the proxy config has them (not as the request may override)."""
        router = litellm_api.proxy_router()
        model_info = kwargs.get("model_info") or {}
        # A request with client-side credentials runs on a per-request copy of the
        # deployment, made from the client's values; the config's is the original.
        model_id = model_info.get("original_model_id") or model_info.get("id")
        if router is None or not model_id:
            return None
        deployment = router.get_model_info(id=str(model_id))
        if deployment is None:
            return None
        params = _get(deployment, "litellm_params") or {}
        if is_marker(_get(params, "api_key")):
            # Auth and quota errors are ours to handle (refresh, rest an account, pass a client's
            # 401 back): they must not put the whole deployment in LiteLLM's cooldown.
            litellm_api.exempt_from_router_cooldown(kwargs, deployment)
        return params

    # -- the hook --------------------------------------------------------------------

    async def async_pre_call_deployment_hook(self, kwargs: dict[str, Any], call_type: Any) -> dict[str, Any] | None:
        configured = self._configured(kwargs)
        api_key = kwargs.get("api_key")
        if configured is not None:
            if not is_marker(configured.get("api_key")):
                if is_marker(api_key):
                    # Client-side credentials are allowed on this deployment and the client
                    # named one of our accounts: it must not pick whose token it gets (audit H3).
                    raise litellm_api.authentication_error(
                        "claude-oauth markers are accepted only from the proxy's config, not from clients",
                        str(kwargs.get("model") or ""),
                    )
                return None
            api_key = configured.get("api_key")
        elif not is_marker(api_key):
            return None
        model = str(kwargs.get("model") or "")
        try:
            call = str(getattr(call_type, "value", call_type))
            return await self._prepare(kwargs, str(api_key), configured, model, call)  # a marker: a str
        except (NotLoggedInError, ReloginRequiredError, OwnLoginRequired) as exc:
            raise litellm_api.authentication_error(str(exc), model) from None
        except RetryLater as exc:
            raise litellm_api.rate_limit_error(str(exc), model, int(exc.retry_after or 60)) from None
        except ClaudeOAuthError as exc:
            misconfigured = isinstance(exc, ConfigError)
            prefix = "Claude OAuth is misconfigured" if misconfigured else "Claude OAuth credentials unavailable"
            raise litellm_api.service_unavailable_error(f"{prefix}: {exc}", model) from None

    def redact_standard_logging_payload_from_model_call_details(self, model_call_details: dict[str, Any]) -> dict[
        str, Any
    ]:
        # LiteLLM calls this on every success, before our (no-op) success logging: the base
        # imports three modules to prepare a redacted copy that nothing here reads.
        return model_call_details

    async def async_post_call_failure_hook(
        self,
        request_data: dict[str, Any],
        original_exception: Exception,
        user_api_key_dict: Any,
        traceback_str: str | None = None,
    ) -> None:
        """Keep the rate-limit headers of a failed call for the client (see upstream_headers).

        One place for every failure: an upstream 429 (stored account or the client's own
        credential) and the 429 this hook raises while an account rests both carry them.
        """
        headers = getattr(original_exception, "litellm_response_headers", None)
        if headers is None:
            headers = getattr(getattr(original_exception, "response", None), "headers", None)
        if headers is not None:
            remember_headers(headers)

    async def _prepare(
        self, kwargs: dict[str, Any], api_key: str, configured: Mapping[str, Any] | None, model: str, call_type: str
    ) -> dict[str, Any]:
        manager = self.manager
        settings = manager.settings
        route, client = self._route(api_key, kwargs, settings.account_map)
        self._upkeep(manager)

        # Always the configured upstream, never one from the request body (audit H3).
        kwargs["api_base"] = (configured or {}).get("api_base") or settings.api_base
        kwargs["client"] = client
        kwargs["api_key"] = PLACEHOLDER
        family = model_family(model)

        call_id = kwargs.get("litellm_call_id")
        if (refused := self._refused.get(call_id)) is not None:
            raise litellm_api.refusal_error(*refused, model)  # LiteLLM retrying a refusal: not upstream again
        headers = request_headers((kwargs.get("secret_fields") or {}).get("raw_headers"))
        credential = client_credential(headers)
        if credential is not None and settings.passthrough != "off":
            current_attempt.set(Attempt(account=None, family=family, client_credential=credential, call_id=call_id))
            return kwargs  # the client brings its own system blocks: nothing is added
        _drop_forwarded_credentials(kwargs)
        if settings.passthrough == "required":
            raise OwnLoginRequired()
        session = session_key(headers, kwargs.get("metadata"))
        account, tokens = await self._choose(manager, route, family, session)
        current_attempt.set(Attempt(account=account, family=family, session=session, call_id=call_id, tokens=tokens))
        if settings.system_prompt:
            add_identity(kwargs, settings.system_prompt, call_type)
        return kwargs

    async def _choose(
        self, manager: TokenManager, route: Route, family: str | None, session: str | None
    ) -> tuple[str, TokenSet]:
        """The account and its fresh tokens; fails here, with the hint, when it is not logged in or resting."""
        if route.pool:
            return await self.pool.next_tokens(family=family, session=session)
        account = manager.account_id(route.account)
        tokens = manager.cached_tokens(account) or await manager.get_tokens(account)
        if (cooldown := manager.health.cooldown(account, family)) is not None:
            raise AllAccountsCoolingDown(cooldown, pool=False)
        return account, tokens


def session_key(headers: Mapping[str, str], metadata: object) -> str | None:
    """What identifies a conversation: Claude Code's session header, else Anthropic's metadata.user_id.

    ``headers``: from :func:`request_headers`. Only used to keep a conversation's prompt
    cache warm on one account, never to choose whose account a caller may use (that is
    the account map's job).
    """
    if session := headers.get("x-claude-code-session-id"):
        return f"s:{session}"
    user_id = metadata.get("user_id") if isinstance(metadata, Mapping) else None
    return f"u:{user_id}" if isinstance(user_id, str) and user_id else None


def _drop_forwarded_credentials(kwargs: dict[str, Any]) -> None:
    """With passthrough off, a client's credential must not ride along into the upstream request."""
    extra = (kwargs.get("provider_specific_header") or {}).get("extra_headers")
    if isinstance(extra, dict):
        for name in [k for k in extra if k.lower() in ("authorization", "x-api-key")]:
            del extra[name]


def _get(obj: Any, name: str) -> Any:
    if isinstance(obj, dict):  # what LiteLLM's router holds; the ABC check costs more on every request
        return obj.get(name)
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


handler = ClaudeOAuthHandler()


def _mount_routes() -> None:
    try:
        app = litellm_api.proxy_app()
    except Exception as exc:  # pragma: no cover - proxy extras missing: the hook still works
        log.warning("Claude OAuth: proxy app not available, /auth/claude/oauth/* not mounted (%s)", exc)
        return
    from .routes import mount

    mount(app)
    install_header_forwarding(app)


_mount_routes()
