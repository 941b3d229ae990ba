"""Every piece of LiteLLM the plugin uses, in one module.

A change in LiteLLM should be a change here and nowhere else: the other modules import
LiteLLM names from this one, never from ``litellm`` itself.

Checked against (``tests/test_litellm_api.py`` and the e2e suite, run by
``.ci/litellm_matrix.sh`` for the oldest and by ``scripts/test`` for the newest):

========== ===================================================================
1.101.0    oldest supported: the matrix suite (adapter, uninstall, proxy, pools,
           outages, real clients) gives the same results as on 1.106.12.
1.106.12   newest installable here (``.venv``).
========== ===================================================================

Below the floor, and why (each found in the released source, then run):

* 1.100.x and older rewrite a ``/v1/messages`` request's legacy ``thinking``
  (``{"type": "enabled", "budget_tokens": …}``, what Claude Code sends) into
  ``{"type": "adaptive"}`` for 4.6/4.7 models, so requests do not reach Anthropic as
  the client sent them (e2e: "thinking changed on the way", on 1.94.0).
* 1.97.x and older answer ``GET /v1/models`` in OpenAI shape only, also to Anthropic
  clients; and their router reads a deployment's ``cooldown_time`` only from the
  call's kwargs (:func:`exempt_from_router_cooldown` sets it on the deployment instead).
* 1.93.x and older resolve a config's ``callbacks: [litellm_claude_oauth.hook.handler]``
  only as a file beside the config: with a config elsewhere the proxy exits at
  startup ("Could not import handler").
* 1.81.11 and older send an ``sk-ant-oat`` api_key as ``x-api-key`` without the
  ``oauth-2025-04-20`` beta: every request is refused ("OAuth authentication is
  currently not supported"). The in-process tests here pass from 1.81.12.

Not tested here, followed from the released source only:

* 1.108+ (there is no 1.107): ``litellm[proxy]`` now pulls a separate
  ``litellm-proxy`` distribution that this machine's package index does not have.
  The proxy's code still ships inside the ``litellm`` wheel at the same import paths
  (``litellm.proxy.proxy_server``, ``litellm.proxy.proxy_cli``,
  ``litellm.proxy.auth.user_api_key_auth``, ``litellm.proxy._types``); what moved is
  the console script (``litellm = litellm_cli.main:proxy_server``, which calls the
  same ``run_server``) and the proxy's dependencies. So the imports below stay, and
  :func:`run_proxy_cli` needs no second path.
* 1.82.7 and 1.82.8 stay excluded in ``pyproject.toml`` though below the floor: a
  supply-chain compromise (March 2026) that ran a credential stealer from a ``.pth``
  file on every Python start.

Version differences handled here:

* ``RateLimitError(headers=...)`` appeared between 1.90.0 and 1.94.0; before it the
  proxy read ``retry-after`` from the error's ``response``. :func:`rate_limit_error`
  sets both, so it holds below the floor too.
* ``AsyncHTTPHandler.client`` became a property that re-creates a closed client (and
  so would drop an ``auth`` set on it); :class:`AuthedAsyncHTTPHandler` sets the auth
  on every client it creates.
* ``user_api_key_auth`` is a FastAPI dependency whose header parameters default to
  ``fastapi.Security`` markers (and have grown over releases); :func:`authenticate_key`
  passes each one the installed release takes, empty.

Importing this module imports the LiteLLM SDK (seconds) but not the proxy: proxy names
(``LitellmUserRoles``, ``UserAPIKeyAuth``, ``user_api_key_auth``) load on first use,
and the proxy's app, router and master key are read through functions because the
proxy sets them after its config loads. ``litellm claude …`` must not import this
module at all (it never needs LiteLLM): import it inside the function that does.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, Final

import httpx
from litellm.exceptions import AuthenticationError, RateLimitError, ServiceUnavailableError
from litellm.integrations.custom_logger import CustomLogger
from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from litellm.proxy._types import LitellmUserRoles, UserAPIKeyAuth
    from litellm.proxy.auth.user_api_key_auth import user_api_key_auth

# Keep in step with the litellm requirement in pyproject.toml (a test checks it).
SUPPORTED: Final = ">=1.101.0,!=1.82.7,!=1.82.8,<1.107"
OLDEST_TESTED: Final = "1.101.0"
NEWEST_TESTED: Final = "1.106.12"
KNOWN_BAD: Final = frozenset({"1.82.7", "1.82.8"})

PROVIDER: Final = "anthropic"

# Proxy names that load on first use: the SDK works without the proxy extras.
_PROXY_NAMES: Final[Mapping[str, tuple[str, str]]] = {
    "LitellmUserRoles": ("litellm.proxy._types", "LitellmUserRoles"),
    "UserAPIKeyAuth": ("litellm.proxy._types", "UserAPIKeyAuth"),
    "user_api_key_auth": ("litellm.proxy.auth.user_api_key_auth", "user_api_key_auth"),
}


def __getattr__(name: str) -> Any:
    target = _PROXY_NAMES.get(name)
    if target is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(target[0]), target[1])
    globals()[name] = value
    return value


def litellm_version() -> str:
    """The installed LiteLLM release, as its distribution metadata says."""
    try:
        return version("litellm")
    except PackageNotFoundError:  # pragma: no cover - imported above, so it is installed
        return "unknown"


# -- the deployment hook and its per-call client -------------------------------------


class AuthedAsyncHTTPHandler(AsyncHTTPHandler):
    """LiteLLM's async HTTP handler with an ``httpx.Auth`` on its client, kept across re-creation.

    Handed to LiteLLM as the per-call ``client`` from ``async_pre_call_deployment_hook``:
    the Anthropic chat and ``/v1/messages`` handlers send through it, so the auth flow
    sees the final request. Newer LiteLLM re-creates a closed client inside its
    ``client`` property, so the auth is set in ``create_client``, not once from outside.
    """

    def __init__(self, auth: httpx.Auth, timeout: httpx.Timeout | float | None = None) -> None:
        self._claude_oauth_auth = auth  # before super().__init__, which creates the client
        super().__init__(timeout=timeout)

    def create_client(self, *args: Any, **kwargs: Any) -> httpx.AsyncClient:
        client = super().create_client(*args, **kwargs)
        client.auth = self._claude_oauth_auth
        return client


def authentication_error(message: str, model: str) -> AuthenticationError:
    return AuthenticationError(message=message, llm_provider=PROVIDER, model=model)


def service_unavailable_error(message: str, model: str) -> ServiceUnavailableError:
    return ServiceUnavailableError(message=message, llm_provider=PROVIDER, model=model)


def rate_limit_error(message: str, model: str, retry_after: int) -> RateLimitError:
    """A 429 whose ``Retry-After`` reaches the proxy's client, on every supported release.

    Newer LiteLLM copies only ``headers=`` to the client (a vendor response's headers are
    deliberately not forwarded); older releases have no ``headers=`` and forward the
    error's ``response`` headers instead. Both are set where accepted.
    """
    headers = {"retry-after": str(int(retry_after))}
    response = httpx.Response(429, headers=headers, request=httpx.Request("POST", "https://api.anthropic.com/v1/messages"))
    kwargs: dict[str, Any] = {"message": message, "llm_provider": PROVIDER, "model": model, "response": response}
    if "headers" in inspect.signature(RateLimitError.__init__).parameters:
        kwargs["headers"] = headers
    return RateLimitError(**kwargs)


def refusal_error(status: int, message: str, model: str) -> Exception:
    """The LiteLLM error for an upstream refusal with ``status``, as the proxy renders it to the client."""
    from litellm.exceptions import BadRequestError, NotFoundError, PermissionDeniedError

    if status == 401:
        return authentication_error(message, model)
    if status == 429:
        return RateLimitError(message=message, llm_provider=PROVIDER, model=model)
    if status == 403:  # the one that insists on a response object
        response = httpx.Response(403, request=httpx.Request("POST", "https://api.anthropic.com/v1/messages"))
        return PermissionDeniedError(message=message, llm_provider=PROVIDER, model=model, response=response)
    if status == 404:
        return NotFoundError(message=message, llm_provider=PROVIDER, model=model)
    return BadRequestError(message=message, llm_provider=PROVIDER, model=model)


def exempt_from_router_cooldown(kwargs: dict[str, Any], deployment: Any | None) -> None:
    """Keep this call's errors from resting the whole deployment in LiteLLM's router.

    The plugin handles auth and quota errors itself (refresh, rest one account, hand a
    client's own 401 back); a router cooldown would instead turn every later request into
    "No deployments available". On a failure the router (1.98+) reads ``cooldown_time``
    from the call's copy of the deployment's ``model_info``, taken before this hook runs:
    set on the deployment, every later copy has it; set on this call's copy, the first
    call is covered too. Not as a call kwarg (what 1.97 and older read): one more key
    there costs every request, as LiteLLM copies and filters the kwargs many times.
    """
    if isinstance(deployment, dict):
        deployment.setdefault("model_info", {}).setdefault("cooldown_time", 0)
    model_info = kwargs.get("model_info")
    if isinstance(model_info, dict):
        model_info.setdefault("cooldown_time", 0)


# -- the proxy: app, router, master key, key auth, CLI --------------------------------


_PROXY_SERVER = "litellm.proxy.proxy_server"


def _proxy_server() -> Any:
    # Read on every request: sys.modules first, import_module's locking only the first time.
    return sys.modules.get(_PROXY_SERVER) or import_module(_PROXY_SERVER)


def proxy_app() -> FastAPI:
    """The proxy's FastAPI app (importing the proxy; raises ImportError without its extras)."""
    return _proxy_server().app


def proxy_router() -> Any | None:
    """The proxy's ``Router`` once the config is loaded; None in SDK use or before startup."""
    try:
        return _proxy_server().llm_router
    except Exception:  # SDK use without the proxy: no config to consult
        return None


def proxy_master_key() -> str | None:
    """The master key the running proxy loaded (read each time: set after startup)."""
    return _proxy_server().master_key


def proxy_auth_kwargs(key: str, auth: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Arguments for a direct call of ``user_api_key_auth`` with ``key`` as a bearer.

    Its header parameters default to ``fastapi.Security`` objects, meaningful only when
    FastAPI resolves them, and they differ by release: each one the installed
    function takes is passed empty, ``api_key`` carries the key.
    """
    fn = auth if auth is not None else __getattr__("user_api_key_auth")
    kwargs: dict[str, Any] = {}
    for name, param in inspect.signature(fn).parameters.items():
        if name == "request" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name == "api_key":
            kwargs[name] = f"Bearer {key}"
        elif name == "azure_api_key_header":
            kwargs[name] = ""  # typed str, not Optional
        else:
            kwargs[name] = None
    return kwargs


async def authenticate_key(request: Request, key: str) -> UserAPIKeyAuth:
    """LiteLLM's own verdict on ``key`` (virtual keys, master key); raises when it rejects it."""
    auth = __getattr__("user_api_key_auth")
    return await auth(request=request, **proxy_auth_kwargs(key, auth))


def is_proxy_admin(auth: UserAPIKeyAuth) -> bool:
    return auth.user_role == __getattr__("LitellmUserRoles").PROXY_ADMIN


def loaded_proxy_alerting() -> Any | None:
    """The running proxy's ``proxy_logging_obj`` when it alerts to Slack or MS Teams, else None.

    Looked up only if the proxy is already imported: the CLI must not load it for this.
    """
    module = sys.modules.get("litellm.proxy.proxy_server")
    logging_obj = getattr(module, "proxy_logging_obj", None)
    destinations = getattr(logging_obj, "alerting", None) or []
    return logging_obj if any(d in ("slack", "ms_teams") for d in destinations) else None


async def send_proxy_alert(logging_obj: Any, message: str, level: str) -> None:
    """One outage alert through LiteLLM's own alerting (``level``: Low, Medium or High)."""
    from litellm.types.integrations.slack_alerting import AlertType

    await logging_obj.alerting_handler(
        message=message, level=level, alert_type=AlertType.outage_alerts, request_data=None
    )


def run_proxy_cli(args: Sequence[str], prog_name: str = "litellm") -> None:
    """LiteLLM's own ``litellm`` command (its click ``run_server``) with ``args``.

    From 1.108 LiteLLM's console script is ``litellm_cli.main:proxy_server``, a wrapper
    that calls this same ``run_server``; calling it directly works on every release.
    """
    from litellm.proxy.proxy_cli import run_server

    run_server.main(args=list(args), prog_name=prog_name)


__all__ = [
    "KNOWN_BAD",
    "NEWEST_TESTED",
    "OLDEST_TESTED",
    "SUPPORTED",
    "AsyncHTTPHandler",
    "AuthedAsyncHTTPHandler",
    "AuthenticationError",
    "CustomLogger",
    "LitellmUserRoles",
    "RateLimitError",
    "ServiceUnavailableError",
    "UserAPIKeyAuth",
    "authenticate_key",
    "authentication_error",
    "exempt_from_router_cooldown",
    "is_proxy_admin",
    "litellm_version",
    "loaded_proxy_alerting",
    "proxy_app",
    "proxy_auth_kwargs",
    "proxy_master_key",
    "proxy_router",
    "rate_limit_error",
    "refusal_error",
    "run_proxy_cli",
    "send_proxy_alert",
    "service_unavailable_error",
    "user_api_key_auth",
]
