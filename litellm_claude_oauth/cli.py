"""``litellm claude …``: log in, inspect and manage Claude OAuth tokens.

Also home of :func:`main`, the ``litellm`` console script: ``litellm claude …`` runs
the group below, anything else is handed untouched to LiteLLM's own ``run_server``.

Start-up time matters here (``status`` is run in scripts and prompts): the module
imports only click; each command imports what it needs when it runs, so ``--help``
loads nothing else, ``status`` no YAML, rich tables or model-listing code, and no
command imports LiteLLM.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import click

if TYPE_CHECKING:
    from .login import LoginStart
    from .manager import TokenManager
    from .models import ModelsReport
    from .settings import Settings
    from .status import AccountStatus
    from .store import AccountRecord
    from .tokens import TokenSet

T = TypeVar("T")
RULE = "=" * 60


class CLIError(click.ClickException):
    """A failed command: ``Error: <one line>`` on stderr, exit code 1."""


class ConfigurationError(CLIError):
    """A bad environment variable: exit code 2, like a usage error."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(f"configuration: {message}")


def _say(text: str = "", *, err: bool = False) -> None:
    click.echo(text, err=err)


def _settings() -> Settings:
    from .errors import ConfigError
    from .settings import Settings

    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise ConfigurationError(str(exc)) from None


def _run(work: Callable[[TokenManager], Coroutine[Any, Any, T]]) -> T:
    """Build the manager from the environment, run one async job, close it; errors become CLIErrors."""
    import asyncio

    from .errors import ClaudeOAuthError, ConfigError
    from .manager import TokenManager

    settings = _settings()

    async def go() -> T:
        manager = TokenManager.from_settings(settings)
        try:
            return await work(manager)
        finally:
            await manager.aclose()

    try:
        return asyncio.run(go())
    except ConfigError as exc:
        raise ConfigurationError(str(exc)) from None
    except ClaudeOAuthError as exc:
        raise CLIError(str(exc)) from None


def _account_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    def check(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is None:
            return None
        from .settings import validate_account_id

        try:
            return validate_account_id(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    return click.option(
        "--account",
        default=None,
        callback=check,
        help="Account id (default: the configured default account, usually 'default').",
    )(fn)


def _human_duration(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds >= 86_400:
        return f"{seconds / 86_400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    if seconds >= 60:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds:.0f} seconds"


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@click.group(name="claude", context_settings={"help_option_names": ["-h", "--help"]})
def claude() -> None:
    """Log in to Claude (Pro/Max) with OAuth and manage the tokens the proxy uses.

    Tokens are shared with the running proxy through the configured store
    (CLAUDE_TOKEN_STORE: an encrypted file by default, or Postgres).
    """


@claude.command()
@_account_option
@click.option("--no-browser", is_flag=True, help="Only print the URL; do not try to open a browser.")
@click.option(
    "--code-prompt/--no-code-prompt",
    default=None,
    help="Wait for the code to be pasted here (default: when run in a terminal).",
)
@click.option("--json", "as_json", is_flag=True, help="Print {authorization_url, state, account} as JSON.")
def login(account: str | None, no_browser: bool, code_prompt: bool | None, as_json: bool) -> None:
    """Start a login: prints the authorization URL, then takes the code."""
    import asyncio

    async def work(m: TokenManager) -> AccountRecord | None:
        start = await m.start_login(account)
        if as_json:
            click.echo(json.dumps(start.model_dump(mode="json")))
            return None
        pasted = await asyncio.to_thread(_show_login, start, m.settings, no_browser, code_prompt)
        if not pasted:
            return None
        # One manager and one event loop for the whole login: start, prompt, exchange.
        return await m.complete_login(pasted, account=start.account)

    record = _run(work)
    if record is not None:
        _logged_in(record)


def _show_login(start: LoginStart, settings: Settings, no_browser: bool, code_prompt: bool | None) -> str | None:
    """Print the URL and the instructions; the pasted code, if the user pastes one here."""
    _say("🔐 Starting Claude OAuth authentication...")
    _say(RULE)
    if start.account != "default":
        _say(f"\n👤 Account: {start.account}")
    _say("\n📋 Authorization URL generated! Open it in your browser:\n")
    _say(start.authorization_url)
    if not no_browser and _open_browser(start.authorization_url):
        _say("\n🌐 Opening browser...")
    _say(f"\n{RULE}")
    _say("📝 After authorization, you'll be redirected to:")
    _say(f"   {settings.redirect_uri}")
    _say("\n⚠️  Copy the code shown there (CODE#STATE), or the whole redirect URL")
    _say(f"   (this login expires in {settings.login_state_ttl_seconds // 60} minutes)")
    account_flag = "" if start.account == settings.default_account else f" --account {start.account}"
    if code_prompt is None:
        code_prompt = sys.stdin.isatty()
    if not code_prompt:
        _say("\n💡 Then run:")
        _say(f"   litellm claude callback <CODE>{account_flag}")
        _say(RULE)
        return None
    _say(RULE)
    pasted = click.prompt("📥 Paste the code here (Enter to finish later)", default="", show_default=False)
    if not pasted.strip():
        _say(f"💡 Finish later with: litellm claude callback <CODE>{account_flag}")
        return None
    return pasted


def _open_browser(url: str) -> bool:
    # In a container or over SSH there is no browser; webbrowser then returns False.
    if os.environ.get("CI") or not (os.environ.get("DISPLAY") or sys.platform in ("darwin", "win32")):
        return False
    import webbrowser

    try:
        return webbrowser.open(url)
    except webbrowser.Error:
        return False


def _logged_in(record: AccountRecord) -> None:
    who = record.tokens.account_email or record.account
    _say(f"✅ Logged in to Claude as {who} (account '{record.account}')")
    _say(f"   • Expires in: {_human_duration(record.tokens.expires_in())}")
    _say("   The proxy picks the new tokens up on its next request; no restart needed.")


# Codes are base64url and may start with '-': only long options here, and unknown
# option-looking words are taken as the code.
@claude.command(context_settings={"ignore_unknown_options": True, "help_option_names": ["--help"]})
@click.argument("code")
@click.option("--state", default=None, help="The login's state, if not part of CODE (CODE#STATE).")
@_account_option
def callback(code: str, state: str | None, account: str | None) -> None:
    """Finish a login with the CODE from the redirect page (CODE#STATE, bare code, or the URL)."""
    _logged_in(_run(lambda m: m.complete_login(code, state=state, account=account)))


@claude.command()
@_account_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(account: str | None, as_json: bool) -> None:
    """Show whether the tokens are valid, when they expire and where they are stored.

    Without --account, every stored account is shown. Exits 1 when an account shown
    is not logged in, expired without a way to refresh, or needs a new login.
    """
    import asyncio
    import time

    from .errors import ClaudeOAuthError, ConfigError
    from .status import AccountStatus, account_status
    from .store import build_store

    settings = _settings()
    quota: dict[str, Any] = {}

    # Only the store: no manager, no HTTP client (status must start fast).
    async def collect() -> list[AccountStatus]:
        store = build_store(settings)
        try:
            if account is not None:
                names = [account]
            else:
                try:
                    names = await store.accounts() or [settings.default_account]
                except ClaudeOAuthError as exc:
                    broken = AccountStatus(account=settings.default_account, logged_in=False,
                                           store=store.location, encrypted=store.encrypted, error=str(exc))
                    return [broken]
            statuses = [await account_status(store, settings, name, time.time()) for name in names]
        finally:
            await store.close()
        # The rate-limit windows workers last saw (Redis or the sidecar next to the token file).
        from .quotas import read_shared

        views = await read_shared(settings, [s.account for s in statuses if s.logged_in])
        for s in statuses:
            quota[s.account] = views.get(s.account)
        return statuses

    try:
        statuses = asyncio.run(collect())
    except ConfigError as exc:
        raise ConfigurationError(str(exc)) from None
    except ClaudeOAuthError as exc:
        raise CLIError(str(exc)) from None
    if as_json:
        accounts = [
            {**s.model_dump(mode="json"),
             "quota": view.model_dump(mode="json") if (view := quota.get(s.account)) and view.windows else None}
            for s in statuses
        ]
        click.echo(json.dumps({"accounts": accounts}, indent=2))
    else:
        _print_status(statuses, quota)
    if any(_needs_attention(s) for s in statuses):
        sys.exit(1)


def _needs_attention(s: AccountStatus) -> bool:
    # An ended refresh token arrives as relogin_reason.
    return bool(not s.logged_in or s.error or s.relogin_reason or (not s.valid and not s.refreshable))


def _print_status(statuses: list[AccountStatus], quota: dict[str, Any] | None = None) -> None:
    _say("🔍 Claude OAuth Status")
    _say(RULE)
    first = statuses[0]
    _say(f"{'✅' if first.logged_in else 'ℹ️ '} Using tokens from: {first.store}")
    _say(f"🔒 Encryption: {'on (AES-256-GCM)' if first.encrypted else 'OFF: set CLAUDE_TOKEN_ENCRYPTION_KEY'}")
    for s in statuses:
        _say(f"\n📊 Token Status{'' if len(statuses) == 1 and s.account == 'default' else f' ({s.account})'}:")
        if s.error:
            _say(f"   • Status: ❌ Error: {s.error}")
            continue
        if not s.logged_in:
            flag = "" if s.account == "default" else f" --account {s.account}"
            _say("   • Status: ❌ Not logged in")
            _say(f"   • Run: litellm claude login{flag}")
            continue
        if s.relogin_reason:
            label = f"❌ Re-login required ({s.relogin_reason})"
        elif s.valid:
            label = "✅ Valid"
        else:
            label = "⚠️  Expired (refreshes on next use)" if s.refreshable else "❌ Expired"
        _say(f"   • Status: {label}")
        assert s.expires_in_seconds is not None and s.expires_at is not None
        if s.expires_in_seconds > 0:
            _say(f"   • Expires in: {_human_duration(s.expires_in_seconds)} ({_when(s.expires_at)})")
        else:
            _say(f"   • Expired: {_human_duration(s.expires_in_seconds)} ago ({_when(s.expires_at)})")
        for line in _refresh_lines(s):
            _say(line)
        for warning in s.warnings:
            _say(f"   ⚠️  {warning}")
        if s.account_email:
            _say(f"   • Account: {s.account_email}")
        if s.organization_name:
            _say(f"   • Organization: {s.organization_name}")
        if s.cooldown_until is not None:
            _say(
                f"   • ⏳ Cooling down: {s.cooldown_reason or 'rate limited'}, resets in "
                f"{_human_duration(s.cooldown_until - time.time())} ({_when(s.cooldown_until)})"
            )
        for family, until in sorted(s.model_cooldowns.items()):
            _say(f"   • ⏳ {family} models resting: resets in {_human_duration(until - time.time())} ({_when(until)})")
        view = (quota or {}).get(s.account)
        if view is not None and view.windows:
            from .quotas import format_window

            for window in view.windows:
                _say(f"   • {format_window(window)}")
        if s.source and s.source != "oauth":
            _say(f"   • Source: {s.source}{'' if s.refreshable else ' (cannot be refreshed)'}")
        if s.linked_credentials:
            _say(f"   • Linked to Claude Code: {s.linked_credentials}")


def _refresh_lines(s: AccountStatus) -> list[str]:
    """The refresh token's absolute end: a new login is due then, whatever refreshes happen."""
    end = s.refresh_expires_at
    if not s.refreshable or end is None:
        return []
    left = end - time.time()
    if left <= 0:
        return [f"   • Refresh token: ❌ ended {_human_duration(left)} ago ({_when(end)}): run litellm claude login"]
    return [f"   • Refresh token ends: in {_human_duration(left)} ({_when(end)})"]


@claude.command()
@_account_option
def refresh(account: str | None) -> None:
    """Refresh the access token now (rotating the refresh token if Anthropic does)."""
    tokens = _run(lambda m: m.force_refresh(account))
    _say("🔄 Token refreshed")
    _say(f"   • Expires in: {_human_duration(tokens.expires_in())}")


@claude.command()
@_account_option
@click.option("--all", "all_accounts", is_flag=True, help="Log out every stored account.")
def logout(account: str | None, all_accounts: bool) -> None:
    """Delete the stored tokens (the proxy stops using them)."""

    async def work(m: TokenManager) -> list[str]:
        names = await m.accounts() if all_accounts else [m.account_id(account)]
        return [name for name in names if await m.logout(name)]

    removed = _run(work)
    if removed:
        _say(f"👋 Logged out: {', '.join(removed)}")
    else:
        _say("ℹ️  Nothing to log out: no tokens were stored")


@claude.command(name="export")
@_account_option
@click.option("--show-tokens", is_flag=True, help="Include the real tokens (keep the output secret!).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "claude-code"]),
    default="json",
    show_default=True,
    help="claude-code: the ~/.claude/.credentials.json layout (needs --show-tokens).",
)
def export_(account: str | None, show_tokens: bool, fmt: str) -> None:
    """Print the stored tokens; secrets are redacted unless --show-tokens."""
    if fmt == "claude-code" and not show_tokens:
        raise CLIError("--format claude-code prints usable tokens: add --show-tokens to confirm")
    record = _run(lambda m: m.load(account))
    if fmt == "claude-code":
        click.echo(json.dumps(record.tokens.to_claude_code(), indent=2))
        return
    data: dict[str, Any] = {"account": record.account, **record.tokens.public_view()}
    if show_tokens:
        data["access_token"] = record.tokens.access
        data["refresh_token"] = record.tokens.refresh
    click.echo(json.dumps(data, indent=2))
    if not show_tokens:
        _say("ℹ️  Tokens are redacted; add --show-tokens to export them.", err=True)


SHARED_REFRESH_WARNING = (
    "⚠️  This account now shares one refresh token with Claude Code. Anthropic's refresh "
    "tokens are single use: whichever of Claude Code and this proxy refreshes second is "
    "logged out (invalid_grant) and needs a new login. To avoid that, give the proxy its "
    "own login (`litellm claude login`) or a long-lived setup token (`claude setup-token`, "
    "then `litellm claude import --setup-token`), or import with --linked so the proxy "
    "refreshes through Claude Code's file and both keep working."
)
ARGV_TOKEN_WARNING = (
    "⚠️  A token given on the command line is kept in your shell history and visible in `ps`; "
    "pipe it in instead (`litellm claude import --setup-token < token.txt`) or set CLAUDE_SETUP_TOKEN."
)


class _Imported(NamedTuple):
    tokens: TokenSet
    origin: str
    # Set when the tokens came from a Claude Code credentials file on disk (linkable).
    claude_code_file: Path | None = None


@claude.command(name="import")
@click.argument("source", required=False, type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--setup-token",
    is_flag=False,
    flag_value="-",
    default=None,
    metavar="[-|TOKEN]",
    help="Import a `claude setup-token` token, read from CLAUDE_SETUP_TOKEN or stdin "
    "(a TOKEN value works but lands in your shell history).",
)
@click.option(
    "--linked",
    is_flag=True,
    help="Stay linked to Claude Code's credentials file: re-read it before each refresh and "
    "write refreshed tokens back, so Claude Code and the proxy both keep working.",
)
@_account_option
@click.option("--force", is_flag=True, help="Replace tokens already stored for the account.")
def import_(source: str | None, setup_token: str | None, linked: bool, account: str | None, force: bool) -> None:
    """Import tokens from Claude Code or a setup token.

    SOURCE is a Claude Code credentials file (default ~/.claude/.credentials.json, or
    CLAUDE_CODE_CREDENTIALS_FILE), a file written by `export --show-tokens`, or '-' for
    stdin. Without SOURCE or --setup-token, CLAUDE_CODE_OAUTH_TOKEN is used when set.
    """
    if linked and setup_token is not None:
        raise click.UsageError("--linked is for Claude Code's credentials file, not a setup token")
    imported = _read_import(source, setup_token, _settings())
    if linked and imported.claude_code_file is None:
        raise click.UsageError("--linked needs Claude Code's credentials file as SOURCE (not stdin or an export)")
    linked_path = str(imported.claude_code_file) if linked and imported.claude_code_file else None

    from .errors import NotLoggedInError

    async def work(m: TokenManager) -> str:
        name = m.account_id(account)
        if not force:
            try:
                await m.load(name)
            except NotLoggedInError:
                pass
            else:
                raise CLIError(f"account '{name}' already has tokens; add --force to replace them")
        await m.import_tokens(imported.tokens, name, linked_path=linked_path)
        return name

    name = _run(work)
    tokens = imported.tokens
    _say(f"✅ Imported tokens from {imported.origin} into account '{name}'")
    _say(f"   • Expires in: {_human_duration(tokens.expires_in())}")
    if tokens.refresh_token is None:
        _say("   • No refresh token: log in again (or make a new setup token) when it expires")
    elif linked_path is not None:
        _say(f"   • 🔗 Linked to {linked_path}: the proxy re-reads it before refreshing and writes")
        _say("     refreshed tokens back, so Claude Code and the proxy share one live refresh token.")
        _say("     The proxy needs read/write access to that file (same machine or a mounted volume).")
    elif imported.claude_code_file is not None or tokens.source == "claude-code":
        _say("\n" + SHARED_REFRESH_WARNING, err=True)


def _read_import(source: str | None, setup_token: str | None, settings: Settings) -> _Imported:
    from .claude_code import CredentialsFileError, read_credentials
    from .tokens import TokenSet

    def setup(raw: str, origin: str) -> _Imported:
        try:
            return _Imported(TokenSet.from_setup_token(raw), origin)
        except ValueError as exc:
            raise CLIError(str(exc)) from None

    if setup_token is not None:
        if setup_token != "-":
            _say(ARGV_TOKEN_WARNING, err=True)
            return setup(setup_token, "a setup token")
        if env_token := os.environ.get("CLAUDE_SETUP_TOKEN", "").strip():
            return setup(env_token, "CLAUDE_SETUP_TOKEN")
        if sys.stdin.isatty():
            return setup(click.prompt("Paste the setup token", hide_input=True), "a setup token")
        return setup(sys.stdin.read(), "a setup token (stdin)")
    if source is None and (env_token := os.environ.get("CLAUDE_CODE_OAUTH_TOKEN", "").strip()):
        return setup(env_token, "CLAUDE_CODE_OAUTH_TOKEN")
    if source == "-":
        return _parse_import(sys.stdin.read(), "stdin")
    path = Path(source).expanduser() if source else settings.claude_code_credentials_file
    try:
        text = path.read_text()
    except FileNotFoundError:
        if source is None:
            raise CLIError(
                f"cannot read {path}: no such file (Claude Code on macOS keeps its login in the Keychain; "
                "use `litellm claude login` or a setup token)"
            ) from None
        raise CLIError(f"cannot read {path}: no such file") from None
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror}") from None
    if '"claudeAiOauth"' in text:
        try:
            return _Imported(read_credentials(path), str(path), claude_code_file=path.resolve())
        except CredentialsFileError as exc:
            raise CLIError(str(exc)) from None
    return _parse_import(text, str(path))


def _parse_import(text: str, origin: str) -> _Imported:
    from pydantic import ValidationError

    from .tokens import TokenSet

    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise CLIError(f"{origin} is not JSON") from None
    if not isinstance(data, dict):
        raise CLIError(f"{origin} is not a credentials object")
    if "claudeAiOauth" in data:
        try:
            return _Imported(TokenSet.from_claude_code(data), origin)
        except (ValueError, TypeError):
            raise CLIError(f"{origin} has no usable claudeAiOauth tokens") from None
    access = data.get("access_token")
    # Only a real token: redaction gives "sk-ant-oat01-x…abcd" or, for short values, "****".
    if isinstance(access, str) and access.startswith("sk-ant-") and "…" not in access and "*" not in access:
        fields = {k: data.get(k) for k in TokenSet.model_fields if k in data}
        fields.update(expires_at=data.get("expires_at") or time.time() + 3600, source="import")
        try:
            return _Imported(TokenSet.model_validate(fields), origin)
        except ValidationError:
            raise CLIError(f"{origin} has no usable tokens") from None
    raise CLIError(f"{origin} has no tokens (redacted exports cannot be imported)")


_CONFIG_HELP = "Proxy config to compare (default: $LITELLM_CONFIG, else ./config.oauth.yaml when present)."


def _config_path(config: str | None) -> Path | None:
    from .models import resolve_config_path

    path, named = resolve_config_path(config)
    return path if named or path.exists() else None


@claude.command()
@_account_option
@click.option("--config", "config", default=None, metavar="PATH", help=_CONFIG_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models(account: str | None, config: str | None, as_json: bool) -> None:
    """List the models this account can use, and flag config entries it cannot.

    Asks Anthropic (GET /v1/models) with the account's own OAuth token, then checks
    every `api_key: claude-oauth…` deployment of the proxy config against that list.
    Exits 1 when a config entry names a model the account does not get.
    """
    from .models import models_report

    path = _config_path(config)
    report = _run(lambda m: models_report(m, account, path))
    if as_json:
        data = report.model_dump(mode="json")
        data["unserved"] = [c.model_dump(mode="json") for c in report.unserved]
        click.echo(json.dumps(data, indent=2))
    else:
        _print_models(report)
    if report.unserved:
        sys.exit(1)


def _print_models(report: ModelsReport) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Console(highlight=False, emoji=False)
    table = Table(title=f"Models for account '{report.account}' ({report.api_base})", title_justify="left")
    table.add_column("id", no_wrap=True)
    table.add_column("name")
    table.add_column("released")
    for m in report.models:
        table.add_row(m.id, m.display_name or "", (m.created_at or "")[:10])
    out.print(table)
    if report.config_path is None:
        _say("ℹ️  No proxy config compared (no ./config.oauth.yaml here); add --config PATH.")
        return
    if not report.config:
        _say(f"ℹ️  {report.config_path} has no `api_key: claude-oauth` deployments.")
        return
    checks = Table(title=f"claude-oauth deployments in {report.config_path}", title_justify="left")
    checks.add_column("model_name", no_wrap=True)
    checks.add_column("upstream id", no_wrap=True)
    checks.add_column("ok", no_wrap=True)
    checks.add_column("use instead", no_wrap=True)
    for c in report.config:
        checks.add_row(c.model_name, c.upstream_id, "✅" if c.served else "❌", "" if c.served else c.suggestion or "")
    out.print(checks)
    others = sorted({c.account for c in report.config if c.account not in (None, "pool", report.account)})
    if others:
        _say(f"ℹ️  Deployments of other accounts ({', '.join(others)}) were checked against '{report.account}''s list;")
        _say("   run again with --account NAME to check them against their own.")
    missing = report.unserved
    if missing:
        ids = ", ".join(sorted({c.upstream_id for c in missing}))
        _say(f"❌ {len(missing)} deployment(s) name models this account does not get: {ids}")
        _say(f"   Fix: change their `model:` in {report.config_path} to an id listed above, or remove them.")
    else:
        _say(f"✅ All {len(report.config)} claude-oauth deployments name models this account gets.")


_MARKS = {"pass": "✅", "warn": "⚠️ ", "fail": "❌", "skip": "➖"}


@claude.command()
@_account_option
@click.option("--config", "config", default=None, metavar="PATH", help=_CONFIG_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def doctor(account: str | None, config: str | None, as_json: bool) -> None:
    """Check everything a real account needs, with a fix for each failure; exit 1 on a failure.

    Store (reachable, decryptable, encrypted), Redis, access- and refresh-token
    lifetimes, the config's models against Anthropic's list, and one one-token
    request per model family in the config (it uses a little of the account's quota).
    """
    from .doctor import Check, run_doctor

    path = _config_path(config)

    def show(check: Check) -> None:
        _say(f"{_MARKS[check.status]} {check.name}: {check.detail}")
        if check.fix and check.status in ("fail", "warn"):
            _say(f"   fix: {check.fix}")

    if not as_json:
        _say("🩺 Claude OAuth doctor")
        _say(RULE)
    report = _run(lambda m: run_doctor(m, account=account, config_path=path, on_check=None if as_json else show))
    if as_json:
        click.echo(json.dumps({**report.model_dump(mode="json"), "ok": report.ok}, indent=2))
    else:
        counts = {s: sum(c.status == s for c in report.checks) for s in ("fail", "warn", "pass")}
        _say(RULE)
        _say(f"{counts['fail']} failed, {counts['warn']} warning(s), {counts['pass']} passed")
    if not report.ok:
        sys.exit(1)


@claude.command(name="rotate-key")
def rotate_key() -> None:
    """Re-encrypt every stored record with the current CLAUDE_TOKEN_ENCRYPTION_KEY."""
    count = _run(lambda m: m.store.rotate_keys())
    _say(f"🔑 Re-encrypted {count} record(s) with the current key")


def main(argv: list[str] | None = None) -> None:
    """The ``litellm`` console script."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "claude":
        claude.main(args=args[1:], prog_name="litellm claude")
        return
    from .litellm_api import run_proxy_cli

    run_proxy_cli(args, prog_name="litellm")


__all__ = ["CLIError", "ConfigurationError", "claude", "main"]
