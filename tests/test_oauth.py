import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx

from litellm_claude_oauth import __version__, errors, pkce
from litellm_claude_oauth.errors import InvalidGrantError, OAuthError, RateLimitedError
from litellm_claude_oauth.oauth import OAuthClient, build_authorize_url, parse_authorization_input
from litellm_claude_oauth.settings import Settings
from litellm_claude_oauth.tokens import DAY, TokenSet

from .conftest import TOKEN_URL, FakeTokenEndpoint


def settings(**env: str) -> Settings:
    return Settings.from_env({"CLAUDE_OAUTH_TOKEN_URL": TOKEN_URL, **env})


def test_authorize_url_has_exactly_the_parameters_the_service_requires() -> None:
    # protocol-2026 §2.1: code=true, client_id, response_type, redirect_uri, scope,
    # code_challenge, S256, state; the page says "Invalid request format" without code=true
    # or with a state shorter than 43 characters.
    s = settings()
    verifier, state = pkce.generate_code_verifier(), pkce.generate_state()
    url = build_authorize_url(s, code_challenge=pkce.create_s256_code_challenge(verifier), state=state)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://claude.ai/oauth/authorize"
    query = parse_qs(parts.query, strict_parsing=True)
    assert all(len(v) == 1 for v in query.values())
    assert {k: v[0] for k, v in query.items()} == {
        "code": "true",
        "client_id": "9d1c250a-e61b-44d9-88ed-5944d1962f5e",
        "response_type": "code",
        "redirect_uri": "https://platform.claude.com/oauth/code/callback",
        "scope": "user:profile user:inference user:sessions:claude_code user:mcp_servers user:file_upload",
        "code_challenge": pkce.create_s256_code_challenge(verifier),
        "code_challenge_method": "S256",
        "state": state,
    }
    assert len(state) == 43


def test_authorize_url_takes_the_pending_logins_redirect() -> None:
    url = build_authorize_url(
        settings(), code_challenge="CH", state="ST", redirect_uri="http://localhost:54545/callback"
    )
    assert parse_qs(urlsplit(url).query)["redirect_uri"] == ["http://localhost:54545/callback"]


@pytest.mark.parametrize(
    ("pasted", "expected"),
    [
        ("abc123#st4te", ("abc123", "st4te")),
        ("  abc123  ", ("abc123", None)),
        ("https://console.anthropic.com/oauth/code/callback?code=ABC123&state=XYZ789", ("ABC123", "XYZ789")),
        ("https://console.anthropic.com/oauth/code/callback?code=ABC123#XYZ", ("ABC123", "XYZ")),
        ("'abc#def'", ("abc", "def")),
        ("code=ABC123&state=XYZ789", ("ABC123", "XYZ789")),
        ("?code=ABC123&state=XYZ789", ("ABC123", "XYZ789")),
        ("state=XYZ789&code=ABC123", ("ABC123", "XYZ789")),
        ("code=ABC123", ("ABC123", None)),
        ("code=ABC123#XYZ", ("ABC123", "XYZ")),
        ("https://platform.claude.com/oauth/code/callback?code=-ab_C1&state=S", ("-ab_C1", "S")),
        ("-abc123#st", ("-abc123", "st")),
        ("-", ("-", None)),
        ("abc123#", ("abc123", None)),
    ],
)
def test_parse_what_people_paste(pasted: str, expected: tuple[str, str | None]) -> None:
    assert parse_authorization_input(pasted) == expected


@pytest.mark.parametrize(
    "pasted", ["", "   ", "https://x/cb?state=1", "two words", "code=&state=S", "code=a b&state=S"]
)
def test_unusable_pastes_are_rejected(pasted: str) -> None:
    with pytest.raises(ValueError):
        parse_authorization_input(pasted)


async def test_exchange_body_is_exactly_as_specified(token_endpoint: FakeTokenEndpoint) -> None:
    s = settings()
    token_endpoint.codes["the-code"] = ("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "the-state")
    client = OAuthClient(s)
    tokens = await client.exchange_code(
        code="the-code", state="the-state", code_verifier="dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    )
    assert token_endpoint.bodies == [
        {
            "grant_type": "authorization_code",
            "code": "the-code",
            "state": "the-state",
            "client_id": s.client_id,
            "redirect_uri": s.redirect_uri,
            "code_verifier": "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
        }
    ]
    assert tokens.access.startswith("sk-ant-oat01-") and tokens.refresh and tokens.refresh.startswith("sk-ant-ort01-")
    assert tokens.account_email == "person@example.com" and tokens.organization_name == "Example Org"
    assert 3590 < tokens.expires_in() <= 3600
    # No refresh_token_expires_in in the answer: login time + CLAUDE_OAUTH_REFRESH_TOKEN_DAYS.
    assert tokens.refresh_expires_at is not None
    assert abs(tokens.refresh_expires_at - (time.time() + 30 * DAY)) < 60
    await client.aclose()


async def test_exchange_repeats_the_pending_logins_redirect_uri(token_endpoint: FakeTokenEndpoint) -> None:
    # Login started by a process with another CLAUDE_OAUTH_REDIRECT_URI: the exchange must
    # repeat the authorize request's value, not this process's setting.
    token_endpoint.codes["c"] = (pkce.create_s256_code_challenge("v" * 43), "st")
    await OAuthClient(settings()).exchange_code(
        code="c", state="st", code_verifier="v" * 43, redirect_uri="https://console.anthropic.com/oauth/code/callback"
    )
    assert token_endpoint.bodies[0]["redirect_uri"] == "https://console.anthropic.com/oauth/code/callback"


async def test_refresh_token_lifetime_from_the_answer_and_configured_default(token_endpoint: FakeTokenEndpoint) -> None:
    s = settings(CLAUDE_OAUTH_REFRESH_TOKEN_DAYS="10")
    token_endpoint.codes["c"] = (pkce.create_s256_code_challenge("v" * 43), "st")
    tokens = await OAuthClient(s).exchange_code(code="c", state="st", code_verifier="v" * 43)
    assert tokens.refresh_expires_at is not None and abs(tokens.refresh_expires_at - (time.time() + 10 * DAY)) < 60
    refreshed = await OAuthClient(s).refresh(tokens)
    assert refreshed.refresh_expires_at == tokens.refresh_expires_at  # refreshing does not extend it


@respx.mock
async def test_refresh_token_expires_in_is_recorded() -> None:
    respx.post(TOKEN_URL).mock(
        return_value=httpx.Response(
            200,
            json={
                "access_token": "sk-ant-oat01-n",
                "refresh_token": "sk-ant-ort01-n",
                "refresh_token_expires_in": 2497155,
            },
        )
    )
    tokens = await OAuthClient(settings()).refresh(
        TokenSet.from_token_response({"access_token": "a", "refresh_token": "r"})
    )
    assert tokens.refresh_expires_at is not None and abs(tokens.refresh_expires_at - (time.time() + 2497155)) < 60


@respx.mock
async def test_malformed_expires_in_is_an_oauth_error() -> None:
    respx.post(TOKEN_URL).mock(
        return_value=httpx.Response(200, json={"access_token": "sk-ant-oat01-n", "expires_in": "soon"})
    )
    with pytest.raises(OAuthError, match="malformed expires_in"):
        await OAuthClient(settings()).refresh(TokenSet.from_token_response({"access_token": "a", "refresh_token": "r"}))


@respx.mock
@pytest.mark.parametrize("user_agent", [None, "acme-gateway/3.1"])
async def test_token_requests_say_honestly_who_they_are(user_agent: str | None) -> None:
    route = respx.post(TOKEN_URL).mock(return_value=httpx.Response(200, json={"access_token": "sk-ant-oat01-x"}))
    s = settings(**({"CLAUDE_OAUTH_USER_AGENT": user_agent} if user_agent else {}))
    await OAuthClient(s).refresh(TokenSet.from_token_response({"access_token": "a", "refresh_token": "r"}))
    headers = route.calls.last.request.headers
    assert headers["user-agent"] == (user_agent or f"litellm-claude-oauth/{__version__}")
    assert headers["accept"] == "application/json" and headers["content-type"] == "application/json"
    assert not any(h.startswith("x-stainless") for h in headers)


async def test_refresh_body_and_rotation(token_endpoint: FakeTokenEndpoint) -> None:
    first = TokenSet.from_token_response(token_endpoint.issue())
    client = OAuthClient(settings())
    second = await client.refresh(first)
    assert token_endpoint.bodies == [
        {"grant_type": "refresh_token", "refresh_token": first.refresh, "client_id": settings().client_id}
    ]
    assert second.refresh != first.refresh and second.access != first.access
    # Identity fields survive a refresh response that omits them.
    assert second.account_email == first.account_email
    with pytest.raises(InvalidGrantError):
        await client.refresh(first)  # the rotated-out refresh token is dead


async def test_refresh_without_rotation_keeps_old_refresh_token(token_endpoint: FakeTokenEndpoint) -> None:
    token_endpoint.rotate = False
    first = TokenSet.from_token_response(token_endpoint.issue())
    second = await OAuthClient(settings()).refresh(first)
    assert second.refresh == first.refresh and second.access != first.access


@respx.mock
async def test_rate_limit_surfaces_retry_after() -> None:
    respx.post(TOKEN_URL).mock(return_value=httpx.Response(429, headers={"retry-after": "17"}, json={}))
    first = TokenSet.from_token_response({"access_token": "a", "refresh_token": "r", "expires_in": 1})
    with pytest.raises(RateLimitedError) as info:
        await OAuthClient(settings()).refresh(first)
    assert info.value.retry_after == 17 and info.value.reached_server
    assert info.value.retry_after_header() == {"Retry-After": "17"}
    assert isinstance(info.value, errors.RetryLater) and info.value.http_status == 429


@respx.mock
@pytest.mark.parametrize(
    ("status", "body", "shown"),
    [
        (403, "error code: 1010", "error code: 1010"),
        (429, "error code: 1015\n<html>too many</html>", "error code: 1015 <html>too many</html>"),
        (
            403,
            '{"type":"error","error":{"type":"permission_error","message":"browser_signature_banned"}}',
            "browser_signature_banned",
        ),
    ],
)
async def test_edge_refusals_show_their_body(status: int, body: str, shown: str) -> None:
    respx.post(TOKEN_URL).mock(return_value=httpx.Response(status, text=body))
    first = TokenSet.from_token_response({"access_token": "a", "refresh_token": "sk-ant-ort01-r", "expires_in": 1})
    with pytest.raises(OAuthError) as info:
        await OAuthClient(settings()).refresh(first)
    message = str(info.value)
    assert shown in message and f"litellm-claude-oauth/{__version__}" in message and "\n" not in message


@respx.mock
async def test_error_bodies_are_truncated_and_token_free() -> None:
    echo = "refused sk-ant-ort01-secretrefresh and sk-ant-oat01-other " + "x" * 500
    respx.post(TOKEN_URL).mock(return_value=httpx.Response(403, text=echo))
    first = TokenSet.from_token_response({"access_token": "a", "refresh_token": "sk-ant-ort01-secretrefresh"})
    with pytest.raises(OAuthError) as info:
        await OAuthClient(settings()).refresh(first)
    message = str(info.value)
    assert "secretrefresh" not in message and "sk-ant-oat01-other" not in message and "[redacted]" in message
    assert "x" * 200 not in message and len(message) < 450


@respx.mock
async def test_a_code_echoed_in_an_error_is_redacted() -> None:
    respx.post(TOKEN_URL).mock(
        return_value=httpx.Response(
            400, json={"error": "invalid_request", "error_description": "bad code the-code-123"}
        )
    )
    with pytest.raises(OAuthError) as info:
        await OAuthClient(settings()).exchange_code(code="the-code-123", state="s", code_verifier="v" * 43)
    assert "the-code-123" not in str(info.value) and info.value.status_code == 400


@respx.mock
async def test_token_url_list_falls_through_404_and_errors_before_sending() -> None:
    respx.post("http://gone/token").mock(return_value=httpx.Response(404))
    respx.post("http://down/token").mock(side_effect=httpx.ConnectError("refused"))
    respx.post("http://slow/token").mock(side_effect=httpx.ConnectTimeout("no SYN-ACK"))
    respx.post("http://old/token").mock(return_value=httpx.Response(405))
    good = respx.post("http://good/token").mock(
        return_value=httpx.Response(200, json={"access_token": "sk-ant-oat01-x", "expires_in": 60})
    )
    s = Settings.from_env(
        {
            "CLAUDE_OAUTH_TOKEN_URL": "http://gone/token,http://down/token,http://slow/token,http://old/token,http://good/token"
        }
    )
    first = TokenSet.from_token_response({"access_token": "a", "refresh_token": "r", "expires_in": 1})
    tokens = await OAuthClient(s).refresh(first)
    assert good.called and tokens.access == "sk-ant-oat01-x" and tokens.refresh == "r"


@respx.mock
@pytest.mark.parametrize(
    "after_sending",
    [
        httpx.ReadTimeout("response lost"),
        httpx.RemoteProtocolError("peer closed"),
        httpx.WriteError("broken pipe"),
        httpx.WriteTimeout("stalled"),
        httpx.ReadError("reset"),
    ],
)
async def test_a_refresh_token_is_never_sent_twice(after_sending: httpx.TransportError) -> None:
    # Audit M6: the first URL may have rotated the refresh token before the answer was
    # lost; sending it to the second URL only burns the account's login.
    first_url = respx.post("http://a/token").mock(side_effect=after_sending)
    second_url = respx.post("http://b/token").mock(return_value=httpx.Response(200, json={"access_token": "x"}))
    s = Settings.from_env({"CLAUDE_OAUTH_TOKEN_URL": "http://a/token,http://b/token"})
    first = TokenSet.from_token_response({"access_token": "a", "refresh_token": "sk-ant-ort01-once"})
    with pytest.raises(OAuthError, match="not retried") as info:
        await OAuthClient(s).refresh(first)
    assert first_url.call_count == 1 and not second_url.called
    assert info.value.reached_server is True and info.value.status_code is None
    assert "sk-ant-ort01-once" not in str(info.value)


@respx.mock
async def test_unreachable_everywhere_says_the_credential_is_unspent() -> None:
    respx.post("http://a/token").mock(side_effect=httpx.ConnectError("refused"))
    respx.post("http://b/token").mock(side_effect=httpx.ConnectTimeout("timeout"))
    s = Settings.from_env({"CLAUDE_OAUTH_TOKEN_URL": "http://a/token,http://b/token"})
    with pytest.raises(OAuthError, match="cannot reach the Claude token endpoint") as info:
        await OAuthClient(s).exchange_code(code="c", state="s", code_verifier="v" * 43)
    assert info.value.reached_server is False
    assert "http://a/token: ConnectError" in str(info.value) and "http://b/token: ConnectTimeout" in str(info.value)


@respx.mock
async def test_404_on_the_last_url_is_final() -> None:
    respx.post(TOKEN_URL).mock(
        return_value=httpx.Response(
            404, json={"type": "error", "error": {"type": "not_found_error", "message": "Not found"}}
        )
    )
    with pytest.raises(OAuthError, match="HTTP 404") as info:
        await OAuthClient(settings()).refresh(TokenSet.from_token_response({"access_token": "a", "refresh_token": "r"}))
    assert info.value.reached_server and info.value.status_code == 404


@respx.mock
async def test_server_error_is_a_clear_oauth_error() -> None:
    respx.post(TOKEN_URL).mock(return_value=httpx.Response(503, text="upstream down"))
    first = TokenSet.from_token_response({"access_token": "a", "refresh_token": "r", "expires_in": 1})
    with pytest.raises(OAuthError, match="HTTP 503") as info:
        await OAuthClient(settings()).refresh(first)
    assert not isinstance(info.value, InvalidGrantError)


async def test_setup_token_cannot_be_refreshed() -> None:
    with pytest.raises(InvalidGrantError):
        await OAuthClient(settings()).refresh(TokenSet.from_setup_token("sk-ant-oat01-long-lived"))


@pytest.mark.parametrize(
    ("cls", "status"),
    [
        (errors.ConfigError, 503),
        (errors.TokenStoreError, 503),
        (errors.DecryptionError, 503),
        (errors.LoginStateError, 400),
        (errors.OAuthError, 502),
        (errors.InvalidGrantError, 400),
        (errors.RateLimitedError, 429),
        (errors.NotLoggedInError, 404),
        (errors.ReloginRequiredError, 409),
        (errors.UpstreamRefusal, 502),
    ],
)
def test_every_error_class_names_its_http_status(cls: type[errors.ClaudeOAuthError], status: int) -> None:
    assert cls.http_status == status


def test_error_attributes_callers_rely_on() -> None:
    plain = OAuthError("x", status_code=400, error="invalid_request")
    assert (plain.status_code, plain.error, plain.reached_server) == (400, "invalid_request", True)
    assert OAuthError("x", reached_server=False).reached_server is False
    assert OAuthError("x").reached_server is False  # no answer, unless the raiser says otherwise
    assert errors.RetryLater("busy").retry_after_header() == {}
    later = errors.RateLimitedError("x", retry_after=2.2)
    assert later.retry_after_header() == {"Retry-After": "3"} and later.error == "rate_limited"
    refusal = errors.UpstreamRefusal(
        400, "Anthropic billed this as extra usage:\n  the account has none", kind="extra_usage"
    )
    assert refusal.status == 400 and refusal.kind == "extra_usage" and "\n" not in str(refusal)
    assert isinstance(refusal, errors.ClaudeOAuthError)


async def test_invalid_grant_after_the_refresh_token_ended_says_so(token_endpoint: FakeTokenEndpoint) -> None:
    ended = TokenSet.from_token_response(
        {"access_token": "a", "refresh_token": "sk-ant-ort01-dead", "refresh_token_expires_in": 60},
        now=time.time() - 31 * DAY,
    )
    with pytest.raises(InvalidGrantError, match=r"lifetime ended on .*new browser login") as info:
        await OAuthClient(settings()).refresh(ended)
    assert info.value.status_code == 400 and info.value.error == "invalid_grant"
    alive = TokenSet.from_token_response({"access_token": "a", "refresh_token": "sk-ant-ort01-revoked"})
    with pytest.raises(InvalidGrantError) as revoked:
        await OAuthClient(settings()).refresh(alive)
    assert "lifetime" not in str(revoked.value)
