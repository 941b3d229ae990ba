"""``litellm claude …``: log in, inspect and manage Claude OAuth tokens.

Also home of :func:`main`, the ``litellm`` console script: ``litellm claude …`` runs
the group below, anything else is handed untouched to LiteLLM's own ``run_server``.
Nothing here imports LiteLLM, so the ``claude`` commands start fast.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sys
import time
import webbrowser
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from .errors import ClaudeOAuthError, ConfigError
from .manager import AccountStatus, TokenManager
from .settings import Settings, validate_account_id
from .tokens import TokenSet

T = TypeVar("T")
RULE = "=" * 60
CLAUDE_CODE_CREDENTIALS = Path("~/.claude/.credentials.json")


def _console(stderr: bool = False) -> Console:
    # soft_wrap keeps long URLs on one line so they copy-paste intact.
    return Console(highlight=False, soft_wrap=True, stderr=stderr, emoji=False)


def _fail(message: str, code: int = 1) -> None:
    _console(stderr=True).print(f"Error: {message}", markup=False)
    sys.exit(code)


def _run(work: Callable[[TokenManager], Coroutine[Any, Any, T]]) -> T:
    """Build the manager from the environment, run one async job, close it, map errors to exit codes."""

    async def go() -> T:
        manager = TokenManager.from_settings(Settings.from_env())
        try:
            return await work(manager)
        finally:
            await manager.aclose()

    try:
        return asyncio.run(go())
    except ConfigError as exc:
        _fail(f"configuration: {exc}", 2)
    except ClaudeOAuthError as exc:
        _fail(str(exc))
    raise AssertionError("unreachable")


def _account_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    def check(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return validate_account_id(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    return click.option(
        "--account",
        default=None,
        callback=check,
        help="Account id (default: $USER_ID or 'default').",
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
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


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
    start = _run(lambda m: m.start_login(account))
    if as_json:
        click.echo(json.dumps(start.model_dump(mode="json")))
        return
    out = _console()
    out.print("🔐 Starting Claude OAuth authentication...")
    out.print(RULE)
    if start.account != "default":
        out.print(f"\n👤 Account: {start.account}")
    out.print("\n📋 Authorization URL generated! Open it in your browser:\n")
    out.print(start.authorization_url, markup=False)
    if not no_browser and _open_browser(start.authorization_url):
        out.print("\n🌐 Opening browser...")
    settings = Settings.from_env()
    out.print(f"\n{RULE}")
    out.print("📝 After authorization, you'll be redirected to:")
    out.print(f"   {settings.redirect_uri}", markup=False)
    out.print("\n⚠️  Copy the code shown there (CODE#STATE), or the whole redirect URL")
    out.print(f"   (this login expires in {settings.login_state_ttl_seconds // 60} minutes)")
    account_flag = "" if start.account == settings.default_account else f" --account {start.account}"
    if code_prompt is None:
        code_prompt = sys.stdin.isatty()
    if not code_prompt:
        out.print("\n💡 Then run:")
        out.print(f"   litellm claude callback <CODE>{account_flag}", markup=False)
        out.print(RULE)
        return
    out.print(RULE)
    pasted = click.prompt("📥 Paste the code here (Enter to finish later)", default="", show_default=False)
    if not pasted.strip():
        out.print(f"💡 Finish later with: litellm claude callback <CODE>{account_flag}", markup=False)
        return
    _complete(pasted, state=None, account=start.account)


def _open_browser(url: str) -> bool:
    # In a container or over SSH there is no browser; webbrowser then returns False.
    if os.environ.get("CI") or not (os.environ.get("DISPLAY") or sys.platform in ("darwin", "win32")):
        return False
    try:
        return webbrowser.open(url)
    except webbrowser.Error:
        return False


def _complete(code: str, *, state: str | None, account: str | None) -> None:
    record = _run(lambda m: m.complete_login(code, state=state, account=account))
    out = _console()
    who = record.tokens.account_email or record.account
    out.print(f"✅ Logged in to Claude as {who} (account '{record.account}')", markup=False)
    out.print(f"   • Expires in: {_human_duration(record.tokens.expires_in())}")
    out.print("   The proxy picks the new tokens up on its next request; no restart needed.")


# Codes are base64url and may start with '-': only long options here, and unknown
# option-looking words are taken as the code.
@claude.command(context_settings={"ignore_unknown_options": True, "help_option_names": ["--help"]})
@click.argument("code")
@click.option("--state", default=None, help="The login's state, if not part of CODE (CODE#STATE).")
@_account_option
def callback(code: str, state: str | None, account: str | None) -> None:
    """Finish a login with the CODE from the redirect page (CODE#STATE, bare code, or the URL)."""
    _complete(code, state=state, account=account)


@claude.command()
@_account_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(account: str | None, as_json: bool) -> None:
    """Show whether the tokens are valid, when they expire and where they are stored.

    Without --account, every stored account is shown. Exits 1 when an account shown
    is not logged in, expired without a way to refresh, or needs a new login.
    """

    async def collect(m: TokenManager) -> list[AccountStatus]:
        if account is not None:
            return [await m.status(account)]
        try:
            names = await m.accounts()
        except ClaudeOAuthError as exc:
            return [AccountStatus(account=m.settings.default_account, logged_in=False, store=m.store.location,
                                  encrypted=m.store.encrypted, error=str(exc))]
        return [await m.status(name) for name in names or [m.settings.default_account]]

    statuses = _run(collect)
    if as_json:
        click.echo(json.dumps({"accounts": [s.model_dump(mode="json") for s in statuses]}, indent=2))
    else:
        _print_status(statuses)
    if any(not s.logged_in or s.error or s.relogin_reason or (not s.valid and not s.refreshable) for s in statuses):
        sys.exit(1)


def _print_status(statuses: list[AccountStatus]) -> None:
    out = _console()
    out.print("🔍 Claude OAuth Status")
    out.print(RULE)
    first = statuses[0]
    out.print(f"{'✅' if first.logged_in else 'ℹ️ '} Using tokens from: {first.store}", markup=False)
    out.print(f"🔒 Encryption: {'on (AES-256-GCM)' if first.encrypted else 'OFF: set CLAUDE_TOKEN_ENCRYPTION_KEY'}")
    for s in statuses:
        out.print(f"\n📊 Token Status{'' if len(statuses) == 1 and s.account == 'default' else f' ({s.account})'}:")
        if s.error:
            out.print(f"   • Status: ❌ Error: {s.error}", markup=False)
            continue
        if not s.logged_in:
            flag = "" if s.account == "default" else f" --account {s.account}"
            out.print("   • Status: ❌ Not logged in", markup=False)
            out.print(f"   • Run: litellm claude login{flag}", markup=False)
            continue
        if s.relogin_reason:
            label = f"❌ Re-login required ({s.relogin_reason})"
        elif s.valid:
            label = "✅ Valid"
        else:
            label = "⚠️  Expired (refreshes on next use)" if s.refreshable else "❌ Expired"
        out.print(f"   • Status: {label}", markup=False)
        assert s.expires_in_seconds is not None and s.expires_at is not None
        if s.expires_in_seconds > 0:
            out.print(f"   • Expires in: {_human_duration(s.expires_in_seconds)} ({_when(s.expires_at)})")
        else:
            out.print(f"   • Expired: {_human_duration(s.expires_in_seconds)} ago ({_when(s.expires_at)})")
        if s.account_email:
            out.print(f"   • Account: {s.account_email}", markup=False)
        if s.organization_name:
            out.print(f"   • Organization: {s.organization_name}", markup=False)
        if s.cooldown_until is not None:
            out.print(
                f"   • ⏳ Cooling down: {s.cooldown_reason or 'rate limited'}, resets in "
                f"{_human_duration(s.cooldown_until - time.time())} ({_when(s.cooldown_until)})",
                markup=False,
            )
        if s.source and s.source != "oauth":
            out.print(f"   • Source: {s.source}{'' if s.refreshable else ' (cannot be refreshed)'}")


@claude.command()
@_account_option
def refresh(account: str | None) -> None:
    """Refresh the access token now (rotating the refresh token if Anthropic does)."""
    tokens = _run(lambda m: m.force_refresh(account))
    out = _console()
    out.print("🔄 Token refreshed")
    out.print(f"   • Expires in: {_human_duration(tokens.expires_in())}")


@claude.command()
@_account_option
@click.option("--all", "all_accounts", is_flag=True, help="Log out every stored account.")
def logout(account: str | None, all_accounts: bool) -> None:
    """Delete the stored tokens (the proxy stops using them)."""

    async def work(m: TokenManager) -> list[str]:
        names = await m.accounts() if all_accounts else [m.account_id(account)]
        return [name for name in names if await m.logout(name)]

    removed = _run(work)
    out = _console()
    if removed:
        out.print(f"👋 Logged out: {', '.join(removed)}", markup=False)
    else:
        out.print("ℹ️  Nothing to log out: no tokens were stored")


@claude.command(name="export")
@_account_option
@click.option("--show-tokens", is_flag=True, help="Include the real tokens (keep the output secret!).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "claude-code"]),
    default="json",
    show_default=True,
    help="claude-code: the ~/.claude/.credentials.json layout (implies --show-tokens).",
)
def export_(account: str | None, show_tokens: bool, fmt: str) -> None:
    """Print the stored tokens; secrets are redacted unless --show-tokens."""
    record = _run(lambda m: m.load(account))
    if fmt == "claude-code":
        if not show_tokens:
            _fail("--format claude-code prints usable tokens: add --show-tokens to confirm")
        click.echo(json.dumps(record.tokens.to_claude_code(), indent=2))
        return
    data: dict[str, Any] = {"account": record.account, **record.tokens.public_view()}
    if show_tokens:
        data["access_token"] = record.tokens.access
        data["refresh_token"] = record.tokens.refresh
    click.echo(json.dumps(data, indent=2))
    if not show_tokens:
        _console(stderr=True).print("ℹ️  Tokens are redacted; add --show-tokens to export them.")


@claude.command(name="import")
@click.argument("source", required=False, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--setup-token", default=None, help="A `claude setup-token` token (or '-' to read it from stdin).")
@_account_option
@click.option("--force", is_flag=True, help="Replace tokens already stored for the account.")
def import_(source: str | None, setup_token: str | None, account: str | None, force: bool) -> None:
    """Import tokens from Claude Code or a setup token.

    SOURCE is a Claude Code credentials file (default ~/.claude/.credentials.json), a
    file written by `export --show-tokens`, or '-' for stdin. Without SOURCE or
    --setup-token, CLAUDE_CODE_OAUTH_TOKEN is used when set.
    """
    try:
        tokens, origin = _read_import(source, setup_token)
    except ValueError as exc:
        _fail(str(exc))
        return

    async def work(m: TokenManager) -> str:
        name = m.account_id(account)
        if not force and await m.store.load(name) is not None:
            raise ClaudeOAuthError(f"account '{name}' already has tokens; add --force to replace them")
        await m.import_tokens(tokens, name)
        return name

    name = _run(work)
    out = _console()
    out.print(f"✅ Imported tokens from {origin} into account '{name}'", markup=False)
    out.print(f"   • Expires in: {_human_duration(tokens.expires_in())}")
    if tokens.refresh_token is None:
        out.print("   • No refresh token: log in again (or make a new setup token) when it expires")


def _read_import(source: str | None, setup_token: str | None) -> tuple[TokenSet, str]:
    if setup_token is not None:
        raw = sys.stdin.read() if setup_token == "-" else setup_token
        return TokenSet.from_setup_token(raw), "a setup token"
    if source is None and (env_token := os.environ.get("CLAUDE_CODE_OAUTH_TOKEN", "").strip()):
        return TokenSet.from_setup_token(env_token), "CLAUDE_CODE_OAUTH_TOKEN"
    if source == "-":
        text, origin = sys.stdin.read(), "stdin"
    else:
        path = Path(source).expanduser() if source else CLAUDE_CODE_CREDENTIALS.expanduser()
        try:
            text, origin = path.read_text(), str(path)
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"{origin} is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError(f"{origin} is not a credentials object")
    if "claudeAiOauth" in data:
        return TokenSet.from_claude_code(data), origin
    if isinstance(data.get("access_token"), str) and not data["access_token"].count("…"):
        expires_at = data.get("expires_at") or time.time() + 3600
        fields = {k: data.get(k) for k in TokenSet.model_fields if k in data}
        fields.update(expires_at=expires_at, source="import")
        try:
            return TokenSet.model_validate(fields), origin
        except ValueError:
            raise ValueError(f"{origin} has no usable tokens") from None
    raise ValueError(f"{origin} has no tokens (redacted exports cannot be imported)")


@claude.command(name="rotate-key")
def rotate_key() -> None:
    """Re-encrypt every stored record with the current CLAUDE_TOKEN_ENCRYPTION_KEY."""
    count = _run(lambda m: m.store.rotate_keys())
    _console().print(f"🔑 Re-encrypted {count} record(s) with the current key")


def main(argv: list[str] | None = None) -> None:
    """The ``litellm`` console script."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "claude":
        claude.main(args=args[1:], prog_name="litellm claude")
        return
    from litellm.proxy.proxy_cli import run_server

    run_server.main(args=args, prog_name="litellm")


__all__ = ["claude", "main"]
