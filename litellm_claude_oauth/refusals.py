"""Upstream refusals that are neither an expired token nor the account's quota, named in one line.

The Messages API answers OAuth traffic with a handful of refusals that look like auth or
rate-limit errors but are not fixed by refreshing the token or resting the account
(research/protocol-2026.md §2.2, §2.3, §4.C7, §4.D4). :func:`classify` names them so the
hook can pass them on with a clear message instead of refreshing, cooling down or walking
the pool. A quota 429 (one with ``anthropic-ratelimit-unified-*`` headers) is not a refusal:
:mod:`.ratelimit` decides those. Texts and their sources:

* identity gate: headerless ``429 rate_limit_error "Error"`` (``400`` before April 2026) for
  non-Haiku models without the Claude Code identity block (INTACT 2026-10-02; claude-code #40515)
* ``400 "This credential is only authorized for use with Claude Code and cannot be used for
  other API requests."`` (claude-code #8046)
* ``400 "You're out of extra usage. Add more at claude.ai/settings/usage and keep going."``
  and ``"Third-party apps now draw from your extra usage, not your plan limits. …"``
  (claude-code #45911, ex-machina #117)
* headerless 429 ``"Extra usage is required for long context requests."``, ``400 "The long
  context beta is not yet available for this subscription"`` (Claude Code mockRateLimits.ts; INTACT)
* ``"Usage credits are required for fast mode"`` / ``"… for this model."`` (claude-code #78623)
* ``403 permission_error "OAuth token does not meet scope requirement …"`` (oh-my-pi #38)
* ``400 "This organization has been disabled."`` (claude-code #60648), ``403 "OAuth
  authentication is currently not allowed for this organization."`` (claude-code #65714)
* ``404 not_found_error "model: <id>"``; ``529 overloaded_error``
* ``401 "OAuth authentication is currently not supported."``: a missing ``oauth-2025-04-20`` beta
* headerless ``429 "Rate limited"``: server throttling, "not your usage limit" (claude-code #71670)
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict

from .ratelimit import PREFIX as _UNIFIED_PREFIX

RefusalKind = Literal[
    "identity_gate",
    "claude_code_only",
    "out_of_extra_usage",
    "third_party_extra_usage",
    "long_context_extra_usage",
    "long_context_unavailable",
    "usage_credits_required",
    "missing_scope",
    "org_disabled",
    "model_not_found",
    "overloaded",
    "oauth_unsupported",
    "throttled",
]


class Refusal(BaseModel):
    """What an upstream error means. ``message`` is one line, token-free, ending with Anthropic's own text."""

    model_config = ConfigDict(frozen=True)

    kind: RefusalKind
    status: int
    message: str
    retryable: bool = False  # the same request may succeed later, unchanged
    ban_like: bool = False  # the account itself is refused: stop using it, tell a human
    refresh_helps: bool = False  # a refreshed access token could fix it


_TOKEN = re.compile(r"(sk-ant-[a-z0-9]+-)[A-Za-z0-9_\-]+|(bearer\s+)\S+", re.IGNORECASE)
_MODEL = re.compile(r"\bmodel:\s*([A-Za-z0-9._:/\[\]@-]+)")
_ORIGINAL_LIMIT = 300

# (kind, lower-case text the message contains, what it means to the operator); first match wins.
_BY_TEXT: tuple[tuple[RefusalKind, str, str], ...] = (
    ("oauth_unsupported", "oauth authentication is currently not supported",
     "the request lacked the anthropic-beta oauth-2025-04-20 header; refreshing the token will not help"),
    ("org_disabled", "not allowed for this organization",
     "this account's organization does not allow subscription (OAuth) access; stop using this account"),
    ("org_disabled", "organization has been disabled",
     "Anthropic has disabled this account's organization; stop using this account and check claude.ai"),
    ("claude_code_only", "only authorized for use with claude code",
     "Anthropic accepts this subscription credential only for Claude Code-shaped requests "
     "(identity system block first)"),
    ("out_of_extra_usage", "out of extra usage",
     "Anthropic billed this request as extra usage and the account has none left; "
     "this is billing classification, not the plan's 5-hour/7-day limit"),
    ("third_party_extra_usage", "apps now draw from",  # "…from your extra usage" / "…from extra usage"
     "Anthropic classified this request as a third-party app, which draws from extra usage, "
     "not plan limits; enable or top up extra usage at claude.ai/settings/usage"),
    ("long_context_extra_usage", "extra usage is required for long context",
     "long-context (1M) requests need extra usage on this account; send a shorter request "
     "or drop the context-1m beta"),
    ("long_context_unavailable", "long context beta is not yet available",
     "this subscription has no long-context (1M) access for this model; drop the context-1m beta"),
    ("usage_credits_required", "usage credits are required",
     "this model or mode runs on usage credits on this plan and the account has none; "
     "choose another model or add credits at claude.ai"),
    ("missing_scope", "does not meet scope requirement",
     "the stored token lacks the scope this call needs; log in again with `litellm claude login`"),
)


def _error(body: bytes | str) -> tuple[str | None, str]:
    """(``error.type``, ``error.message``) of Anthropic's JSON envelope, or (None, the raw text)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        data = json.loads(text)
    except ValueError:
        return None, text.strip()
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        kind, message = error.get("type"), error.get("message")
        return (kind if isinstance(kind, str) else None), (message if isinstance(message, str) else "")
    return None, text.strip()


def _one_line(explanation: str, original: str) -> str:
    said = " ".join(original.split())
    if len(said) > _ORIGINAL_LIMIT:
        said = said[: _ORIGINAL_LIMIT - 1] + "…"
    line = f"Claude OAuth: {explanation}." + (f' Anthropic said: "{said}"' if said else "")
    return _TOKEN.sub(lambda m: (m.group(1) or m.group(2)) + "[redacted]", line)


def _has_unified_headers(headers: Mapping[str, str]) -> bool:
    return any(key.lower().startswith(_UNIFIED_PREFIX) for key in headers)


def classify(status: int, headers: Mapping[str, str], body: bytes | str) -> Refusal | None:
    """The refusal an error response is, or None: a success, an expired/invalid token (refresh
    territory), a quota 429 (see :func:`.ratelimit.cooldown_for_429`) or an error we do not know.
    """
    if status < 400:
        return None
    error_type, original = _error(body)
    lowered = original.lower()

    def refusal(kind: RefusalKind, explanation: str, **flags: bool) -> Refusal:
        return Refusal(kind=kind, status=status, message=_one_line(explanation, original), **flags)

    if status == 529 or error_type == "overloaded_error":
        return refusal("overloaded", "Anthropic is overloaded (not this account's limit); retry shortly",
                       retryable=True)
    for kind, text, explanation in _BY_TEXT:
        if text in lowered:
            return refusal(kind, explanation, ban_like=kind == "org_disabled")
    if status == 401:
        return None  # expired / revoked / unknown token: the refresh path decides
    if status == 404 and (match := _MODEL.search(original)):  # Anthropic says "model: <id>"
        return refusal("model_not_found",
                       f"model {match.group(1)} is not available to this account; run `litellm claude models`")
    if status in (400, 429) and lowered.strip(" .") == "error" and not _has_unified_headers(headers):
        return refusal("identity_gate",
                       "this model needs the Claude Code identity system block as the whole first system "
                       "entry (Haiku is exempt); check CLAUDE_CODE_SYSTEM_PROMPT and that the caller's "
                       "system prompt does not merge into it")
    if status == 429 and lowered.strip(" .") == "rate limited" and not _has_unified_headers(headers):
        return refusal("throttled", "Anthropic is throttling requests right now (not this account's usage "
                       "limit); retry shortly", retryable=True)
    return None
