"""The plugin's error types.

Every error a user can hit carries a message that is safe to print as one line: it
never contains a token, a key or a verifier.

Each class names the HTTP status an admin route (or the hook) answers with, so callers
read ``exc.http_status`` instead of re-mapping classes:

=======================  ====  ================================================
ConfigError              503   the proxy is misconfigured, not the request
TokenStoreError          503   store unreachable/unreadable; nothing changed
DecryptionError          503   (a TokenStoreError) key missing or record altered
LoginStateError          400   the pasted code does not match a pending login
OAuthError               502   Anthropic's token endpoint failed or refused
InvalidGrantError        400   the code / refresh token is dead for good
RateLimitedError         429   token endpoint said slow down (``retry_after``)
NotLoggedInError         404   no such account in the store
ReloginRequiredError     409   the account exists but needs a browser login
UpstreamRefusal          502   default; the instance's ``status`` is what to send
=======================  ====  ================================================

404/409 rather than 401 for the two account states: a 401 would tell an API client
that *its own* proxy key is wrong, which it is not.
"""

from __future__ import annotations

from typing import ClassVar


class ClaudeOAuthError(Exception):
    """Base class; ``str(exc)`` is the user-facing message."""

    http_status: ClassVar[int] = 500


class RetryLater(ClaudeOAuthError):
    """Base for "nothing is wrong with the request, try again later" errors.

    ``retry_after`` is in seconds, or None when the server gave no hint.
    """

    http_status: ClassVar[int] = 429
    retry_after: float | None = None

    def retry_after_header(self) -> dict[str, str]:
        """``{"Retry-After": "<whole seconds>"}`` when known, else ``{}``."""
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(0, int(self.retry_after + 0.999)))}


class ConfigError(ClaudeOAuthError):
    """An environment variable is missing or malformed."""

    http_status: ClassVar[int] = 503


class TokenStoreError(ClaudeOAuthError):
    """The token store cannot be read or written; nothing was changed."""

    http_status: ClassVar[int] = 503


class DecryptionError(TokenStoreError):
    """Stored tokens cannot be decrypted with the configured key(s)."""


class LoginStateError(ClaudeOAuthError):
    """The pasted code does not belong to a pending login (unknown, reused, expired, mismatched)."""

    http_status: ClassVar[int] = 400


class OAuthError(ClaudeOAuthError):
    """Anthropic's OAuth endpoint refused or failed a request.

    ``reached_server`` says whether Anthropic may have seen the request. The token client
    sets it False only when the request provably never left this machine (connection
    refused, connect timeout): then a code or refresh token is still unspent and may be
    sent again. After a read timeout or a dropped connection it is True, because Anthropic
    may already have consumed a single-use credential. When a raiser gives neither it nor
    ``status_code``, it is False (what ``status_code is None`` used to mean).
    """

    http_status: ClassVar[int] = 502

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error: str | None = None,
        reached_server: bool | None = None,
    ):
        super().__init__(message)
        self.status_code = status_code
        self.error = error
        # Unless the raiser says otherwise: an HTTP status means Anthropic answered.
        self.reached_server = (status_code is not None) if reached_server is None else reached_server


class InvalidGrantError(OAuthError):
    """The code or refresh token was rejected for good (expired, revoked, reused)."""

    http_status: ClassVar[int] = 400


class RateLimitedError(OAuthError, RetryLater):
    """Anthropic's token endpoint answered 429."""

    http_status: ClassVar[int] = 429

    def __init__(self, message: str, *, retry_after: float | None = None, status_code: int | None = 429):
        super().__init__(message, status_code=status_code, error="rate_limited", reached_server=True)
        self.retry_after = retry_after


class NotLoggedInError(ClaudeOAuthError):
    http_status: ClassVar[int] = 404

    def __init__(self, account: str):
        super().__init__(
            f"No Claude account is logged in for '{account}'. Run `litellm claude login"
            + ("" if account == "default" else f" --account {account}")
            + "` first."
        )
        self.account = account


class ReloginRequiredError(ClaudeOAuthError):
    http_status: ClassVar[int] = 409

    def __init__(self, account: str, reason: str = "the refresh token was rejected"):
        super().__init__(
            f"Claude account '{account}' needs a new login ({reason}). Run `litellm claude login"
            + ("" if account == "default" else f" --account {account}")
            + "`."
        )
        self.account = account
        self.reason = reason


class UpstreamRefusal(ClaudeOAuthError):
    """Anthropic's Messages API refused a request for a reason the client must be told.

    ``status`` is the upstream HTTP status to pass on (e.g. 400 "out of extra usage",
    403 scope error); the message is one line saying what it means. Never retried.
    """

    http_status: ClassVar[int] = 502

    def __init__(self, status: int, message: str, *, kind: str | None = None):
        super().__init__(" ".join(message.split()))
        self.status = status
        self.kind = kind
