"""Every environment variable the plugin reads, in one place.

Settings are read once per process (the CLI and each proxy worker) and validated up
front, so a typo in an env var is a one-line error at start-up rather than a failed
request an hour later.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from .errors import ConfigError

DEFAULT_CLIENT_ID = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
DEFAULT_AUTHORIZE_URL = "https://claude.ai/oauth/authorize"
DEFAULT_REDIRECT_URI = "https://console.anthropic.com/oauth/code/callback"
# The endpoint has moved twice; trying the current one first and falling back keeps
# old and new deployments of Anthropic's side working without a config change.
DEFAULT_TOKEN_URLS = (
    "https://platform.claude.com/v1/oauth/token",
    "https://console.anthropic.com/v1/oauth/token",
)
DEFAULT_SCOPES = "user:profile user:inference user:sessions:claude_code user:mcp_servers user:file_upload"
DEFAULT_API_BASE = "https://api.anthropic.com"
DEFAULT_SYSTEM_PROMPT = "You are Claude Code, Anthropic's official CLI for Claude."
DEFAULT_TOKEN_FILE = "~/.litellm/claude_tokens.json"
DEFAULT_ACCOUNT = "default"


class RedisSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    url: SecretStr


class Settings(BaseModel):
    """Validated view of the environment; build it with :meth:`from_env`."""

    model_config = ConfigDict(frozen=True)

    client_id: str = DEFAULT_CLIENT_ID
    authorize_url: str = DEFAULT_AUTHORIZE_URL
    token_urls: tuple[str, ...] = DEFAULT_TOKEN_URLS
    redirect_uri: str = DEFAULT_REDIRECT_URI
    scopes: str = DEFAULT_SCOPES
    api_base: str = DEFAULT_API_BASE
    token_file: Path = Path(DEFAULT_TOKEN_FILE).expanduser()
    encryption_key: SecretStr | None = None
    old_encryption_keys: tuple[SecretStr, ...] = ()
    store: Literal["file", "postgres"] = "file"
    database_url: SecretStr | None = None
    redis: RedisSettings | None = None
    refresh_margin_seconds: int = Field(default=300, ge=0, le=86_400)
    login_state_ttl_seconds: int = Field(default=600, ge=30, le=3600)
    default_account: str = DEFAULT_ACCOUNT
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    http_timeout_seconds: float = Field(default=30.0, gt=0)
    # How long a refresh lock outlives a process killed while holding it.
    lock_ttl_seconds: float = Field(default=10.0, ge=1, le=300)
    # Accounts a `claude-oauth:pool` deployment spreads over (None: every stored account).
    pool_accounts: tuple[str, ...] | None = None
    pool_strategy: Literal["round-robin", "fill-first"] = "round-robin"
    # "team:<id>" / "key:<alias or hash>" / "user:<id>" -> account id or "pool".
    account_map: dict[str, str] = Field(default_factory=dict)

    @field_validator("encryption_key", "old_encryption_keys", mode="before")
    @classmethod
    def _check_keys(cls, value: object) -> object:
        keys = value if isinstance(value, (list, tuple)) else [value]
        for key in keys:
            if key is None:
                continue
            raw = key.get_secret_value() if isinstance(key, SecretStr) else str(key)
            if len(raw) != 64 or any(c not in "0123456789abcdefABCDEF" for c in raw):
                raise ValueError("must be 64 hex characters (generate one with: openssl rand -hex 32)")
        return value

    @field_validator("token_urls")
    @classmethod
    def _check_token_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("needs at least one URL")
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return value

    @field_validator("default_account")
    @classmethod
    def _check_account(cls, value: str) -> str:
        return validate_account_id(value)

    @field_validator("pool_accounts")
    @classmethod
    def _check_pool(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and not value:
            raise ValueError("lists no account")
        return None if value is None else tuple(validate_account_id(a) for a in value)

    @field_validator("account_map", mode="before")
    @classmethod
    def _check_map(cls, value: object) -> object:
        if isinstance(value, str):
            import json

            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ValueError('must be a JSON object like {"team:TEAM_ID": "alice", "key:KEY_ALIAS": "pool"}') from None
        if not isinstance(value, dict):
            raise ValueError('must be a JSON object like {"team:TEAM_ID": "alice"}')
        for selector, account in value.items():
            kind, _, ident = str(selector).partition(":")
            if kind not in ("team", "key", "user") or not ident:
                raise ValueError(f"key {selector!r} must be team:<id>, key:<alias or hash> or user:<id>")
            if account != "pool":
                validate_account_id(str(account))
        return value

    @property
    def encrypted(self) -> bool:
        return self.encryption_key is not None

    def key_bytes(self) -> tuple[bytes | None, tuple[bytes, ...]]:
        current = bytes.fromhex(self.encryption_key.get_secret_value()) if self.encryption_key else None
        old = tuple(bytes.fromhex(k.get_secret_value()) for k in self.old_encryption_keys)
        return current, old

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}

        def put(field: str, var: str) -> None:
            raw = env.get(var, "").strip()
            if raw:
                values[field] = raw

        put("client_id", "CLAUDE_OAUTH_CLIENT_ID")
        put("authorize_url", "CLAUDE_OAUTH_AUTHORIZE_URL")
        put("redirect_uri", "CLAUDE_OAUTH_REDIRECT_URI")
        put("scopes", "CLAUDE_OAUTH_SCOPES")
        put("api_base", "CLAUDE_API_BASE")
        put("encryption_key", "CLAUDE_TOKEN_ENCRYPTION_KEY")
        put("store", "CLAUDE_TOKEN_STORE")
        put("refresh_margin_seconds", "CLAUDE_OAUTH_REFRESH_MARGIN_SECONDS")
        put("login_state_ttl_seconds", "CLAUDE_OAUTH_STATE_TTL_SECONDS")
        put("default_account", "USER_ID")
        put("http_timeout_seconds", "CLAUDE_OAUTH_HTTP_TIMEOUT")
        put("lock_ttl_seconds", "CLAUDE_OAUTH_LOCK_TTL_SECONDS")
        put("pool_strategy", "CLAUDE_OAUTH_POOL_STRATEGY")
        put("account_map", "CLAUDE_OAUTH_ACCOUNT_MAP")
        if "CLAUDE_OAUTH_POOL" in env and env["CLAUDE_OAUTH_POOL"].strip():
            values["pool_accounts"] = tuple(a.strip() for a in env["CLAUDE_OAUTH_POOL"].split(",") if a.strip())
        if token_urls := env.get("CLAUDE_OAUTH_TOKEN_URL", "").strip():
            values["token_urls"] = tuple(u.strip() for u in token_urls.split(",") if u.strip())
        if old := env.get("CLAUDE_TOKEN_ENCRYPTION_KEYS_OLD", "").strip():
            values["old_encryption_keys"] = tuple(k.strip() for k in old.split(",") if k.strip())
        if token_file := env.get("CLAUDE_TOKEN_FILE", "").strip():
            values["token_file"] = Path(token_file).expanduser()
        # An explicitly empty CLAUDE_CODE_SYSTEM_PROMPT turns the identity block off.
        if "CLAUDE_CODE_SYSTEM_PROMPT" in env:
            values["system_prompt"] = env["CLAUDE_CODE_SYSTEM_PROMPT"]
        if db := (env.get("CLAUDE_OAUTH_DATABASE_URL") or env.get("DATABASE_URL") or "").strip():
            values["database_url"] = db
        if redis_url := _redis_url(env):
            values["redis"] = RedisSettings(url=SecretStr(redis_url))
        if "token_file" not in values:
            values["token_file"] = Path(DEFAULT_TOKEN_FILE).expanduser()

        try:
            settings = cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None
        if settings.store == "postgres" and settings.database_url is None:
            raise ConfigError(
                "CLAUDE_TOKEN_STORE=postgres needs CLAUDE_OAUTH_DATABASE_URL (or DATABASE_URL) to be set"
            )
        return settings


_ENV_NAMES = {
    "client_id": "CLAUDE_OAUTH_CLIENT_ID",
    "authorize_url": "CLAUDE_OAUTH_AUTHORIZE_URL",
    "token_urls": "CLAUDE_OAUTH_TOKEN_URL",
    "redirect_uri": "CLAUDE_OAUTH_REDIRECT_URI",
    "scopes": "CLAUDE_OAUTH_SCOPES",
    "api_base": "CLAUDE_API_BASE",
    "token_file": "CLAUDE_TOKEN_FILE",
    "encryption_key": "CLAUDE_TOKEN_ENCRYPTION_KEY",
    "old_encryption_keys": "CLAUDE_TOKEN_ENCRYPTION_KEYS_OLD",
    "store": "CLAUDE_TOKEN_STORE",
    "refresh_margin_seconds": "CLAUDE_OAUTH_REFRESH_MARGIN_SECONDS",
    "login_state_ttl_seconds": "CLAUDE_OAUTH_STATE_TTL_SECONDS",
    "default_account": "USER_ID",
    "http_timeout_seconds": "CLAUDE_OAUTH_HTTP_TIMEOUT",
    "lock_ttl_seconds": "CLAUDE_OAUTH_LOCK_TTL_SECONDS",
    "pool_accounts": "CLAUDE_OAUTH_POOL",
    "pool_strategy": "CLAUDE_OAUTH_POOL_STRATEGY",
    "account_map": "CLAUDE_OAUTH_ACCOUNT_MAP",
}


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else "?"
    message = first["msg"].removeprefix("Value error, ")
    if field == "store":
        message = "must be 'file' or 'postgres'"
    if field == "pool_strategy":
        message = "must be 'round-robin' or 'fill-first'"
    # Never echo the offending value: it may be a key.
    return f"{_ENV_NAMES.get(field, field)} {message}"


def _redis_url(env: Mapping[str, str]) -> str | None:
    """REDIS_URL, or LiteLLM's REDIS_HOST/REDIS_PORT/REDIS_PASSWORD convention."""
    if url := env.get("REDIS_URL", "").strip():
        return url
    host = env.get("REDIS_HOST", "").strip()
    if not host:
        return None
    port = env.get("REDIS_PORT", "6379").strip() or "6379"
    password = env.get("REDIS_PASSWORD", "")
    auth = f":{_quote(password)}@" if password else ""
    return f"redis://{auth}{host}:{port}/0"


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


ACCOUNT_ID_MAX = 64
# ASCII only: ids become lock-file names, Redis keys and SQL rows, and two ids that
# look alike (Cyrillic "е" vs Latin "e") must not be two accounts.
ACCOUNT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
_ACCOUNT_ID_RE = re.compile(ACCOUNT_ID_PATTERN)


def validate_account_id(value: str) -> str:
    value = value.strip()
    if not _ACCOUNT_ID_RE.match(value):
        raise ValueError(
            f"account id must be 1-{ACCOUNT_ID_MAX} ASCII letters, digits, '-', '_', '.', '@', "
            "starting with a letter or digit"
        )
    return value
