"""The plugin's error types.

Every error a user can hit carries a message that is safe to print as one line: it
never contains a token, a key or a verifier.
"""

from __future__ import annotations


class ClaudeOAuthError(Exception):
    """Base class; ``str(exc)`` is the user-facing message."""


class ConfigError(ClaudeOAuthError):
    """An environment variable is missing or malformed."""


class TokenStoreError(ClaudeOAuthError):
    """The token store cannot be read or written; nothing was changed."""


class DecryptionError(TokenStoreError):
    """Stored tokens cannot be decrypted with the configured key(s)."""


class LoginStateError(ClaudeOAuthError):
    """The pasted code does not belong to a pending login (unknown, reused, expired, mismatched)."""


class OAuthError(ClaudeOAuthError):
    """Anthropic's OAuth endpoint refused or failed a request."""

    def __init__(self, message: str, *, status_code: int | None = None, error: str | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.error = error


class InvalidGrantError(OAuthError):
    """The code or refresh token was rejected for good (expired, revoked, reused)."""


class RateLimitedError(OAuthError):
    def __init__(self, message: str, *, retry_after: float | None = None, status_code: int | None = 429):
        super().__init__(message, status_code=status_code, error="rate_limited")
        self.retry_after = retry_after


class NotLoggedInError(ClaudeOAuthError):
    def __init__(self, account: str):
        super().__init__(
            f"No Claude account is logged in for '{account}'. Run `litellm claude login"
            + ("" if account == "default" else f" --account {account}")
            + "` first."
        )
        self.account = account


class ReloginRequiredError(ClaudeOAuthError):
    def __init__(self, account: str, reason: str = "the refresh token was rejected"):
        super().__init__(
            f"Claude account '{account}' needs a new login ({reason}). Run `litellm claude login"
            + ("" if account == "default" else f" --account {account}")
            + "`."
        )
        self.account = account
        self.reason = reason
