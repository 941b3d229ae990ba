"""Unified rate-limit headers as the live service sends them, and the cooldown each 429 earns.

Header sets are public captures, named per row:

* HERMES_LIVE: ``dkbjornn/hermes-agent`` ``tests/agent/test_unified_usage_headers.py``,
  "Captured verbatim from a live api.anthropic.com/v1/messages response on an OAuth (Max
  plan) credential" (200).
* HERMES_5H_FULL: same repo, ``tests/agent/test_unified_overage_flag.py``, "Captured verbatim
  from a live api.anthropic.com response on a Max plan at the moment the 5-hour bucket
  filled" (5h rejected, 7d allowed, overage-reset ~2 days after the 5h reset).
* CLANKERMUX_FABLE: ``d4rken/clankermux`` ``packages/proxy/src/handlers/__tests__/
  unified-claim-headers.test.ts``, "The production 429 headers of 2026-08-02T15:36:28Z,
  verbatim" (7d_oi rejected, 5h/7d with headroom, overage rejected, claim
  seven_day_overage_included, retry-after 51811).
* CLANKERMUX_MIXED: same repo, ``anthropic-quota-incident.fixture.ts``, "Claude-1's mixed
  quota rejection, 2026-09-07T19:47:06.554Z" (5h AND 7d_oi rejected; the overall reset and
  retry-after point at the Fable window).
* CCUSAGE_200: a "live POST /v1/messages" of 2026-07-27 quoted in a CCUsageStats design
  spec (overage rejected with ``org_level_disabled`` on an ordinary 200).

Derived rows change one or two values of a capture and say so.
"""

from __future__ import annotations

import timeit

import httpx
import pytest

from litellm_claude_oauth.ratelimit import (
    DEFAULT_COOLDOWN_SECONDS,
    Cooldown,
    RateLimitState,
    claim_family,
    cooldown_for_429,
    model_family,
    window_family,
)

U = "anthropic-ratelimit-unified-"

HERMES_LIVE = {
    "anthropic-organization-id": "8eddcea0-e06f-4f23-86db-8dcd6db0d9d3",
    U + "5h-reset": "1785360000",
    U + "5h-status": "allowed",
    U + "5h-utilization": "0.27",
    U + "7d-reset": "1785384000",
    U + "7d-status": "allowed",
    U + "7d-utilization": "0.42",
    U + "fallback-percentage": "0.5",
    U + "overage-reset": "1785542400",
    U + "overage-status": "allowed",
    U + "overage-utilization": "0.0",
    U + "representative-claim": "five_hour",
    U + "reset": "1785360000",
    U + "status": "allowed",
}
HERMES_NOW = 1785350000.0  # a little before the 5h reset

HERMES_5H_FULL = {
    U + "5h-reset": "1785360000",
    U + "5h-status": "rejected",
    U + "5h-surpassed-threshold": "1.0",
    U + "5h-utilization": "1.0",
    U + "7d-reset": "1785384000",
    U + "7d-status": "allowed",
    U + "7d-utilization": "0.51",
    U + "fallback-percentage": "0.5",
    U + "overage-in-use": "true",
    U + "overage-reset": "1785542400",
    U + "overage-status": "allowed",
    U + "overage-utilization": "0.0",
    U + "representative-claim": "five_hour",
    U + "reset": "1785360000",
    U + "status": "rejected",
    U + "upgrade-paths": "overage",
}

CLANKERMUX_FABLE = {
    U + "5h-reset": "1785685200",
    U + "5h-status": "allowed",
    U + "5h-utilization": "0.0",
    U + "7d-reset": "1785736800",
    U + "7d-status": "allowed_warning",
    U + "7d-surpassed-threshold": "0.75",
    U + "7d-utilization": "0.94",
    U + "7d_oi-reset": "1785736800",
    U + "7d_oi-status": "rejected",
    U + "7d_oi-surpassed-threshold": "1.0",
    U + "7d_oi-utilization": "1.0",
    U + "fallback-percentage": "0.5",
    U + "overage-disabled-reason": "org_level_disabled",
    U + "overage-status": "rejected",
    U + "representative-claim": "seven_day_overage_included",
    U + "reset": "1785736800",
    U + "status": "rejected",
    "retry-after": "51811",
    "x-should-retry": "true",
}
CLANKERMUX_FABLE_NOW = 1785684988.613

CLANKERMUX_MIXED = {
    "content-type": "application/json",
    U + "5h-reset": "1788822000",
    U + "5h-status": "rejected",
    U + "5h-utilization": "1.01",
    U + "7d-reset": "1789282800",
    U + "7d-status": "allowed",
    U + "7d-utilization": "0.55",
    U + "7d_oi-reset": "1789282800",
    U + "7d_oi-status": "rejected",
    U + "7d_oi-utilization": "1.0",
    U + "representative-claim": "seven_day_overage_included",
    U + "reset": "1789282800",
    U + "status": "rejected",
    U + "overage-disabled-reason": "org_level_disabled",
    "retry-after": "472373",
    "x-should-retry": "true",
}
CLANKERMUX_MIXED_NOW = 1788810426.554

CCUSAGE_200 = {
    U + "5h-reset": "1785182400",
    U + "5h-status": "allowed",
    U + "5h-utilization": "0.01",
    U + "7d-reset": "1785751200",
    U + "7d-status": "allowed",
    U + "7d-utilization": "0.0",
    U + "fallback-percentage": "0.5",
    U + "overage-disabled-reason": "org_level_disabled",
    U + "overage-status": "rejected",
    U + "representative-claim": "five_hour",
    U + "reset": "1785182400",
    U + "status": "allowed",
}

QUOTA_BODY = (
    '{"type":"error","error":{"type":"rate_limit_error",'
    '"message":"This request would exceed your account\'s rate limit. Please try again later."}}'
)


def _with(base: dict[str, str], changes: dict[str, str | None]) -> dict[str, str]:
    """A capture with headers changed or (None) removed; names without "retry-after" are unified suffixes."""
    headers = dict(base)
    for suffix, value in changes.items():
        name = suffix if suffix == "retry-after" else U + suffix
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return headers


# ---------------------------------------------------------------- parsing


def test_live_200_parses_every_family() -> None:
    state = RateLimitState.from_headers(HERMES_LIVE, HERMES_NOW)
    assert state is not None
    assert (state.status, state.reset, state.representative_claim) == ("allowed", 1785360000.0, "five_hour")
    assert [w.name for w in state.windows] == ["5h", "7d"]
    five, seven = state.windows
    assert (five.status, five.reset, five.utilization) == ("allowed", 1785360000.0, 0.27)
    assert (seven.status, seven.reset, seven.utilization) == ("allowed", 1785384000.0, 0.42)
    assert five.seconds_until_reset(HERMES_NOW) == 10000.0
    assert not five.model_scoped and five.model_family is None
    assert state.overage.status == "allowed" and state.overage.reset == 1785542400.0
    assert state.overage.utilization == 0.0 and state.overage.in_use is None
    assert state.fallback_percentage == 0.5
    assert state.retry_at is None and state.upgrade_paths == ()


def test_5h_full_capture_parses_overage_and_upgrade_paths() -> None:
    state = RateLimitState.from_headers(HERMES_5H_FULL, HERMES_NOW)
    assert state is not None and state.rejected
    assert state.window("5h").rejected and state.window("5h").surpassed_threshold == 1.0
    assert not state.window("7d").rejected
    assert state.overage.in_use is True
    assert state.upgrade_paths == ("overage",)


def test_model_scoped_window_is_parsed_with_its_family() -> None:
    state = RateLimitState.from_headers(CLANKERMUX_FABLE, CLANKERMUX_FABLE_NOW)
    assert state is not None
    assert [w.name for w in state.windows] == ["5h", "7d", "7d_oi"]
    fable = state.window("7d_oi")
    assert fable.model_scoped and fable.model_family == "fable"
    assert (fable.status, fable.utilization, fable.surpassed_threshold) == ("rejected", 1.0, 1.0)
    assert state.window("7d").status == "allowed_warning" and state.window("7d").surpassed_threshold == 0.75
    assert [w.name for w in state.model_windows] == ["7d_oi"]
    assert [w.name for w in state.account_windows] == ["5h", "7d"]
    assert state.claim_family == "fable"
    assert state.overage.status == "rejected" and state.overage.disabled_reason == "org_level_disabled"
    assert state.retry_at == CLANKERMUX_FABLE_NOW + 51811


def test_future_scoped_windows_and_header_case() -> None:
    headers = {
        "Anthropic-Ratelimit-Unified-7d_Sonnet-Status": "Allowed",
        "ANTHROPIC-RATELIMIT-UNIFIED-7D_SONNET-UTILIZATION": "0.3",
        U + "7d_opus-status": "rejected",
        U + "7d_zephyr-status": "allowed",
        U + "7d_oauth_apps-status": "allowed",
    }
    state = RateLimitState.from_headers(headers, 0)
    assert state is not None
    families = {w.name: w.model_family for w in state.windows}
    assert families == {"7d_oauth_apps": None, "7d_opus": "opus", "7d_sonnet": "sonnet", "7d_zephyr": "zephyr"}
    assert state.window("7d_sonnet").status == "allowed" and state.window("7d_sonnet").utilization == 0.3


def test_httpx_headers_work_as_well_as_dicts() -> None:
    state = RateLimitState.from_headers(httpx.Headers(CLANKERMUX_FABLE), CLANKERMUX_FABLE_NOW)
    assert state == RateLimitState.from_headers(CLANKERMUX_FABLE, CLANKERMUX_FABLE_NOW)


def test_no_unified_header_means_no_state() -> None:
    assert RateLimitState.from_headers({}, 0) is None
    assert RateLimitState.from_headers({"retry-after": "30", "anthropic-ratelimit-requests-limit": "50"}, 0) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0.27", 0.27),  # the wire's 0..1 (every capture above)
        ("1.01", 1.0),  # just past a limit (CLANKERMUX_MIXED), clamped
        ("42.5", 0.425),  # percent, as /api/oauth/usage speaks
        ("100", 1.0),
        ("-0.1", None),
        ("nan", None),
        ("0.94x", None),
        ("", None),
    ],
)
def test_utilization_is_a_fraction(raw: str, expected: float | None) -> None:
    state = RateLimitState.from_headers({U + "5h-utilization": raw}, 0)
    assert state is not None and state.window("5h").utilization == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1785360000", 1785360000.0),
        ("1785360000000", 1785360000.0),  # milliseconds
        ("2026-07-29T21:20:00Z", 1785360000.0),
        ("Wed, 29 Jul 2026 21:20:00 GMT", 1785360000.0),
        ("99999999999999999999", None),
        ("soon", None),
        ("-5", None),
    ],
)
def test_reset_formats(raw: str, expected: float | None) -> None:
    state = RateLimitState.from_headers({U + "reset": raw}, 0)
    assert state is not None and state.reset == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("30", 1030.0), ("0", 1000.0), ("Thu, 01 Jan 1970 00:20:00 GMT", 1200.0), ("-3", None), ("later", None)],
)
def test_retry_after_seconds_or_http_date(raw: str, expected: float | None) -> None:
    state = RateLimitState.from_headers({U + "status": "rejected", "retry-after": raw}, 1000.0)
    assert state is not None and state.retry_at == expected


def test_junk_values_are_dropped_one_by_one() -> None:
    headers = _with(
        HERMES_5H_FULL,
        {"5h-reset": "tomorrow", "7d-utilization": "lots", "overage-in-use": "maybe", "fallback-percentage": "x"},
    )
    headers[U + "banana-status"] = "rejected"  # not a window name
    headers[U + "5h-colour"] = "red"
    state = RateLimitState.from_headers(headers, HERMES_NOW)
    assert state is not None
    assert state.window("5h").reset is None and state.window("5h").status == "rejected"
    assert state.window("7d").utilization is None and state.window("7d").reset == 1785384000.0
    assert state.overage.in_use is None and state.fallback_percentage is None
    assert [w.name for w in state.windows] == ["5h", "7d"]
    # With the 5h reset gone the rest falls back to the representative reset.
    assert cooldown_for_429(headers, "", HERMES_NOW) == Cooldown(until=1785360000.0, reason="rate limited (five_hour)")


# ---------------------------------------------------------------- the cooldown decision

ACCOUNT, NONE = "account", "none"

DECISIONS = [
    # (source, headers, body, now, expected until, expected family or ACCOUNT / NONE)
    ("HERMES_5H_FULL: 5h rejected, 7d allowed -> the 5h reset", HERMES_5H_FULL, QUOTA_BODY, HERMES_NOW,
     1785360000.0, ACCOUNT),
    ("HERMES_5H_FULL with overage rejected, overage-reset 2 days out, 7d reset far out: still the 5h reset",
     _with(HERMES_5H_FULL, {"overage-status": "rejected", "overage-in-use": "false", "7d-reset": "1785900000"}),
     QUOTA_BODY, HERMES_NOW, 1785360000.0, ACCOUNT),
    ("HERMES_5H_FULL + retry-after beyond the reset (account-wide claim): the later one",
     _with(HERMES_5H_FULL, {"retry-after": "20000"}), QUOTA_BODY, HERMES_NOW, HERMES_NOW + 20000, ACCOUNT),
    ("HERMES_5H_FULL with 7d rejected too: the later (7d) reset",
     _with(HERMES_5H_FULL, {"7d-status": "rejected", "representative-claim": "seven_day", "reset": "1785384000"}),
     QUOTA_BODY, HERMES_NOW, 1785384000.0, ACCOUNT),
    ("CLANKERMUX_FABLE: only 7d_oi rejected, 5h/7d with headroom -> Fable only, until the 7d_oi reset",
     CLANKERMUX_FABLE, '{"type":"error","error":{"type":"rate_limit_error","message":"rate limited"}}',
     CLANKERMUX_FABLE_NOW, 1785736800.0, "fable"),
    ("CLANKERMUX_MIXED: 5h and 7d_oi rejected -> account until the 5h reset, not retry-after/overall (Fable's)",
     CLANKERMUX_MIXED, "", CLANKERMUX_MIXED_NOW, 1788822000.0, ACCOUNT),
    ("derived: 7d_opus rejected with 5h/7d allowed -> opus only",
     _with(HERMES_LIVE, {"status": "rejected", "representative-claim": "seven_day_opus", "reset": "1785900000",
                        "7d_opus-status": "rejected", "7d_opus-reset": "1785900000"}),
     QUOTA_BODY, HERMES_NOW, 1785900000.0, "opus"),
    ("derived: overall rejected, claim seven_day_sonnet, no scoped window header -> sonnet, representative reset",
     _with(HERMES_LIVE, {"status": "rejected", "representative-claim": "seven_day_sonnet", "reset": "1785900000"}),
     QUOTA_BODY, HERMES_NOW, 1785900000.0, "sonnet"),
    ("derived: scoped rejection without any usable reset -> retry-after, still scoped",
     _with(CLANKERMUX_FABLE, {"reset": None, "7d_oi-reset": None}), "", CLANKERMUX_FABLE_NOW,
     CLANKERMUX_FABLE_NOW + 51811, "fable"),
    ("derived: overall rejected only (no window statuses), claim five_hour -> representative reset",
     {U + "status": "rejected", U + "reset": "1785360000", U + "representative-claim": "five_hour",
      U + "7d-reset": "1785900000"},
     QUOTA_BODY, HERMES_NOW, 1785360000.0, ACCOUNT),
    ("derived: retry-after with a rejection and no reset -> retry-after",
     {U + "status": "rejected", "retry-after": "120"}, QUOTA_BODY, HERMES_NOW, HERMES_NOW + 120, ACCOUNT),
    ("derived: overall rejected with an overage claim (period reset 2 days out) -> short rest only",
     {U + "status": "rejected", U + "representative-claim": "overage", U + "reset": "1785542400",
      U + "overage-status": "rejected", U + "overage-reset": "1785542400", "retry-after": "192400"},
     QUOTA_BODY, HERMES_NOW, HERMES_NOW + DEFAULT_COOLDOWN_SECONDS, ACCOUNT),
    ("derived (CLIProxyAPI overage-only shape): overall rejected, 5h/7d allowed, overage rejected -> short rest",
     _with(HERMES_LIVE, {"status": "rejected", "representative-claim": None, "reset": "1785542400",
                         "overage-status": "rejected"}),
     QUOTA_BODY, HERMES_NOW, HERMES_NOW + DEFAULT_COOLDOWN_SECONDS, ACCOUNT),
    ("derived: 7d_opus rejected while the claim is five_hour -> opus only, named by its window",
     _with(HERMES_LIVE, {"status": "rejected", "7d_opus-status": "rejected", "7d_opus-reset": "1785900000"}),
     QUOTA_BODY, HERMES_NOW, 1785900000.0, "opus"),
    ("derived: rejected window whose reset already passed -> short rest",
     {U + "5h-status": "rejected", U + "5h-reset": "1785300000"}, QUOTA_BODY, HERMES_NOW,
     HERMES_NOW + DEFAULT_COOLDOWN_SECONDS, ACCOUNT),
    ("audit L11: windows with resets but no status are not rejected (overall allowed): not quota",
     _with(HERMES_LIVE, {"5h-status": None, "7d-status": None}), "", HERMES_NOW, None, NONE),
    ("audit L11: same with the quota body: a short rest, never until a status-less window's reset",
     _with(HERMES_LIVE, {"5h-status": None, "7d-status": None}), QUOTA_BODY, HERMES_NOW,
     HERMES_NOW + DEFAULT_COOLDOWN_SECONDS, ACCOUNT),
    ("audit L11: 7d reset without a status next to a rejected 5h does not stretch the rest",
     _with(HERMES_5H_FULL, {"7d-status": None}), QUOTA_BODY, HERMES_NOW, 1785360000.0, ACCOUNT),
    ("CCUSAGE_200 shape on a 429: overage rejected alone never rests the account",
     CCUSAGE_200, '{"type":"error","error":{"type":"rate_limit_error","message":"Rate limited"}}',
     1785180000.0, None, NONE),
    ("HERMES_LIVE on a 429 'Rate limited': status allowed -> transient, not quota",
     _with(HERMES_LIVE, {"retry-after": "5"}), '{"type":"error","error":{"type":"rate_limit_error","message":"Rate limited"}}',
     HERMES_NOW, None, NONE),
    ("derived: no rejection in headers but the quota body -> short rest (retry-after)",
     _with(HERMES_LIVE, {"status": None, "retry-after": "90"}), QUOTA_BODY, HERMES_NOW, HERMES_NOW + 90, ACCOUNT),
    ("identity gate: headerless 429 'Error' (INTACT 2026-10-02) -> not quota",
     {"content-type": "application/json"},
     '{"type":"error","error":{"type":"rate_limit_error","message":"Error"}}', HERMES_NOW, None, NONE),
    ("headerless 429 'Extra usage is required for long context requests.' -> not quota",
     {}, '{"type":"error","error":{"type":"rate_limit_error",'
     '"message":"Extra usage is required for long context requests."}}', HERMES_NOW, None, NONE),
    ("retry-after only, no unified header -> not quota",
     {"retry-after": "17"}, QUOTA_BODY, HERMES_NOW, None, NONE),
    ("529 overloaded (no unified headers) -> not quota",
     {"x-should-retry": "true"}, '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
     HERMES_NOW, None, NONE),
]


@pytest.mark.parametrize(("source", "headers", "body", "now", "until", "scope"), DECISIONS, ids=[d[0] for d in DECISIONS])
def test_cooldown_for_429(source: str, headers: dict[str, str], body: str, now: float, until: float | None,
                          scope: str) -> None:
    cooldown = cooldown_for_429(headers, body, now)
    if scope == NONE:
        assert cooldown is None
        return
    assert cooldown is not None
    assert cooldown.until == pytest.approx(until)
    assert cooldown.model_family == (None if scope == ACCOUNT else scope)
    assert cooldown.reason.startswith("rate limited (")
    if scope not in (ACCOUNT, NONE):
        assert cooldown.reason.endswith(f"; {scope} models only)") and "five_hour" not in cooldown.reason


def test_family_cooldown_covers_only_its_models() -> None:
    cooldown = cooldown_for_429(CLANKERMUX_FABLE, "", CLANKERMUX_FABLE_NOW)
    assert cooldown is not None
    assert cooldown.reason == "rate limited (seven_day_overage_included; fable models only)"
    assert cooldown.covers("claude-fable-5-1") and cooldown.covers("anthropic/claude-fable-5[1m]")
    assert not cooldown.covers("claude-opus-5-5") and not cooldown.covers(None)
    account = cooldown_for_429(HERMES_5H_FULL, "", HERMES_NOW)
    assert account is not None and account.covers("claude-opus-5-5") and account.covers(None)
    assert account.retry_after(HERMES_NOW) == 10000


# ---------------------------------------------------------------- families


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("claude-opus-4-8", "opus"),
        ("anthropic/claude-sonnet-5-5", "sonnet"),
        ("claude-3-5-haiku-20241022", "haiku"),
        ("claude-fable-5-1", "fable"),
        ("claude-fable-5[1m]", "fable"),
        ("claude-mythos-5", "mythos"),
        ("anthropic.claude-3-5-sonnet-20240620-v1:0", "sonnet"),
        ("Claude-Opus-4-1-20250805", "opus"),
        ("claude-instant-1.2", "instant"),
    ],
)
def test_model_family(model: str, family: str) -> None:
    assert model_family(model) == family


@pytest.mark.parametrize(
    ("name", "family"),
    [("5h", None), ("7d", None), ("7d_opus", "opus"), ("7d_sonnet", "sonnet"), ("7d_oi", "fable"),
     ("5h_oi", "fable"), ("7d_oauth_apps", None), ("7d_nova", "nova")],
)
def test_window_family(name: str, family: str | None) -> None:
    assert window_family(name) == family


@pytest.mark.parametrize(
    ("claim", "family"),
    [("five_hour", None), ("seven_day", None), ("overage", None), (None, None), ("seven_day_opus", "opus"),
     ("seven_day_sonnet", "sonnet"), ("seven_day_overage_included", "fable"), ("seven_day_oauth_apps", None)],
)
def test_claim_family(claim: str | None, family: str | None) -> None:
    assert claim_family(claim) == family


def test_parse_cost_is_small() -> None:
    """It runs on every response later: keep it within ~100x of copying the headers into a dict."""
    headers = {**CLANKERMUX_FABLE, "content-type": "application/json", "request-id": "req_1", "server": "cloudflare"}
    parse = min(timeit.repeat(lambda: RateLimitState.from_headers(headers, 0.0), number=200, repeat=3)) / 200
    trivial = min(timeit.repeat(lambda: {k.lower(): v for k, v in headers.items()}, number=200, repeat=3)) / 200
    assert parse < 100 * trivial and parse < 0.001
