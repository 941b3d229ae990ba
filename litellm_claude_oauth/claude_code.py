"""Claude Code's credentials file (``~/.claude/.credentials.json``): read it, and stay linked to it.

Anthropic's refresh tokens are single use: a refresh returns a new one and kills the
old one. Two programs holding copies of the same refresh token therefore log each
other out: whichever refreshes second gets ``invalid_grant``. A *linked* account
avoids that by treating Claude Code's file as the shared source of truth:

* before refreshing, the plugin re-reads the file (:meth:`LinkedCredentials.before_refresh`);
  if Claude Code has rotated the tokens since, the plugin adopts them instead of
  spending its own, now dead, refresh token;
* after refreshing, it writes the new tokens back (:meth:`LinkedCredentials.after_refresh`),
  so Claude Code's next refresh uses the live refresh token.

The file is Claude Code's, so writes keep every key we do not own (``mcpOAuth``,
``rateLimitTier``, …), replace the file atomically (never a half-written file, even
if the process is killed), and keep it private (mode 0600).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .atomic import write_atomically
from .errors import ClaudeOAuthError
from .tokens import TokenSet

log = logging.getLogger(__name__)

DEFAULT_CREDENTIALS_FILE = Path("~/.claude/.credentials.json")
OAUTH_KEY = "claudeAiOauth"
# Fields Claude Code's file does not carry; a linked account keeps them from its own record.
_ACCOUNT_FIELDS = ("account_uuid", "account_email", "organization_uuid", "organization_name")


class CredentialsFileError(ClaudeOAuthError):
    """Claude Code's credentials file is missing, unreadable or not in Claude Code's format."""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CredentialsFileError(
            f"{path} does not exist (Claude Code on macOS keeps its login in the Keychain, not in this file)"
        ) from None
    except OSError as exc:
        raise CredentialsFileError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise CredentialsFileError(f"{path} is not valid JSON") from None
    if not isinstance(data, dict):
        raise CredentialsFileError(f"{path} is not a JSON object")
    return data


def read_credentials(path: Path | str) -> TokenSet:
    """The token set in a Claude Code credentials file (``expiresAt`` there is in milliseconds)."""
    path = Path(path).expanduser()
    data = _read_json(path)
    if not isinstance(data.get(OAUTH_KEY), dict):
        raise CredentialsFileError(f"{path} has no {OAUTH_KEY} entry (is Claude Code logged in?)")
    if not data[OAUTH_KEY].get("accessToken"):
        raise CredentialsFileError(f"{path} has no {OAUTH_KEY}.accessToken (is Claude Code logged in?)")
    try:
        return TokenSet.from_claude_code(data)
    except ValidationError as exc:
        # Name the fields, never echo their values: they may be tokens.
        fields = ", ".join(sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]})) or "?"
        raise CredentialsFileError(f"{path} has unusable {OAUTH_KEY} fields ({fields})") from None
    except (ValueError, TypeError):
        raise CredentialsFileError(f"{path} has unusable {OAUTH_KEY} fields (expiresAt must be milliseconds)") from None


def write_back(path: Path | str, tokens: TokenSet) -> None:
    """Store ``tokens`` in Claude Code's file, keeping every other key, atomically, mode 0600.

    A file that exists but is not valid JSON is left untouched (it raises): it may
    hold something we would otherwise destroy. A missing file is created.
    """
    # Write through a symlink to its target: replacing the link itself would detach it.
    path = Path(path).expanduser().resolve()
    try:
        doc = _read_json(path)
    except CredentialsFileError:
        if path.exists():
            raise
        doc = {}
    oauth = doc.get(OAUTH_KEY)
    oauth = dict(oauth) if isinstance(oauth, dict) else {}
    oauth["accessToken"] = tokens.access
    oauth["refreshToken"] = tokens.refresh
    oauth["expiresAt"] = int(tokens.expires_at * 1000)
    if tokens.scope:
        oauth["scopes"] = tokens.scope.split()
    else:
        oauth.setdefault("scopes", [])
    if tokens.subscription_type:
        oauth["subscriptionType"] = tokens.subscription_type
    doc[OAUTH_KEY] = oauth
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(path, json.dumps(doc, indent=2).encode())


class LinkedCredentials:
    """An account whose tokens are shared with Claude Code through its credentials file.

    The manager calls :meth:`before_refresh` under its refresh lock, before spending
    the refresh token, and :meth:`after_refresh` once the refreshed tokens are saved
    in its own store. Neither raises for file trouble: the plugin's store stays the
    authority for the proxy, and a broken link is logged, not fatal.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path).expanduser()

    def __repr__(self) -> str:
        return f"LinkedCredentials({str(self.path)!r})"

    async def before_refresh(self, current: TokenSet) -> TokenSet | None:
        """Claude Code's token set if it rotated since ``current`` was stored, else None.

        The caller should use the returned set as is when its access token is still
        fresh, and refresh with *its* refresh token otherwise.
        """
        try:
            theirs = await asyncio.to_thread(read_credentials, self.path)
        except CredentialsFileError as exc:
            log.warning("linked Claude Code credentials unavailable, refreshing with our own token: %s", exc)
            return None
        if theirs.access == current.access and theirs.refresh == current.refresh:
            return None
        if theirs.refresh == current.refresh and theirs.expires_at <= current.expires_at:
            return None  # same grant, not newer
        if theirs.refresh is None and current.refresh is not None:
            return None  # a file without a refresh token is a dead end, not an update
        log.info("Claude Code refreshed the linked tokens in %s; adopting them", self.path)
        carried = {name: getattr(current, name) for name in _ACCOUNT_FIELDS if getattr(current, name) is not None}
        if current.subscription_type and not theirs.subscription_type:
            carried["subscription_type"] = current.subscription_type
        return theirs.model_copy(update=carried)

    async def after_refresh(self, new: TokenSet) -> None:
        """Write the tokens the plugin just refreshed back into Claude Code's file."""
        if not self.path.exists():
            # Claude Code logged out (or the file moved): do not log it back in behind its back.
            log.warning("linked Claude Code credentials %s are gone; not recreating them", self.path)
            return
        try:
            await asyncio.to_thread(write_back, self.path, new)
        except (CredentialsFileError, OSError) as exc:
            log.error(
                "could not write refreshed tokens back to %s (Claude Code will need a new login): %s",
                self.path,
                exc if isinstance(exc, CredentialsFileError) else type(exc).__name__,
            )


__all__ = [
    "DEFAULT_CREDENTIALS_FILE",
    "CredentialsFileError",
    "LinkedCredentials",
    "read_credentials",
    "write_back",
]
