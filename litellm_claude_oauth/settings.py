"""Every environment variable the plugin reads, in one place.

Settings are read once per process (the CLI and each proxy worker) and validated up
front, so a typo in an env var is a one-line error at start-up rather than a failed
request an hour later. :data:`ENV` lists every variable; it drives :meth:`Settings.from_env`,
the error messages and the README check (:func:`missing_from_readme`).

This module is on the CLI's start-up path: keep it free of httpx, LiteLLM and friends.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from . import __version__
from .errors import ConfigError

DEFAULT_CLIENT_ID = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
DEFAULT_AUTHORIZE_URL = "https://claude.ai/oauth/authorize"
# What Claude Code sends since 2026; the console.anthropic.com callback is legacy and
# was refused ("Invalid redirect_uri") for some in 2026.
DEFAULT_REDIRECT_URI = "https://platform.claude.com/oauth/code/callback"
# Claude Code posts to platform.claude.com; api.anthropic.com serves the same endpoint.
# console.anthropic.com answers 404 since mid-2026 and is no longer tried.
DEFAULT_TOKEN_URLS = (
    "https://platform.claude.com/v1/oauth/token",
    "https://api.anthropic.com/v1/oauth/token",
)
DEFAULT_SCOPES = "user:profile user:inference user:sessions:claude_code user:mcp_servers user:file_upload"
DEFAULT_API_BASE = "https://api.anthropic.com"
DEFAULT_SYSTEM_PROMPT = "You are Claude Code, Anthropic's official CLI for Claude."
DEFAULT_TOKEN_FILE = "~/.litellm/claude_tokens.json"
DEFAULT_CLAUDE_CODE_CREDENTIALS = "~/.claude/.credentials.json"
DEFAULT_ACCOUNT = "default"
# Honest: names this project. The token endpoint's edge refuses some library defaults
# (urllib: "error code: 1010") and Claude Code's own names; never send those.
DEFAULT_USER_AGENT = f"litellm-claude-oauth/{__version__}"

PoolStrategy = Literal["round-robin", "fill-first", "least-used"]
Passthrough = Literal["auto", "off", "required"]


@dataclass(frozen=True)
class EnvVar:
    """One environment variable: the Settings field it sets, and what the README says."""

    field: str | None  # None: read elsewhere (composed into another field, or by the CLI)
    doc: str
    default: str = ""  # as the README shows it
    kind: Literal["str", "list", "path", "raw"] = "str"  # list: comma-separated; raw: empty counts


# Order matters where two variables set one field: the first one set wins.
ENV: dict[str, EnvVar] = {
    "CLAUDE_TOKEN_STORE": EnvVar("store", "`file` or `postgres`", "file"),
    "CLAUDE_TOKEN_FILE": EnvVar("token_file", "the file store (mode 0600, directory 0700)", DEFAULT_TOKEN_FILE, "path"),
    "CLAUDE_TOKEN_ENCRYPTION_KEY": EnvVar(
        "encryption_key", "64 hex chars (`openssl rand -hex 32`); unset: plaintext, with a warning in `status`"
    ),
    "CLAUDE_TOKEN_ENCRYPTION_KEYS_OLD": EnvVar(
        "old_encryption_keys", "comma list of previous keys, for rotation (needs a current key)", kind="list"
    ),
    "CLAUDE_TOKEN_ALLOW_PLAINTEXT_MIGRATION": EnvVar(
        "allow_plaintext_migration",
        "`1`: with a key set, still read records stored in clear (and re-encrypt them); off by default",
        "0",
    ),
    "CLAUDE_OAUTH_DATABASE_URL": EnvVar("database_url", "Postgres DSN for `CLAUDE_TOKEN_STORE=postgres`"),
    "DATABASE_URL": EnvVar("database_url", "LiteLLM's database; used when `CLAUDE_OAUTH_DATABASE_URL` is unset"),
    "REDIS_URL": EnvVar(None, "Redis for cross-process refresh locks and events (`rediss://` for TLS)"),
    "REDIS_HOST": EnvVar(None, "LiteLLM's Redis convention, used when `REDIS_URL` is unset"),
    "REDIS_PORT": EnvVar(None, "with `REDIS_HOST`", "6379"),
    "REDIS_USERNAME": EnvVar(None, "with `REDIS_HOST` (Redis 6 ACL user)"),
    "REDIS_PASSWORD": EnvVar(None, "with `REDIS_HOST`"),
    "REDIS_SSL": EnvVar(None, "with `REDIS_HOST`: `true` connects with TLS (`rediss://`)", "false"),
    "CLAUDE_OAUTH_REFRESH_MARGIN_SECONDS": EnvVar(
        "refresh_margin_seconds", "refresh this long before expiry (at most half the token's lifetime)", "300"
    ),
    "CLAUDE_OAUTH_REFRESH_TOKEN_DAYS": EnvVar(
        "refresh_token_default_days", "refresh-token lifetime assumed when Anthropic does not say", "30"
    ),
    "CLAUDE_OAUTH_REFRESH_WARNING_DAYS": EnvVar(
        "refresh_warning_days", "warn this many days before a refresh token ends (re-login needed)", "3"
    ),
    "CLAUDE_OAUTH_DEFAULT_ACCOUNT": EnvVar("default_account", "default account id (`--account` overrides)", "default"),
    "USER_ID": EnvVar(
        "default_account",
        "older name for `CLAUDE_OAUTH_DEFAULT_ACCOUNT`; a purely numeric value (a container uid) is ignored",
    ),
    "CLAUDE_CODE_SYSTEM_PROMPT": EnvVar(
        "system_prompt", "first system block; set it empty to turn it off", "Claude Code's identity line", "raw"
    ),
    "CLAUDE_OAUTH_CLIENT_ID": EnvVar("client_id", "OAuth client id", DEFAULT_CLIENT_ID),
    "CLAUDE_OAUTH_AUTHORIZE_URL": EnvVar("authorize_url", "OAuth authorize page", DEFAULT_AUTHORIZE_URL),
    "CLAUDE_OAUTH_TOKEN_URL": EnvVar(
        "token_urls",
        "comma list; the next is tried only when the previous could not be reached or answered 404/405",
        ",".join(DEFAULT_TOKEN_URLS),
        "list",
    ),
    "CLAUDE_OAUTH_REDIRECT_URI": EnvVar(
        "redirect_uri", "OAuth redirect (the page that shows CODE#STATE)", DEFAULT_REDIRECT_URI
    ),
    "CLAUDE_OAUTH_SCOPES": EnvVar("scopes", "OAuth scopes", DEFAULT_SCOPES),
    "CLAUDE_OAUTH_USER_AGENT": EnvVar("user_agent", "User-Agent of token requests", "litellm-claude-oauth/<version>"),
    "CLAUDE_OAUTH_STATE_TTL_SECONDS": EnvVar("login_state_ttl_seconds", "how long a started login stays valid", "600"),
    "CLAUDE_OAUTH_HTTP_TIMEOUT": EnvVar("http_timeout_seconds", "timeout of token requests, seconds", "30"),
    "CLAUDE_API_BASE": EnvVar("api_base", "Messages API base for OAuth deployments", DEFAULT_API_BASE),
    "CLAUDE_CODE_OAUTH_TOKEN": EnvVar(None, "a `claude setup-token` token, read by `litellm claude import`"),
    "CLAUDE_SETUP_TOKEN": EnvVar(
        None, "a setup token for `litellm claude import --setup-token` (else read from stdin)"
    ),
    "LITELLM_CONFIG": EnvVar(
        None, "the proxy config `litellm claude models` and `doctor` check (else `./config.oauth.yaml`)"
    ),
    "CLAUDE_CODE_CREDENTIALS_FILE": EnvVar(
        "claude_code_credentials_file",
        "Claude Code's credentials, read by `import`",
        DEFAULT_CLAUDE_CODE_CREDENTIALS,
        "path",
    ),
    "CLAUDE_OAUTH_PASSTHROUGH": EnvVar(
        "passthrough",
        "`auto`: a request with the client's own Anthropic credential is sent with it; "
        "`off`: client credentials are ignored; `required`: never use a stored account",
        "auto",
    ),
    "CLAUDE_OAUTH_POOL": EnvVar(
        "pool_accounts", "accounts of `claude-oauth:pool` deployments", "every stored account", "list"
    ),
    "CLAUDE_OAUTH_POOL_STRATEGY": EnvVar("pool_strategy", "`round-robin`, `fill-first` or `least-used`", "round-robin"),
    "CLAUDE_OAUTH_QUOTA_THRESHOLD": EnvVar(
        "quota_skip_threshold", "pools skip an account whose utilization is at or above this (0-1]", "0.95"
    ),
    "CLAUDE_OAUTH_SESSION_TTL": EnvVar(
        "session_ttl_seconds", "how long a pool keeps a conversation on one account (0: off)", "3600"
    ),
    "CLAUDE_OAUTH_ACCOUNT_MAP": EnvVar(
        "account_map",
        "JSON: `key:<alias or hash>` / `team:<id>` / `team_alias:<alias>` / `user:<id>` → account or `pool`, "
        "matched on the caller's authenticated LiteLLM key (a team alias is not a security boundary)",
    ),
    "CLAUDE_OAUTH_LOCK_TTL_SECONDS": EnvVar(
        "lock_ttl_seconds", "how long a Redis refresh lock outlives a killed holder", "10"
    ),
    "CLAUDE_OAUTH_ALERT_WEBHOOK_URL": EnvVar("alert_webhook_url", "alerts as a JSON POST (Slack-compatible `text`)"),
    "CLAUDE_OAUTH_ALERT_UTILIZATION": EnvVar(
        "alert_utilization", "alert when a window's utilization reaches this", "0.9"
    ),
    "CLAUDE_OAUTH_ALERT_REFRESH_FAILURES": EnvVar(
        "alert_refresh_failures", "alert after this many failed refreshes in a row", "3"
    ),
    "CLAUDE_OAUTH_METRICS_TOKEN": EnvVar("metrics_token", "read-only bearer token for the metrics endpoint"),
}


def env_names(field: str) -> list[str]:
    """The variables that set ``field``, in priority order."""
    return [name for name, var in ENV.items() if var.field == field]


def missing_from_readme(readme: str) -> list[str]:
    """ENV names the README text never mentions (as a whole word), in ENV order."""
    return [name for name in ENV if not re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", readme)]


def env_table_markdown() -> str:
    """The README's environment table, generated from :data:`ENV`."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, var in ENV.items():
        default = f"`{var.default}`" if var.default else ""
        rows.append(f"| `{name}` | {default} | {var.doc} |")
    return "\n".join(rows)


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
    user_agent: str = DEFAULT_USER_AGENT
    api_base: str = DEFAULT_API_BASE
    token_file: Path = Path(DEFAULT_TOKEN_FILE).expanduser()
    encryption_key: SecretStr | None = None
    old_encryption_keys: tuple[SecretStr, ...] = ()
    # Read records stored in clear although a key is set (and re-seal them); off, so
    # whoever can write the store cannot plant tokens that skip authentication.
    allow_plaintext_migration: bool = False
    store: Literal["file", "postgres"] = "file"
    database_url: SecretStr | None = None
    redis: RedisSettings | None = None
    # Access tokens live 8 h; TokenSet.needs_refresh also caps this at half the lifetime.
    refresh_margin_seconds: int = Field(default=300, ge=0, le=3600)
    refresh_token_default_days: float = Field(default=30, gt=0, le=365)
    refresh_warning_days: float = Field(default=3, ge=0, le=60)
    login_state_ttl_seconds: int = Field(default=600, ge=30, le=3600)
    default_account: str = DEFAULT_ACCOUNT
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    http_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    # How long a refresh lock outlives a process killed while holding it.
    lock_ttl_seconds: float = Field(default=10.0, ge=1, le=300)
    passthrough: Passthrough = "auto"
    # Accounts a `claude-oauth:pool` deployment spreads over (None: every stored account).
    pool_accounts: tuple[str, ...] | None = None
    pool_strategy: PoolStrategy = "round-robin"
    quota_skip_threshold: float = Field(default=0.95, gt=0, le=1)
    session_ttl_seconds: int = Field(default=3600, ge=0, le=7 * 86_400)
    # "team:<id>" / "key:<alias or hash>" / "user:<id>" -> account id or "pool".
    account_map: dict[str, str] = Field(default_factory=dict)
    alert_webhook_url: SecretStr | None = None
    alert_utilization: float = Field(default=0.9, gt=0, le=1)
    alert_refresh_failures: int = Field(default=3, ge=1, le=1000)
    metrics_token: SecretStr | None = None
    claude_code_credentials_file: Path = Path(DEFAULT_CLAUDE_CODE_CREDENTIALS).expanduser()

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
            _check_http_url(url)
        return value

    @field_validator("authorize_url", "redirect_uri", "api_base")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return _check_http_url(value)

    @field_validator("alert_webhook_url")
    @classmethod
    def _check_webhook(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            # The URL is often a secret (Slack webhooks are), so it is never echoed.
            parts = urlsplit(value.get_secret_value())
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an http(s) URL")
        return value

    @field_validator("user_agent")
    @classmethod
    def _check_user_agent(cls, value: str) -> str:
        value = value.strip()
        if not value or len(value) > 200 or not value.isprintable() or not value.isascii():
            raise ValueError("must be one line of printable ASCII, at most 200 characters")
        if value.lower().startswith(("claude-cli", "claude-code")):
            # Impersonating Claude Code is not something this project does (and the token
            # endpoint answered those names with 404/429 in 2026 anyway).
            raise ValueError("must name this client, not Claude Code")
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
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ValueError(
                    'must be a JSON object like {"team:TEAM_ID": "alice", "key:KEY_ALIAS": "pool"}'
                ) from None
        if not isinstance(value, dict):
            raise ValueError('must be a JSON object like {"team:TEAM_ID": "alice"}')
        for selector, account in value.items():
            kind, _, ident = str(selector).partition(":")
            if kind not in ("team", "team_alias", "key", "user") or not ident:
                raise ValueError(
                    f"key {selector!r} must be team:<id>, team_alias:<alias>, key:<alias or hash> or user:<id>"
                )
            if account != "pool":
                validate_account_id(str(account))
        return value

    @model_validator(mode="after")
    def _check_key_set(self) -> Settings:
        if self.old_encryption_keys and self.encryption_key is None:
            # Otherwise every record read would be re-written in clear.
            raise ValueError(
                "CLAUDE_TOKEN_ENCRYPTION_KEYS_OLD is set without CLAUDE_TOKEN_ENCRYPTION_KEY; "
                "set the current key too (old keys only decrypt)"
            )
        return self

    @property
    def encrypted(self) -> bool:
        return self.encryption_key is not None

    @property
    def refresh_token_default_seconds(self) -> float:
        return self.refresh_token_default_days * 86_400

    @property
    def refresh_warning_seconds(self) -> float:
        return self.refresh_warning_days * 86_400

    def key_bytes(self) -> tuple[bytes | None, tuple[bytes, ...]]:
        current = bytes.fromhex(self.encryption_key.get_secret_value()) if self.encryption_key else None
        old = tuple(bytes.fromhex(k.get_secret_value()) for k in self.old_encryption_keys)
        return current, old

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        sources: dict[str, str] = {}  # field -> the variable that set it, for error messages
        for name, var in ENV.items():
            if var.field is None or var.field in values or name not in env:
                continue
            raw = env[name]
            if var.kind != "raw":
                raw = raw.strip()
                if not raw:
                    continue
            if name == "USER_ID" and raw.isdigit():
                continue  # `USER_ID=1000` is a container's uid, not an account name
            values[var.field] = _parse(var.kind, raw)
            sources[var.field] = name
        if redis_url := _redis_url(env):
            values["redis"] = RedisSettings(url=SecretStr(redis_url))
        # `~` is expanded now, not at import: HOME may have changed since (tests, su).
        values.setdefault("token_file", Path(DEFAULT_TOKEN_FILE).expanduser())
        values.setdefault("claude_code_credentials_file", Path(DEFAULT_CLAUDE_CODE_CREDENTIALS).expanduser())

        try:
            settings = cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, sources)) from None
        if settings.store == "postgres" and settings.database_url is None:
            raise ConfigError("CLAUDE_TOKEN_STORE=postgres needs CLAUDE_OAUTH_DATABASE_URL (or DATABASE_URL) to be set")
        return settings


def _parse(kind: str, raw: str) -> object:
    if kind == "list":
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    if kind == "path":
        return Path(raw).expanduser()
    return raw


def _check_http_url(url: str) -> str:
    if not url.startswith(("http://", "https://")) or not urlsplit(url).hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    return url


_CHOICES = {
    "store": "must be 'file' or 'postgres'",
    "pool_strategy": "must be 'round-robin', 'fill-first' or 'least-used'",
    "passthrough": "must be 'auto', 'off' or 'required'",
    "allow_plaintext_migration": "must be 1/0, true/false, yes/no or on/off",
}


def _describe(exc: ValidationError, sources: Mapping[str, str]) -> str:
    first = exc.errors()[0]
    message = first["msg"].removeprefix("Value error, ")
    if not first["loc"]:  # a whole-model check; its message names the variables
        return message
    field = str(first["loc"][0])
    message = _CHOICES.get(field, message)
    name = sources.get(field) or next(iter(env_names(field)), field)
    # Never echo the offending value: it may be a key.
    return f"{name} {message}"


_REDIS_URL_HINT = "REDIS_URL must look like redis://[user:password@]host:port/db (rediss:// for TLS)"


def _redis_url(env: Mapping[str, str]) -> str | None:
    """REDIS_URL, or LiteLLM's REDIS_HOST/PORT/USERNAME/PASSWORD/SSL convention; checked here
    so a malformed value is one line at start-up, not a traceback from the Redis client."""
    if url := env.get("REDIS_URL", "").strip():
        try:
            parts = urlsplit(url)
            _ = parts.port  # raises for a non-numeric or out-of-range port
        except ValueError:
            raise ConfigError(_REDIS_URL_HINT) from None
        if parts.scheme == "unix":
            if not parts.path:
                raise ConfigError(_REDIS_URL_HINT)
        elif parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ConfigError(_REDIS_URL_HINT)
        return url
    host = env.get("REDIS_HOST", "").strip()
    if not host:
        return None
    port = env.get("REDIS_PORT", "").strip() or "6379"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("REDIS_PORT must be a port number")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    if any(c in host for c in "/@?# "):
        raise ConfigError("REDIS_HOST must be a host name or IP address")
    username = env.get("REDIS_USERNAME", "").strip()
    password = env.get("REDIS_PASSWORD", "")
    auth = ""
    if username or password:
        auth = f"{quote(username, safe='')}" + (f":{quote(password, safe='')}" if password else "") + "@"
    scheme = "rediss" if _truthy(env.get("REDIS_SSL", "")) else "redis"
    return f"{scheme}://{auth}{host}:{port}/0"


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


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
