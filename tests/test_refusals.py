"""Upstream refusals as the live service words them (sources per row), and the one line each becomes."""

from __future__ import annotations

import json

import pytest

from litellm_claude_oauth.refusals import Refusal, classify

TOKEN = "sk-ant-oat01-" + "A" * 40


def envelope(error_type: str, message: str) -> str:
    return json.dumps({"type": "error", "error": {"type": error_type, "message": message}})


QUOTA_HEADERS = {
    "anthropic-ratelimit-unified-status": "rejected",
    "anthropic-ratelimit-unified-5h-status": "rejected",
    "anthropic-ratelimit-unified-5h-reset": "1785360000",
    "retry-after": "3600",
}

# (source, status, headers, body, kind, retryable, ban_like, what the explanation must say)
CASES = [
    ("INTACT 2026-10-02 / raw-AI-SDK note 2026-08-25: headerless identity gate", 429, {},
     envelope("rate_limit_error", "Error"), "identity_gate", False, False, "identity system block"),
    ("claude-code #40515 (March 2026): the gate as a 400", 400, {},
     envelope("invalid_request_error", "Error"), "identity_gate", False, False, "identity system block"),
    ("claude-code #8046", 400, {},
     envelope("invalid_request_error",
              "This credential is only authorized for use with Claude Code and cannot be used for other API requests."),
     "claude_code_only", False, False, "Claude Code-shaped"),
    ("ex-machina #117 (2026-04-21)", 400, {},
     envelope("invalid_request_error",
              "You're out of extra usage. Add more at claude.ai/settings/usage and keep going."),
     "out_of_extra_usage", False, False, "not the plan's 5-hour/7-day limit"),
    ("ex-machina #117, curly apostrophe variant", 400, {},
     envelope("invalid_request_error", "You\u2019re out of extra usage. Add more at claude.ai/settings/usage."),
     "out_of_extra_usage", False, False, "billing classification"),
    ("claude-code #45911 (2026-04-09)", 400, {},
     envelope("invalid_request_error",
              "Third-party apps now draw from your extra usage, not your plan limits. We've added a $100 credit "
              "to get you started. Claim it at claude.ai/settings/usage and keep going."),
     "third_party_extra_usage", False, False, "third-party app"),
    ("lehdqlsl/opencode-claude-auth-sync #11: team wording", 400, {},
     envelope("invalid_request_error",
              "Third-party apps now draw from extra usage, not plan limits. We've added a credit to your "
              "organization to get you started. Ask your workspace admin to claim it and keep going."),
     "third_party_extra_usage", False, False, "third-party app"),
    ("Claude Code mockRateLimits.ts extra-usage-required: headerless 429", 429, {},
     envelope("rate_limit_error", "Extra usage is required for long context requests."),
     "long_context_extra_usage", False, False, "context-1m"),
    ("INTACT: 1M beta on a smaller model", 400, {},
     envelope("invalid_request_error", "The long context beta is not yet available for this subscription."),
     "long_context_unavailable", False, False, "context-1m"),
    ("manaflow-ai/subrouter PR #24 (2.1.191 bundle): fast mode", 429, {},
     envelope("rate_limit_error", "Usage credits are required for fast mode"),
     "usage_credits_required", False, False, "usage credits"),
    ("claude-code #78623: Fable", 429, {},
     envelope("rate_limit_error", "Usage credits are required for this model."),
     "usage_credits_required", False, False, "usage credits"),
    ("can1357/oh-my-pi #38", 403, {},
     envelope("permission_error",
              "OAuth token does not meet scope requirement any_of(user:inference, user:ccr_inference, "
              "user:voice, org:service_key_inference)"),
     "missing_scope", False, False, "litellm claude login"),
    ("claude-code #60648 (2026-05-19)", 400, {},
     envelope("invalid_request_error", "This organization has been disabled."),
     "org_disabled", False, True, "stop using this account"),
    ("claude-code #65714 (oauth_org_not_allowed)", 403, {},
     envelope("permission_error", "OAuth authentication is currently not allowed for this organization."),
     "org_disabled", False, True, "stop using this account"),
    ("Anthropic API errors: unknown model", 404, {},
     envelope("not_found_error", "model: claude-opus-4-6-20260205"),
     "model_not_found", False, False, "model claude-opus-4-6-20260205 is not available"),
    ("Anthropic API errors: 529", 529, {},
     envelope("overloaded_error", "Overloaded"), "overloaded", True, False, "overloaded"),
    ("overloaded_error on a 500 status", 500, {},
     envelope("overloaded_error", "Overloaded"), "overloaded", True, False, "overloaded"),
    ("claude-code #5983: missing oauth beta", 401, {},
     envelope("authentication_error", "OAuth authentication is currently not supported."),
     "oauth_unsupported", False, False, "oauth-2025-04-20"),
    ("claude-code #71670: transient throttling", 429, {"retry-after": "2"},
     envelope("rate_limit_error", "Rate limited"), "throttled", True, False, "not this account's usage limit"),
]


@pytest.mark.parametrize(
    ("source", "status", "headers", "body", "kind", "retryable", "ban_like", "says"), CASES, ids=[c[0] for c in CASES]
)
def test_classify(source: str, status: int, headers: dict[str, str], body: str, kind: str, retryable: bool,
                  ban_like: bool, says: str) -> None:
    for raw in (body, body.encode()):
        refusal = classify(status, headers, raw)
        assert refusal is not None
        assert (refusal.kind, refusal.status, refusal.retryable, refusal.ban_like) == (kind, status, retryable, ban_like)
        assert refusal.refresh_helps is False  # none of these is fixed by a new access token
        assert says in refusal.message
        assert "\n" not in refusal.message and refusal.message.startswith("Claude OAuth: ")
        original = json.loads(body)["error"]["message"]
        assert refusal.message.endswith(f'Anthropic said: "{original}"')  # Anthropic's text, after ours


@pytest.mark.parametrize(
    ("source", "status", "headers", "body"),
    [
        ("quota 429 with unified headers: ratelimit's call", 429, QUOTA_HEADERS,
         envelope("rate_limit_error", "This request would exceed your account's rate limit. Please try again later.")),
        ("'Error' on a 429 that carries unified headers is a quota answer, not the gate", 429, QUOTA_HEADERS,
         envelope("rate_limit_error", "Error")),
        ("claude-code #44259: expired token, refresh territory", 401, {},
         envelope("authentication_error",
                  "OAuth token has expired. Please obtain a new token or refresh your existing token.")),
        ("revoked token", 401, {}, envelope("authentication_error", "Invalid bearer token")),
        ("an ordinary bad request", 400, {}, envelope("invalid_request_error", "max_tokens: Field required")),
        ("a 404 for a path, not a model", 404, {}, envelope("not_found_error", "Not found")),
        ("success", 200, {}, '{"type":"message"}'),
        ("not JSON at all", 502, {}, "<html>Bad gateway</html>"),
    ],
)
def test_not_a_refusal(source: str, status: int, headers: dict[str, str], body: str) -> None:
    assert classify(status, headers, body) is None


def test_message_is_one_line_without_tokens() -> None:
    body = envelope(
        "invalid_request_error",
        f"This credential is only authorized for use with Claude Code.\n  Token {TOKEN} / Bearer {TOKEN[:20]}xyz",
    )
    refusal = classify(400, {}, body)
    assert refusal is not None
    assert TOKEN not in refusal.message and "A" * 20 not in refusal.message
    assert "sk-ant-oat01-[redacted]" in refusal.message and "Bearer [redacted]" in refusal.message
    assert "\n" not in refusal.message


def test_long_original_text_is_cut() -> None:
    refusal = classify(400, {}, envelope("invalid_request_error", "This organization has been disabled. " + "x" * 2000))
    assert refusal is not None and len(refusal.message) < 600 and refusal.message.endswith('…"')


def test_junk_bodies_never_raise() -> None:
    for body in (b"\xff\xfe\x00", "[]", '{"error": "Error"}', '{"error": {"type": 5, "message": null}}', "", "null"):
        for status in (400, 401, 403, 404, 429, 529):
            result = classify(status, {}, body)
            assert result is None or isinstance(result, Refusal)
    assert classify(529, {}, b"").kind == "overloaded"
    # A plain-text gate (a proxy that stripped the envelope) is still recognised.
    assert classify(429, {}, "Error").kind == "identity_gate"


def test_refusal_is_frozen() -> None:
    refusal = classify(529, {}, envelope("overloaded_error", "Overloaded"))
    with pytest.raises(ValueError):
        refusal.kind = "throttled"  # type: ignore[misc]
