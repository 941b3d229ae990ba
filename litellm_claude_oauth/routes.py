"""``/auth/claude/oauth/*``: the login and token management API, admin-only.

Every route requires the LiteLLM master key (or another PROXY_ADMIN key); ``/metrics``
also takes the read-only ``CLAUDE_OAUTH_METRICS_TOKEN``. Responses carry status only:
tokens never leave the process through this API. The plugin's errors answer with their
``http_status`` (errors.py) and one-line message, mapped once in :class:`AdminRoute`.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.routing import BaseRoute

from . import litellm_api
from .errors import ClaudeOAuthError, RetryLater
from .manager import AccountStatus, LoginStart, ManagerStats, TokenManager, get_manager
from .quotas import AccountQuota, Quotas
from .settings import ACCOUNT_ID_PATTERN, validate_account_id

log = logging.getLogger(__name__)

PREFIX = "/auth/claude/oauth"

def _check_account(value: str | None) -> str | None:
    return None if value is None else validate_account_id(value)


class AccountRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account: str | None = None

    @field_validator("account")
    @classmethod
    def _valid_account(cls, value: str | None) -> str | None:
        return _check_account(value)


class ExchangeRequest(AccountRequest):
    code: str = Field(min_length=1, max_length=4096, description="CODE, CODE#STATE or the callback URL")
    state: str | None = Field(default=None, max_length=512)


class AccountView(AccountStatus):
    """An account's status plus its rate-limit windows as last reported by Anthropic (None: none seen yet)."""

    quota: AccountQuota | None = None


class StatusResponse(BaseModel):
    accounts: list[AccountView]


class LogoutResponse(BaseModel):
    account: str
    logged_out: bool


def _error(exc: ClaudeOAuthError) -> HTTPException:
    headers = exc.retry_after_header() if isinstance(exc, RetryLater) else {}
    return HTTPException(status_code=exc.http_status, detail=str(exc), headers=headers or None)


def _account_query(
    account: Annotated[str | None, Query(pattern=ACCOUNT_ID_PATTERN, description="account id")] = None,
) -> str | None:
    return account


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.headers.get("x-litellm-api-key") or request.headers.get("api-key") or None


async def require_admin(request: Request) -> None:
    """Master key, or a PROXY_ADMIN virtual key; anything else is 401/403.

    Checked here rather than with ``Depends(user_api_key_auth)`` alone: LiteLLM's own
    check answers a bad key with 400 (no DB) or 500 (no Prisma), and treats a proxy
    without a master key as open, which is no way to guard account tokens.
    """
    master = litellm_api.proxy_master_key()
    if not master:
        raise HTTPException(status_code=403, detail="Claude OAuth management needs a LiteLLM master key to be set")
    key = _presented_key(request)
    if not key:
        raise HTTPException(
            status_code=401,
            detail="missing admin key: send Authorization: Bearer <LITELLM_MASTER_KEY>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if hmac.compare_digest(key.encode(), master.encode()):
        return
    try:
        auth = await litellm_api.authenticate_key(request, key)
    except Exception:
        raise HTTPException(
            status_code=401, detail="invalid admin key", headers={"WWW-Authenticate": "Bearer"}
        ) from None
    if not litellm_api.is_proxy_admin(auth):
        raise HTTPException(status_code=403, detail="Claude OAuth management requires the proxy admin key")


def current_manager() -> TokenManager:
    return get_manager()


def current_quotas() -> Quotas:
    return get_manager().quotas


def _manager_for(request: Request) -> TokenManager:
    """The manager the routes get (honouring ``app.dependency_overrides``, as tests set them)."""
    provider = request.app.dependency_overrides.get(current_manager, current_manager)
    manager: TokenManager = provider()
    return manager


class AdminRoute(APIRoute):
    """Checks the key before FastAPI reads the body (a stranger gets 401, never a parse error),
    and answers the plugin's errors with their ``http_status`` and one-line message."""

    async def authorize(self, request: Request) -> None:
        await require_admin(request)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            await self.authorize(request)
            try:
                return await handler(request)
            except ClaudeOAuthError as exc:
                raise _error(exc) from None

        return guarded


class MetricsRoute(AdminRoute):
    """The admin key, or the read-only ``CLAUDE_OAUTH_METRICS_TOKEN`` (for a Prometheus scrape job)."""

    async def authorize(self, request: Request) -> None:
        token = _manager_for(request).settings.metrics_token
        key = _presented_key(request)
        if token is not None and key and hmac.compare_digest(key.encode(), token.get_secret_value().encode()):
            return
        await require_admin(request)


class ErrorResponse(BaseModel):
    detail: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "the code or state was refused (unknown, used, expired, mismatched, invalid_grant)",
        401: "missing or wrong admin key",
        403: "a key that is not a proxy admin's, or no master key configured",
        404: "the account is not logged in",
        409: "the account needs a new login",
        429: "Anthropic rate-limited the token endpoint (see Retry-After)",
        502: "Anthropic's token endpoint failed",
        503: "the token store is unreachable, or the plugin is misconfigured",
    }.items()
}

Manager = Annotated[TokenManager, Depends(current_manager)]
QuotaView = Annotated[Quotas, Depends(current_quotas)]
Account = Annotated[str | None, Depends(_account_query)]
router = APIRouter(prefix=PREFIX, tags=["Claude OAuth"], route_class=AdminRoute, responses=_ERRORS)


@router.get("/start", response_model=LoginStart)
async def start(m: Manager, account: Account) -> LoginStart:
    """Begin a login: open ``authorization_url``, then POST the code to ``/exchange``."""
    return await m.start_login(account)


@router.post("/exchange", response_model=AccountStatus)
async def exchange(body: ExchangeRequest, m: Manager) -> AccountStatus:
    record = await m.complete_login(body.code, state=body.state, account=body.account)
    return await m.status(record.account)


@router.get("/status", response_model=StatusResponse)
async def status(m: Manager, q: QuotaView, account: Account) -> StatusResponse:
    """Every account (or one): token validity, refresh-token end and warnings, cooldowns, quota windows."""
    names = [account] if account else (await m.accounts() or [m.settings.default_account])
    await q.sync()  # the other workers' observations too
    views = []
    for name in names:
        quota = q.view(name)
        views.append(AccountView(**(await m.status(name)).model_dump(), quota=quota if quota.windows else None))
    return StatusResponse(accounts=views)


@router.post("/refresh", response_model=AccountStatus)
async def refresh(m: Manager, account: Account, body: AccountRequest | None = None) -> AccountStatus:
    name = (body.account if body else None) or account
    await m.force_refresh(name)
    return await m.status(name)


def _wants_prometheus(fmt: str | None, accept: str) -> bool:
    """``?format=`` decides; else the Accept header: Prometheus asks for text/plain or OpenMetrics,
    the JSON view answers everything else (``*/*``, application/json) as it always has."""
    if fmt is not None:
        return fmt == "prometheus"
    best: dict[str, tuple[float, int]] = {}
    for position, item in enumerate(accept.lower().split(",")):
        kind, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        family = "json" if kind == "application/json" else "text" if kind in (
            "text/plain", "application/openmetrics-text") else None
        if family and q > best.get(family, (0.0, 0))[0]:
            best[family] = (q, -position)
    return best.get("text", (0.0, 0)) > best.get("json", (0.0, 0))


async def metrics(
    request: Request,
    m: Manager,
    q: QuotaView,
    format: Annotated[
        Literal["json", "prometheus"] | None,
        Query(description="`prometheus` (text format) or `json` (this worker's counters); default from Accept"),
    ] = None,
) -> Response:
    """Prometheus text (counters summed over workers with PROMETHEUS_MULTIPROC_DIR, state per account),
    or this worker's JSON counters. Admin key or CLAUDE_OAUTH_METRICS_TOKEN."""
    if _wants_prometheus(format, request.headers.get("accept", "")):
        from .metrics import CONTENT_TYPE, render, snapshot

        return Response(render(await snapshot(m, q)), media_type=CONTENT_TYPE)
    return JSONResponse(asdict(m.stats))


router.add_api_route(
    "/metrics",
    metrics,
    methods=["GET"],
    response_model=ManagerStats,
    route_class_override=MetricsRoute,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                     "description": "JSON counters of this worker, or the Prometheus text exposition"}},
)


@router.post("/logout", response_model=LogoutResponse)
async def logout(m: Manager, account: Account, body: AccountRequest | None = None) -> LogoutResponse:
    name = m.account_id((body.account if body else None) or account)
    return LogoutResponse(account=name, logged_out=await m.logout(name))


def mount(app: FastAPI) -> None:
    """Add the routes once per app: after LiteLLM's, unless one of those would answer our paths."""
    if getattr(app.state, "claude_oauth_mounted", False):
        return
    before = len(app.router.routes)
    app.include_router(router)
    from .ui import router as ui_router

    app.include_router(ui_router)
    ours = app.router.routes[before:]
    del app.router.routes[before:]
    # Starlette tries routes in order on every request: at the front, ours would be tried
    # (and fail) before each chat call. They go just ahead of the first route that would
    # take one of our paths (a catch-all mount), else last.
    at = next((i for i, route in enumerate(app.router.routes) if _takes_our_paths(route)), len(app.router.routes))
    app.router.routes[at:at] = ours
    app.state.claude_oauth_mounted = True
    log.info("Claude OAuth: mounted %s/* (admin only)", PREFIX)


def _takes_our_paths(route: BaseRoute) -> bool:
    # The path pattern only: route.matches() would make FastAPI compile every route it
    # passes (100k+ objects, which each full garbage collection then walks). Entries
    # without one are FastAPI's included routers: LiteLLM's, each under its own prefix.
    regex = getattr(route, "path_regex", None)
    return regex is not None and any(regex.match(path) for path in (f"{PREFIX}/status", f"{PREFIX}/ui/login.js"))


__all__ = ["PREFIX", "mount", "router"]
