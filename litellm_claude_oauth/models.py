"""Which Claude models the logged-in account can use, and which config entries it cannot.

Anthropic retires model ids (``claude-3-5-haiku-20241022`` went in February 2026) and
adds new ones; a proxy config written last year then fails request by request with a
404. ``GET /v1/models`` with the account's own OAuth token is the authority: this
module lists it (following pagination) and compares it with the ``claude-oauth``
deployments of a LiteLLM proxy config.

Requests say who we are (``litellm-claude-oauth/<version>``); the token goes in
``Authorization: Bearer`` only, never in ``x-api-key``.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from pydantic import BaseModel, ConfigDict

from .errors import ClaudeOAuthError
from .settings import DEFAULT_USER_AGENT

if TYPE_CHECKING:
    from .manager import TokenManager
    from .settings import Settings

ANTHROPIC_VERSION = "2023-06-01"
OAUTH_BETA = "oauth-2025-04-20"
DEFAULT_CONFIG = "config.oauth.yaml"
OAUTH_MARKER = "claude-oauth"
PAGE_LIMIT = 1000
# A misbehaving upstream that always says has_more must not loop forever.
MAX_PAGES = 50


class UpstreamError(ClaudeOAuthError):
    """Anthropic answered an API request with an error (or could not be reached)."""

    def __init__(self, message: str, *, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


class ConfigFileError(ClaudeOAuthError):
    """The proxy config cannot be read or has no usable model_list."""


class UpstreamModel(BaseModel):
    """One entry of Anthropic's ``GET /v1/models``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    display_name: str | None = None
    created_at: str | None = None


class ConfigModel(BaseModel):
    """A proxy-config deployment handled by this plugin (``api_key: claude-oauth…``)."""

    model_config = ConfigDict(frozen=True)

    model_name: str
    upstream_id: str
    # None: the default/mapped account; "pool"; or a named account.
    account: str | None = None


class ConfigCheck(BaseModel):
    model_name: str
    upstream_id: str
    account: str | None
    served: bool
    suggestion: str | None = None


class ModelsReport(BaseModel):
    account: str
    api_base: str
    models: list[UpstreamModel]
    config_path: str | None = None
    config: list[ConfigCheck] = []

    @property
    def unserved(self) -> list[ConfigCheck]:
        return [c for c in self.config if not c.served]


def api_headers(access_token: str, *, agent: str = DEFAULT_USER_AGENT) -> dict[str, str]:
    """Headers for Anthropic's API with an OAuth access token."""
    return {
        "Authorization": f"Bearer {access_token}",
        "anthropic-version": ANTHROPIC_VERSION,
        "anthropic-beta": OAUTH_BETA,
        "User-Agent": agent,
        "Accept": "application/json",
    }


def error_message(response: httpx.Response) -> str:
    """The message in Anthropic's error envelope, on one line, or the HTTP reason."""
    try:
        data = response.json()
    except ValueError:
        data = None
    message = None
    if isinstance(data, Mapping):
        error = data.get("error")
        if isinstance(error, Mapping):
            message = error.get("message") or error.get("type")
        elif isinstance(error, str):
            message = data.get("error_description") or error
    text = str(message or response.reason_phrase or "no message")
    return " ".join(text.split())[:300]


async def fetch_models(
    http: httpx.AsyncClient, api_base: str, access_token: str, *, agent: str = DEFAULT_USER_AGENT
) -> list[UpstreamModel]:
    """Every model ``GET {api_base}/v1/models`` lists for this token, following ``has_more``."""
    url = api_base.rstrip("/") + "/v1/models"
    headers = api_headers(access_token, agent=agent)
    models: list[UpstreamModel] = []
    params: dict[str, str | int] = {"limit": PAGE_LIMIT}
    for _ in range(MAX_PAGES):
        try:
            response = await http.get(url, params=params, headers=headers)
        except httpx.TransportError as exc:
            raise UpstreamError(f"cannot reach {url}: {type(exc).__name__}") from None
        if not response.is_success:
            raise UpstreamError(
                f"{url} answered {response.status_code}: {error_message(response)}", status_code=response.status_code
            )
        try:
            page = response.json()
            entries = page["data"]
            models.extend(UpstreamModel.model_validate(e) for e in entries)
        except (ValueError, KeyError, TypeError):
            raise UpstreamError(f"{url} answered something that is not a model list") from None
        last_id = page.get("last_id") or (entries[-1]["id"] if entries else None)
        if not page.get("has_more") or not last_id:
            return models
        params = {"limit": PAGE_LIMIT, "after_id": last_id}
    raise UpstreamError(f"{url} kept saying has_more after {MAX_PAGES} pages")


def resolve_config_path(explicit: str | None, environ: Mapping[str, str] | None = None) -> tuple[Path, bool]:
    """The config to compare with, and whether the user named it (then it must exist)."""
    env = os.environ if environ is None else environ
    if explicit:
        return Path(explicit).expanduser(), True
    if named := env.get("LITELLM_CONFIG", "").strip():
        return Path(named).expanduser(), True
    return Path(DEFAULT_CONFIG), False


def load_config(path: Path) -> list[ConfigModel]:
    """The ``claude-oauth`` deployments of a LiteLLM proxy config."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(f"cannot read the proxy config {path}: {exc.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigFileError(f"the proxy config {path} is not valid YAML{at}") from None
    entries = doc.get("model_list") if isinstance(doc, Mapping) else None
    if not isinstance(entries, list):
        raise ConfigFileError(f"the proxy config {path} has no model_list")
    found: list[ConfigModel] = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        params = entry.get("litellm_params")
        if not isinstance(params, Mapping):
            continue
        key, model = params.get("api_key"), params.get("model")
        if not isinstance(key, str) or not isinstance(model, str):
            continue
        marker, sep, account = key.partition(":")
        if marker != OAUTH_MARKER or "*" in model:
            continue  # a wildcard passes any id through: there is no one id to check
        found.append(
            ConfigModel(
                model_name=str(entry.get("model_name") or model),
                upstream_id=model.removeprefix("anthropic/"),
                account=account if sep and account else None,
            )
        )
    return found


_FAMILY_RE = re.compile(r"^claude-(?:\d+(?:-\d+)?-)?([a-z]+)")


def family(upstream_id: str) -> str:
    """``claude-3-5-haiku-20241022`` and ``claude-haiku-5-5`` are both ``haiku``."""
    match = _FAMILY_RE.match(upstream_id)
    return match.group(1) if match else upstream_id


def compare(config: list[ConfigModel], upstream: list[UpstreamModel]) -> list[ConfigCheck]:
    """Mark each config entry served or not; suggest the newest served id of the same family.

    Anthropic lists the newest models first, so the first id of a family is its newest.
    """
    served = {m.id for m in upstream}
    newest: dict[str, str] = {}
    for m in upstream:
        newest.setdefault(family(m.id), m.id)
    return [
        ConfigCheck(
            model_name=c.model_name,
            upstream_id=c.upstream_id,
            account=c.account,
            served=c.upstream_id in served,
            suggestion=None if c.upstream_id in served else newest.get(family(c.upstream_id)),
        )
        for c in config
    ]


async def fetch_with_refresh(
    manager: TokenManager, account: str | None, http: httpx.AsyncClient
) -> list[UpstreamModel]:
    """``fetch_models`` with the account's token; on a 401, refresh once and retry."""
    settings = manager.settings
    tokens = await manager.get_tokens(account)
    try:
        return await fetch_models(http, settings.api_base, tokens.access, agent=settings.user_agent)
    except UpstreamError as exc:
        if exc.status_code != 401 or tokens.refresh_token is None:
            raise
    tokens = await manager.force_refresh(account, stale_access=tokens.access)
    return await fetch_models(http, settings.api_base, tokens.access, agent=settings.user_agent)


async def models_report(
    manager: TokenManager,
    account: str | None,
    config_path: Path | None,
    *,
    http: httpx.AsyncClient | None = None,
) -> ModelsReport:
    """The account's models and, with ``config_path``, how the config's entries fare."""
    config = load_config(config_path) if config_path is not None else None
    async with http_client(manager.settings, http) as client:
        upstream = await fetch_with_refresh(manager, account, client)
    return ModelsReport(
        account=manager.account_id(account),
        api_base=manager.settings.api_base,
        models=upstream,
        config_path=str(config_path) if config_path is not None else None,
        config=compare(config, upstream) if config is not None else [],
    )


@contextlib.asynccontextmanager
async def http_client(settings: Settings, http: httpx.AsyncClient | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """The caller's client, or one of our own for the duration."""
    if http is not None:
        yield http
        return
    async with httpx.AsyncClient(timeout=settings.http_timeout_seconds) as client:
        yield client


__all__ = [
    "ConfigCheck",
    "ConfigFileError",
    "ConfigModel",
    "ModelsReport",
    "UpstreamError",
    "UpstreamModel",
    "api_headers",
    "compare",
    "error_message",
    "family",
    "fetch_models",
    "http_client",
    "load_config",
    "models_report",
    "resolve_config_path",
]
