import pytest

from litellm_claude_oauth.errors import OAuthError
from litellm_claude_oauth.tokens import DAY, TokenSet

NOW = 1_800_000_000.0
LOGIN = {"access_token": "sk-ant-oat01-a1", "refresh_token": "sk-ant-ort01-r1", "expires_in": 28800}


def login(**extra: object) -> TokenSet:
    return TokenSet.from_token_response({**LOGIN, **extra}, now=NOW, default_refresh_lifetime=30 * DAY)


def test_refresh_token_expiry_from_the_response() -> None:
    tokens = login(refresh_token_expires_in=2497155)
    assert tokens.refresh_expires_at == NOW + 2497155


def test_login_without_the_field_gets_the_configured_default() -> None:
    assert login().refresh_expires_at == NOW + 30 * DAY
    no_default = TokenSet.from_token_response(LOGIN, now=NOW)
    assert no_default.refresh_expires_at is None


def test_refreshing_does_not_extend_the_refresh_token_life() -> None:
    first = login(refresh_token_expires_in=10 * DAY)
    later = NOW + 5 * DAY
    rotated = TokenSet.from_token_response(
        {"access_token": "sk-ant-oat01-a2", "refresh_token": "sk-ant-ort01-r2", "expires_in": 28800},
        previous=first,
        now=later,
        default_refresh_lifetime=30 * DAY,
    )
    assert rotated.refresh == "sk-ant-ort01-r2"
    assert rotated.refresh_expires_at == NOW + 10 * DAY  # carried over, not later + 30 days
    # ...unless the server names a new end.
    renewed = TokenSet.from_token_response(
        {"access_token": "sk-ant-oat01-a3", "refresh_token_expires_in": 100}, previous=first, now=later
    )
    assert renewed.refresh_expires_at == later + 100 and renewed.refresh == first.refresh


def test_old_records_without_the_field_still_load_and_get_an_estimate() -> None:
    stored = {
        "access_token": "sk-ant-oat01-a1",
        "refresh_token": "sk-ant-ort01-r1",
        "expires_at": NOW + 3600,
        "obtained_at": NOW,
        "source": "oauth",
    }
    tokens = TokenSet.model_validate(stored)
    assert tokens.refresh_expires_at is None
    assert tokens.refresh_expires() is None
    assert tokens.refresh_expires(30) == NOW + 30 * DAY
    assert not tokens.refresh_expiring(3 * DAY, NOW + 26 * DAY, default_days=30)
    assert tokens.refresh_expiring(3 * DAY, NOW + 28 * DAY, default_days=30)
    # A refresh of an old record fixes the estimate once instead of moving it forward each time.
    refreshed = TokenSet.from_token_response(
        {"access_token": "sk-ant-oat01-a2"}, previous=tokens, now=NOW + 20 * DAY, default_refresh_lifetime=30 * DAY
    )
    assert refreshed.refresh_expires_at == NOW + 30 * DAY
    # Round trip through storage keeps the new field.
    assert TokenSet.model_validate(refreshed.to_storage()).refresh_expires_at == NOW + 30 * DAY


def test_refresh_expiring_and_expired() -> None:
    tokens = login(refresh_token_expires_in=10 * DAY)
    assert not tokens.refresh_expiring(3 * DAY, NOW + 6 * DAY)
    assert tokens.refresh_expiring(3 * DAY, NOW + 7 * DAY)
    assert not tokens.refresh_expired(NOW + 10 * DAY - 1)
    assert tokens.refresh_expired(NOW + 10 * DAY)
    setup = TokenSet.from_setup_token("sk-ant-oat01-long-lived", now=NOW)
    assert setup.refresh_expires(30) is None and not setup.refresh_expired(NOW + 400 * DAY, default_days=30)


@pytest.mark.parametrize("bad", ["soon", -5, float("nan"), float("inf"), True, [1]])
@pytest.mark.parametrize("key", ["expires_in", "refresh_token_expires_in"])
def test_malformed_lifetimes_are_oauth_errors(key: str, bad: object) -> None:
    with pytest.raises(OAuthError, match=f"malformed {key}") as info:
        TokenSet.from_token_response({**LOGIN, key: bad}, now=NOW)
    assert info.value.reached_server  # Anthropic answered: the code or refresh token is spent


@pytest.mark.parametrize("data", [{}, {"access_token": ""}, {"access_token": 5}])
def test_a_response_without_an_access_token_is_an_oauth_error(data: dict) -> None:
    with pytest.raises(OAuthError, match="without an access_token"):
        TokenSet.from_token_response(data)


def test_missing_expires_in_keeps_the_old_default() -> None:
    assert TokenSet.from_token_response({"access_token": "sk-ant-oat01-x"}, now=NOW).expires_at == NOW + 3600
    assert TokenSet.from_token_response({"access_token": "x", "expires_in": "60"}, now=NOW).expires_at == NOW + 60


@pytest.mark.parametrize(
    ("lifetime", "margin", "effective"),
    [(28800, 300, 300), (3600, 7200, 1800), (600, 300, 300), (100, 300, 50)],
)
def test_refresh_margin_is_capped_at_half_the_lifetime(lifetime: float, margin: float, effective: float) -> None:
    tokens = TokenSet.from_token_response({**LOGIN, "expires_in": lifetime}, now=NOW)
    assert tokens.effective_refresh_margin(margin) == effective
    # Straight after a refresh the token is never "due", whatever the margin.
    assert not tokens.needs_refresh(margin, NOW)
    assert not tokens.needs_refresh(margin, NOW + lifetime - effective - 1)
    assert tokens.needs_refresh(margin, NOW + lifetime - effective)


def test_public_view_shows_the_refresh_end_but_no_secret() -> None:
    view = login().public_view(NOW)
    assert view["refresh_expires_at"] == NOW + 30 * DAY
    assert "sk-ant-ort01-r1" not in str(view) and "sk-ant-oat01-a1" not in str(view)
