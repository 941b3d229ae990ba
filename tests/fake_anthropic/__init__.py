"""Fake Anthropic OAuth + Messages API server for end-to-end tests."""

from .server import CLAUDE_CODE_SYSTEM, OAUTH_BETA, FakeAnthropic, RecordedRequest, s256

__all__ = ["CLAUDE_CODE_SYSTEM", "OAUTH_BETA", "FakeAnthropic", "RecordedRequest", "s256"]
