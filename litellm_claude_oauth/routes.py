"""``/auth/claude/oauth/*``: the login and token management API, admin-only.

Every route requires the LiteLLM master key (or another PROXY_ADMIN key). Responses
carry status only: tokens never leave the process through this API.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, field_validator

from litellm.proxy._types import LitellmUserRoles, UserAPIKeyAuth
from litellm.proxy.auth.user_api_key_auth import user_api_key_auth

from .errors import (
    ClaudeOAuthError,
    InvalidGrantError,
    LoginStateError,
    NotLoggedInError,
    OAuthError,
    RateLimitedError,
    ReloginRequiredError,
    TokenStoreError,
)
from .manager import AccountStatus, LoginStart, ManagerStats, TokenManager, get_manager
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


class StatusResponse(BaseModel):
    accounts: list[AccountStatus]


class LogoutResponse(BaseModel):
    account: str
    logged_out: bool


def _error(exc: ClaudeOAuthError) -> HTTPException:
    status = 500
    headers: dict[str, str] | None = None
    if isinstance(exc, (LoginStateError, InvalidGrantError)):
        status = 400
    elif isinstance(exc, NotLoggedInError):
        status = 404
    elif isinstance(exc, ReloginRequiredError):
        status = 409
    elif isinstance(exc, RateLimitedError):
        status = 429
        if exc.retry_after is not None:
            headers = {"Retry-After": str(int(exc.retry_after))}
    elif isinstance(exc, OAuthError):
        status = 502
    elif isinstance(exc, TokenStoreError):
        status = 503
    return HTTPException(status_code=status, detail=str(exc), headers=headers)


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
    from litellm.proxy import proxy_server

    master = proxy_server.master_key
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
        auth: UserAPIKeyAuth = await user_api_key_auth(
            request=request,
            api_key=f"Bearer {key}",
            azure_api_key_header="",
            anthropic_api_key_header=None,
            google_ai_studio_api_key_header=None,
            azure_apim_header=None,
            custom_litellm_key_header=None,
        )
    except Exception:
        raise HTTPException(
            status_code=401, detail="invalid admin key", headers={"WWW-Authenticate": "Bearer"}
        ) from None
    if auth.user_role != LitellmUserRoles.PROXY_ADMIN:
        raise HTTPException(status_code=403, detail="Claude OAuth management requires the proxy admin key")


def current_manager() -> TokenManager:
    return get_manager()


class AdminRoute(APIRoute):
    """Checks the admin key before FastAPI reads the body: a stranger gets 401, never a parse error."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            await require_admin(request)
            return await handler(request)

        return guarded


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
        503: "the token store is unreachable",
    }.items()
}

Manager = Annotated[TokenManager, Depends(current_manager)]
Account = Annotated[str | None, Depends(_account_query)]
router = APIRouter(prefix=PREFIX, tags=["Claude OAuth"], route_class=AdminRoute, responses=_ERRORS)


@router.get("/start", response_model=LoginStart)
async def start(m: Manager, account: Account) -> LoginStart:
    """Begin a login: open ``authorization_url``, then POST the code to ``/exchange``."""
    try:
        return await m.start_login(account)
    except ClaudeOAuthError as exc:
        raise _error(exc) from None


@router.post("/exchange", response_model=AccountStatus)
async def exchange(body: ExchangeRequest, m: Manager) -> AccountStatus:
    try:
        record = await m.complete_login(body.code, state=body.state, account=body.account)
        return await m.status(record.account)
    except ClaudeOAuthError as exc:
        raise _error(exc) from None


@router.get("/status", response_model=StatusResponse)
async def status(m: Manager, account: Account) -> StatusResponse:
    try:
        names = [account] if account else (await m.accounts() or [m.settings.default_account])
    except ClaudeOAuthError as exc:
        raise _error(exc) from None
    return StatusResponse(accounts=[await m.status(name) for name in names])


@router.post("/refresh", response_model=AccountStatus)
async def refresh(m: Manager, account: Account, body: AccountRequest | None = None) -> AccountStatus:
    name = (body.account if body else None) or account
    try:
        await m.force_refresh(name)
        return await m.status(name)
    except ClaudeOAuthError as exc:
        raise _error(exc) from None


@router.get("/metrics", response_model=ManagerStats)
async def metrics(m: Manager) -> ManagerStats:
    """This worker's counters (each proxy worker has its own)."""
    return m.stats


@router.post("/logout", response_model=LogoutResponse)
async def logout(m: Manager, account: Account, body: AccountRequest | None = None) -> LogoutResponse:
    name = m.account_id((body.account if body else None) or account)
    try:
        return LogoutResponse(account=name, logged_out=await m.logout(name))
    except ClaudeOAuthError as exc:
        raise _error(exc) from None


def mount(app: FastAPI) -> None:
    """Add the routes ahead of LiteLLM's own, once per app."""
    if getattr(app.state, "claude_oauth_mounted", False):
        return
    before = len(app.router.routes)
    app.include_router(router)
    from .ui import router as ui_router

    app.include_router(ui_router)
    # LiteLLM registers catch-all routes (pass-through, UI); ours must match first.
    ours = app.router.routes[before:]
    del app.router.routes[before:]
    app.router.routes[0:0] = ours
    app.state.claude_oauth_mounted = True
    log.info("Claude OAuth: mounted %s/* (admin only)", PREFIX)


__all__ = ["PREFIX", "mount", "router"]
