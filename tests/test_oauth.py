import httpx
import pytest
import respx

from litellm_claude_oauth.errors import InvalidGrantError, OAuthError, RateLimitedError
from litellm_claude_oauth.oauth import OAuthClient, build_authorize_url, parse_authorization_input
from litellm_claude_oauth.settings import Settings
from litellm_claude_oauth.tokens import TokenSet

from .conftest import TOKEN_URL, FakeTokenEndpoint


def settings(**env: str) -> Settings:
    return Settings.from_env({"CLAUDE_OAUTH_TOKEN_URL": TOKEN_URL, **env})


def test_authorize_url_has_every_parameter() -> None:
    s = settings()
    url = build_authorize_url(s, code_challenge="CH", state="ST")
    assert url.startswith("https://claude.ai/oauth/authorize?")
    for part in (
        "code=true",
        f"client_id={s.client_id}",
        "response_type=code",
        "redirect_uri=https%3A%2F%2Fconsole.anthropic.com%2Foauth%2Fcode%2Fcallback",
        "scope=user%3Aprofile+user%3Ainference",
        "code_challenge=CH",
        "code_challenge_method=S256",
        "state=ST",
    ):
        assert part in url


@pytest.mark.parametrize(
    ("pasted", "expected"),
    [
        ("abc123#st4te", ("abc123", "st4te")),
        ("  abc123  ", ("abc123", None)),
        ("https://console.anthropic.com/oauth/code/callback?code=ABC123&state=XYZ789", ("ABC123", "XYZ789")),
        ("https://console.anthropic.com/oauth/code/callback?code=ABC123#XYZ", ("ABC123", "XYZ")),
        ("'abc#def'", ("abc", "def")),
    ],
)
def test_parse_what_people_paste(pasted: str, expected: tuple[str, str | None]) -> None:
    assert parse_authorization_input(pasted) == expected


@pytest.mark.parametrize("pasted", ["", "   ", "https://x/cb?state=1", "two words"])
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
    await client.aclose()


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
    assert info.value.retry_after == 17


@respx.mock
async def test_token_url_list_falls_through_404_and_network_errors() -> None:
    respx.post("http://gone/token").mock(return_value=httpx.Response(404))
    respx.post("http://down/token").mock(side_effect=httpx.ConnectError("refused"))
    good = respx.post("http://good/token").mock(
        return_value=httpx.Response(200, json={"access_token": "sk-ant-oat01-x", "expires_in": 60})
    )
    s = Settings.from_env({"CLAUDE_OAUTH_TOKEN_URL": "http://gone/token,http://down/token,http://good/token"})
    first = TokenSet.from_token_response({"access_token": "a", "refresh_token": "r", "expires_in": 1})
    tokens = await OAuthClient(s).refresh(first)
    assert good.called and tokens.access == "sk-ant-oat01-x" and tokens.refresh == "r"


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
