"""``litellm claude doctor``: is this account ready to serve the proxy's models, and if not, why.

Each check ends in one :class:`Check` line, pass / warn / fail / skip, and every
failure carries its fix. The checks run in dependency order (store, login, tokens,
then Anthropic), and a check whose prerequisite failed is skipped rather than
failing again with a less useful message.

The only requests to Anthropic are ``GET /v1/models`` and, per model family in the
config, one ``POST /v1/messages`` with ``max_tokens: 1``, sent the way the proxy
sends them: OAuth bearer, the OAuth beta, Claude Code's identity line as the whole
first system block, and our own honest User-Agent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel

from .errors import ClaudeOAuthError, DecryptionError, NotLoggedInError, ReloginRequiredError, TokenStoreError
from .models import (
    ConfigFileError,
    ConfigModel,
    UpstreamError,
    UpstreamModel,
    api_headers,
    compare,
    error_message,
    family,
    fetch_models,
    http_client,
    load_config,
)
from .settings import DEFAULT_SYSTEM_PROMPT

if TYPE_CHECKING:
    from .manager import TokenManager
    from .settings import Settings
    from .tokens import TokenSet

CheckStatus = Literal["pass", "warn", "fail", "skip"]
DAY = 86_400.0
_EXTRA_USAGE_FIX = (
    "turn on or top up extra usage at claude.ai/settings/usage, or use this account from Claude Code only"
)
PROBE_TEXT = "Reply with one word."


class Check(BaseModel):
    name: str
    status: CheckStatus
    detail: str
    fix: str | None = None


class DoctorReport(BaseModel):
    account: str
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def _duration(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds >= DAY:
        return f"{seconds / DAY:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 60:.0f} minutes"


def _login_cmd(account: str, default: str) -> str:
    return "`litellm claude login" + ("" if account == default else f" --account {account}") + "`"


# -- local checks -----------------------------------------------------------------------


def check_identity_prompt(settings: Settings) -> Check:
    if settings.system_prompt == DEFAULT_SYSTEM_PROMPT:
        return Check(name="identity block", status="pass", detail="the proxy sends Claude Code's identity line first")
    return Check(
        name="identity block",
        status="warn",
        detail="CLAUDE_CODE_SYSTEM_PROMPT is changed: Anthropic refuses Sonnet/Opus requests without the identity line",
        fix="unset CLAUDE_CODE_SYSTEM_PROMPT (only Haiku works without it)",
    )


async def check_store(manager: TokenManager, account: str) -> tuple[list[Check], bool]:
    """Store reachable, decryptable, encrypted; and whether the account is logged in."""
    where = manager.store.location
    checks: list[Check] = []
    logged_in = False
    try:
        await manager.load(account)
        logged_in = True
    except NotLoggedInError:
        pass
    except TokenStoreError as exc:
        if isinstance(exc, DecryptionError):
            fix = "set the key the tokens were saved with: CLAUDE_TOKEN_ENCRYPTION_KEY, or the old one in " \
                  "CLAUDE_TOKEN_ENCRYPTION_KEYS_OLD"  # fmt: skip
        else:
            fix = "check CLAUDE_TOKEN_FILE (its directory must be writable) or that PostgreSQL at " \
                  "CLAUDE_OAUTH_DATABASE_URL is running"  # fmt: skip
        return [Check(name="store", status="fail", detail=f"{where}: {exc}", fix=fix)], False
    checks.append(Check(name="store", status="pass", detail=f"{where} is readable"))
    if manager.store.encrypted:
        checks.append(Check(name="encryption", status="pass", detail="tokens are encrypted at rest (AES-256-GCM)"))
    else:
        checks.append(Check(
            name="encryption", status="warn", detail="tokens are stored in clear",
            fix="set CLAUDE_TOKEN_ENCRYPTION_KEY=$(openssl rand -hex 32) for the proxy and the CLI, then log in again",
        ))  # fmt: skip
    if not logged_in:
        checks.append(Check(
            name="login", status="fail", detail=f"no tokens for account '{account}'",
            fix=f"run {_login_cmd(account, manager.settings.default_account)}",
        ))  # fmt: skip
    return checks, logged_in


async def check_access_token(manager: TokenManager, account: str) -> tuple[Check, TokenSet | None]:
    """A usable access token, refreshing it (as the proxy would) when it is due."""
    login = _login_cmd(account, manager.settings.default_account)
    try:
        before = (await manager.load(account)).tokens
        tokens = await manager.get_tokens(account)
    except ReloginRequiredError as exc:
        return Check(name="access token", status="fail", detail=str(exc), fix=f"run {login}"), None
    except ClaudeOAuthError as exc:
        return Check(
            name="access token", status="fail", detail=f"cannot get a usable token: {exc}",
            fix="check that the token endpoint (CLAUDE_OAUTH_TOKEN_URL) is reachable, then `litellm claude refresh`",
        ), None  # fmt: skip
    refreshed = " (refreshed just now)" if tokens.access != before.access else ""
    left = tokens.expires_in()
    return Check(
        name="access token", status="pass",
        detail=f"valid for {_duration(left)}, until {_when(tokens.expires_at)}{refreshed}",
    ), tokens  # fmt: skip


def check_refresh_token(tokens: TokenSet, settings: Settings, account: str, now: float | None = None) -> Check:
    """The refresh token's absolute end: warn ``refresh_warning_days`` before, fail after."""
    now = time.time() if now is None else now
    warn = settings.refresh_warning_days * DAY
    login = _login_cmd(account, settings.default_account)
    if tokens.refresh_token is None:
        left = tokens.expires_at - now
        detail = f"none ({tokens.source}): this token cannot be renewed and ends {_when(tokens.expires_at)}"
        if left <= warn:
            fix = "make a new one (`claude setup-token`, then `litellm claude import --setup-token`) or use " + login
            return Check(name="refresh token", status="warn", detail=detail, fix=fix)
        return Check(name="refresh token", status="pass", detail=detail)
    end = tokens.refresh_expires(settings.refresh_token_default_days)
    if end is None:
        return Check(name="refresh token", status="pass", detail="present; Anthropic did not say when it ends")
    left = end - now
    if left <= 0:
        return Check(
            name="refresh token", status="fail", detail=f"ended {_duration(left)} ago ({_when(end)})",
            fix=f"run {login}",
        )  # fmt: skip
    if left <= warn:
        return Check(
            name="refresh token", status="warn", detail=f"ends in {_duration(left)} ({_when(end)})",
            fix=f"run {login} before then (refreshing does not extend it)",
        )  # fmt: skip
    return Check(name="refresh token", status="pass", detail=f"ends in {_duration(left)} ({_when(end)})")


def check_linked(path: str, ours: TokenSet) -> Check:
    """A `import --linked` account: Claude Code's file must stay readable and writable."""
    import os

    from .claude_code import CredentialsFileError, read_credentials

    fix_missing = "log Claude Code in again (`claude`), or re-import without --linked (`litellm claude login` is safer)"
    try:
        theirs = read_credentials(path)
    except CredentialsFileError as exc:
        return Check(name="linked credentials", status="fail", detail=str(exc), fix=fix_missing)
    target = Path(path).resolve()
    if not (os.access(target, os.W_OK) and os.access(target.parent, os.W_OK)):
        return Check(
            name="linked credentials", status="fail", detail=f"{path} is readable but not writable by this user",
            fix=f"let the proxy's user write {target} and its directory: refreshed tokens are written back there",
        )  # fmt: skip
    if theirs.refresh == ours.refresh:
        return Check(name="linked credentials", status="pass", detail=f"{path} holds the same grant as the proxy")
    return Check(
        name="linked credentials", status="pass",
        detail=f"{path} holds newer tokens from Claude Code; the proxy adopts them at its next refresh",
    )  # fmt: skip


async def check_redis(settings: Settings) -> Check:
    if settings.redis is None:
        return Check(name="redis", status="skip", detail="not configured (refreshes are locked through the store)")
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    url = settings.redis.url.get_secret_value()
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or 6379}"  # never the password
    client = Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        return Check(
            name="redis", status="fail", detail=f"cannot reach Redis at {where}: {type(exc).__name__}",
            fix="start Redis, or unset REDIS_URL/REDIS_HOST (then only one proxy process may refresh at a time)",
        )  # fmt: skip
    finally:
        await client.aclose()
    return Check(name="redis", status="pass", detail=f"Redis at {where} answers")


# -- checks against Anthropic -----------------------------------------------------------


def check_config_models(config: list[ConfigModel], upstream: list[UpstreamModel], path: Path) -> Check:
    checks = compare(config, upstream)
    missing = [c for c in checks if not c.served]
    if not missing:
        return Check(
            name="config models", status="pass",
            detail=f"all {len(checks)} claude-oauth deployments in {path} name models this account gets",
        )  # fmt: skip
    swaps = sorted({f"{c.upstream_id} → {c.suggestion}" if c.suggestion else f"{c.upstream_id} → ?" for c in missing})
    return Check(
        name="config models", status="fail",
        detail=f"{len(missing)} of {len(checks)} claude-oauth deployments in {path} name models this account "
               "does not get",
        fix=f"change their `model:` ({'; '.join(swaps)}); `litellm claude models` lists what is served",
    )  # fmt: skip


def probe_targets(config: list[ConfigModel], upstream: list[UpstreamModel] | None) -> dict[str, str | None]:
    """One model id per family in the config: the newest one the account is served, if known.

    None for a family none of whose config ids is served (nothing worth probing).
    """
    order = {m.id: i for i, m in enumerate(upstream or [])}
    targets: dict[str, str | None] = {}
    for c in config:
        fam = family(c.upstream_id)
        if upstream is None:
            targets.setdefault(fam, c.upstream_id)
            continue
        current = targets.get(fam)
        if c.upstream_id in order and (current is None or order[c.upstream_id] < order[current]):
            targets[fam] = c.upstream_id
        else:
            targets.setdefault(fam, None)
    return targets


def probe_body(model: str) -> dict[str, object]:
    return {
        "model": model,
        "max_tokens": 1,
        # The identity line must be the whole first block; anything appended to it is refused.
        "system": [{"type": "text", "text": DEFAULT_SYSTEM_PROMPT}],
        "messages": [{"role": "user", "content": PROBE_TEXT}],
    }


# What a refusal (see :mod:`.refusals`) means for a probe that already sends everything
# the proxy sends: (verdict, meaning, fix).
_REFUSALS: dict[str, tuple[CheckStatus, str, str]] = {
    "identity_gate": ("fail", "the identity gate refused this model family (headerless 429)",
                      "Anthropic refuses this family to this client even with Claude Code's identity line "
                      "(Haiku is usually exempt); use a family that answers ok"),
    "claude_code_only": ("fail", "the identity line was not accepted", "keep CLAUDE_CODE_SYSTEM_PROMPT at its default"),
    "out_of_extra_usage": ("fail", "Anthropic bills this client as extra usage and none is left", _EXTRA_USAGE_FIX),
    "third_party_extra_usage": ("fail", "Anthropic bills this client as extra usage", _EXTRA_USAGE_FIX),
    "usage_credits_required": ("fail", "this model runs on usage credits and the account has none",
                               "choose another model, or add credits at claude.ai"),
    "missing_scope": ("fail", "the token lacks a scope this call needs",
                      "log in again (`litellm claude login`) so the token has the user:inference scope"),
    "org_disabled": ("fail", "Anthropic refuses this account's organization",
                     "stop using this account and check it at claude.ai"),
    "model_not_found": ("fail", "no such model for this account",
                        "use an id from `litellm claude models` in the proxy config"),
    "overloaded": ("warn", "Anthropic is overloaded", "try again in a few minutes"),
    "throttled": ("warn", "Anthropic is throttling requests (not this account's limit)", "try again shortly"),
    "oauth_unsupported": ("fail", "Anthropic did not take the OAuth beta header",
                          "report it: the probe sends anthropic-beta oauth-2025-04-20"),
}  # fmt: skip


def classify_probe(model: str, response: httpx.Response) -> Check:
    """Anthropic's answer to a one-token request, in one line, with what to do about it."""
    from .refusals import classify

    name = f"probe {family(model)}"
    code = response.status_code
    if response.is_success:
        return Check(name=name, status="pass", detail=f"{model}: ok ({code})")
    said = f"{model}: {code} {error_message(response)!r}"
    headers = response.headers
    if code == 429 and any(h.startswith("anthropic-ratelimit-unified-") for h in headers):
        claim = headers.get("anthropic-ratelimit-unified-representative-claim", "usage limit")
        reset = headers.get("anthropic-ratelimit-unified-reset", "")
        when = f", resets {_when(float(reset))}" if reset.replace(".", "", 1).isdigit() else ""
        return Check(
            name=name, status="warn", detail=f"{said}: rate limited ({claim}){when}",
            fix="wait for the reset, or add another account to a pool (`litellm claude login --account NAME`)",
        )  # fmt: skip
    refusal = classify(code, headers, response.content)
    if refusal is not None and refusal.kind in _REFUSALS:
        verdict, meaning, fix = _REFUSALS[refusal.kind]
        return Check(name=name, status=verdict, detail=f"{said}: {meaning}", fix=fix)
    if refusal is not None:
        return Check(name=name, status="warn" if refusal.retryable else "fail", detail=refusal.message)
    if code == 401:
        return Check(name=name, status="fail", detail=f"{said}: the token was refused",
                     fix="`litellm claude refresh`, or log in again")  # fmt: skip
    if code >= 500:
        return Check(name=name, status="warn", detail=f"{said}: Anthropic is failing", fix="try again in a few minutes")
    return Check(name=name, status="fail", detail=said)


async def probe(http: httpx.AsyncClient, api_base: str, tokens: TokenSet, model: str, *, agent: str) -> Check:
    url = api_base.rstrip("/") + "/v1/messages"
    headers = {**api_headers(tokens.access, agent=agent), "Content-Type": "application/json"}
    try:
        response = await http.post(url, json=probe_body(model), headers=headers)
    except httpx.TransportError as exc:
        return Check(name=f"probe {family(model)}", status="fail",
                     detail=f"{model}: cannot reach {url}: {type(exc).__name__}",
                     fix="check the network and CLAUDE_API_BASE")  # fmt: skip
    return classify_probe(model, response)


# -- the whole run ----------------------------------------------------------------------


async def run_doctor(
    manager: TokenManager,
    *,
    account: str | None = None,
    config_path: Path | None = None,
    http: httpx.AsyncClient | None = None,
    on_check: Callable[[Check], None] | None = None,
) -> DoctorReport:
    """Every check, in order; ``on_check`` sees each result as soon as it is known."""
    settings = manager.settings
    name = manager.account_id(account)
    checks: list[Check] = []

    def add(check: Check) -> None:
        checks.append(check)
        if on_check is not None:
            on_check(check)

    add(check_identity_prompt(settings))
    store_checks, logged_in = await check_store(manager, name)
    for check in store_checks:
        add(check)
    add(await check_redis(settings))

    config: list[ConfigModel] | None = None
    if config_path is None:
        add(Check(name="config", status="skip", detail="no proxy config here (./config.oauth.yaml)",
                  fix="pass --config PATH or set LITELLM_CONFIG"))  # fmt: skip
    else:
        try:
            config = load_config(config_path)
            add(Check(name="config", status="pass",
                      detail=f"{config_path}: {len(config)} claude-oauth deployment(s)"))  # fmt: skip
        except ConfigFileError as exc:
            add(Check(name="config", status="fail", detail=str(exc), fix="pass --config with the proxy's config"))

    tokens: TokenSet | None = None
    if logged_in:
        access, tokens = await check_access_token(manager, name)
        add(access)
        record = await manager.load(name)
        add(check_refresh_token(tokens or record.tokens, settings, name))
        if record.linked_credentials:
            add(check_linked(record.linked_credentials, record.tokens))
    if tokens is None:
        add(Check(name="anthropic", status="skip", detail="no usable access token: Anthropic not asked"))
        return DoctorReport(account=name, checks=checks)

    agent = settings.user_agent
    async with http_client(settings, http) as client:
        upstream: list[UpstreamModel] | None = None
        try:
            upstream = await fetch_models(client, settings.api_base, tokens.access, agent=agent)
            add(Check(name="models", status="pass", detail=f"{len(upstream)} models available to this account"))
        except UpstreamError as exc:
            fix = "`litellm claude refresh`, or log in again" if exc.status_code == 401 else "check CLAUDE_API_BASE"
            add(Check(name="models", status="fail", detail=f"cannot list models: {exc}", fix=fix))
        if config is None:
            return DoctorReport(account=name, checks=checks)
        if upstream is not None:
            add(check_config_models(config, upstream, config_path or Path()))
        for fam, model in probe_targets(config, upstream).items():
            if model is None:
                add(Check(name=f"probe {fam}", status="skip", detail="no model of this family in the config is served"))
            else:
                add(await probe(client, settings.api_base, tokens, model, agent=agent))
    return DoctorReport(account=name, checks=checks)


__all__ = [
    "Check",
    "DoctorReport",
    "check_identity_prompt",
    "check_linked",
    "check_redis",
    "check_refresh_token",
    "classify_probe",
    "probe_body",
    "probe_targets",
    "run_doctor",
]
