"""Fake Anthropic OAuth + Messages API server for end-to-end tests (strict like the live service by default)."""

from .oauth_state import CLIENT_ID, OAuthState, s256
from .server import CLAUDE_CODE_SYSTEM, OAUTH_BETA, REFUSALS, FakeAnthropic, RecordedRequest

__all__ = ["CLAUDE_CODE_SYSTEM", "CLIENT_ID", "OAUTH_BETA", "REFUSALS", "FakeAnthropic", "OAuthState", "RecordedRequest", "s256"]
