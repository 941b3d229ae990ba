import time

import pytest

from litellm_claude_oauth.errors import NotLoggedInError, ReloginRequiredError
from litellm_claude_oauth.manager import TokenManager
from litellm_claude_oauth.ratelimit import Cooldown, cooldown_for_429
from litellm_claude_oauth.routing import AllAccountsCoolingDown, Pool, Route, caller_identity, route_for
from litellm_claude_oauth.settings import Settings
from litellm_claude_oauth.tokens import TokenSet

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("api_key", "route"),
    [
        ("claude-oauth", Route()),
        ("claude-oauth:alice", Route(account="alice")),
        ("claude-oauth:pool", Route(pool=True)),
        ("claude-oauth:", None),
        ("claude-oauthx", None),
        ("sk-ant-api03-real-key", None),
        (None, None),
    ],
)
def test_markers(api_key: object, route: Route | None) -> None:
    assert route_for(api_key, {}, {}) == route


def test_account_map_most_specific_wins() -> None:
    account_map = {"team:t1": "team-acct", "key:ci-key": "key-acct", "user:u1": "pool"}
    who = {"key_alias": "ci-key", "team_id": "t1", "user_id": "u1"}
    assert route_for("claude-oauth", who, account_map) == Route(account="key-acct")
    assert route_for("claude-oauth", {**who, "key_alias": "other"}, account_map) == Route(account="team-acct")
    assert route_for("claude-oauth", {"user_id": "u1"}, account_map) == Route(pool=True)
    # An explicit account on the deployment beats any mapping.
    assert route_for("claude-oauth:bob", who, account_map) == Route(account="bob")


def test_team_alias_is_its_own_weaker_selector() -> None:
    """Audit L5: a team admin renaming their team to another team's id must not get its account."""
    account_map = {"team:t1": "team-acct", "team_alias:blue": "blue-acct"}
    assert route_for("claude-oauth", {"team_alias": "t1"}, account_map) == Route(account=None)
    assert route_for("claude-oauth", {"team_alias": "blue"}, account_map) == Route(account="blue-acct")


def test_identity_comes_only_from_litellms_auth_object_never_from_request_metadata() -> None:
    """Audit H4: a client's metadata dict (Claude Code sends metadata.user_id) cannot pick an account."""
    from litellm.proxy._types import UserAPIKeyAuth

    assert caller_identity({"user_api_key": "vip-alias", "user_api_key_alias": "vip-alias", "user_id": "x"}) == {}
    assert caller_identity({"user_api_key_auth": {"key_alias": "vip-alias"}}) == {}  # a dict is client-makeable
    auth = UserAPIKeyAuth(token="hash1", key_alias="ci-key", team_id="t1", user_id="u1")
    who = caller_identity({"user_api_key_auth": auth, "user_api_key_alias": "spoofed"})
    assert who == {"key_alias": "ci-key", "key_hash": "hash1", "team_id": "t1", "user_id": "u1"}
    assert route_for("claude-oauth", who, {"key:ci-key": "ci"}) == Route(account="ci")


def test_429_headers_give_the_latest_rejected_reset() -> None:
    headers = {
        "retry-after": "30",
        "anthropic-ratelimit-unified-status": "rejected",
        "anthropic-ratelimit-unified-reset": str(int(NOW + 3600)),
        "anthropic-ratelimit-unified-5h-status": "rejected",
        "anthropic-ratelimit-unified-5h-reset": str(int(NOW + 3600)),
        "anthropic-ratelimit-unified-7d-status": "allowed",
        "anthropic-ratelimit-unified-7d-reset": str(int(NOW + 5 * 86400)),
        "anthropic-ratelimit-unified-representative-claim": "five_hour",
    }
    cooldown = cooldown_for_429(headers, "", now=NOW)
    assert cooldown is not None
    assert cooldown.until == NOW + 3600 and cooldown.reason == "rate limited (five_hour)"
    assert cooldown.retry_after(now=NOW) == 3600
    # Without unified headers a 429 is not quota: no rest at all (test_ratelimit has the cases).
    assert cooldown_for_429({"retry-after": "17"}, "", now=NOW) is None


@pytest.fixture
async def three(env: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    def build(strategy: str) -> TokenManager:
        monkeypatch.setenv("CLAUDE_OAUTH_POOL_STRATEGY", strategy)
        return TokenManager.from_settings(Settings.from_env())

    managers = []

    async def make(strategy: str) -> TokenManager:
        m = build(strategy)
        for name in ("a", "b", "c"):
            await m.import_tokens(TokenSet.from_setup_token(f"sk-ant-oat01-{name}"), name)
        managers.append(m)
        return m

    return make


async def test_round_robin_rotates_and_skips_cooling(three) -> None:
    manager = await three("round-robin")
    pool = Pool(manager)
    firsts = [(await pool.order())[0] for _ in range(6)]
    assert firsts == ["a", "b", "c", "a", "b", "c"]
    await manager.health.cool_down("b", Cooldown(until=time.time() + 300, reason="rate limited (five_hour)"))
    assert "b" not in {(await pool.order())[0] for _ in range(6)}
    status = await manager.status("b")
    assert status.cooldown_until is not None and status.cooldown_reason == "rate limited (five_hour)"


async def test_fill_first_sticks_to_the_first_usable(three) -> None:
    manager = await three("fill-first")
    pool = Pool(manager)
    assert {(await pool.order())[0] for _ in range(5)} == {"a"}
    await manager.health.cool_down("a", Cooldown(until=time.time() + 300, reason="rate limited"))
    assert (await pool.next_tokens())[0] == "b"


async def test_all_cooling_reports_the_soonest_reset(three) -> None:
    manager = await three("round-robin")
    pool = Pool(manager)
    now = time.time()
    for name, rest in (("a", 900), ("b", 120), ("c", 600)):
        await manager.health.cool_down(name, Cooldown(until=now + rest, reason="rate limited"))
    with pytest.raises(AllAccountsCoolingDown) as info:
        await pool.next_tokens()
    assert 115 <= info.value.retry_after <= 121


async def test_cooldown_is_seen_by_another_process(three, env: dict[str, str]) -> None:
    manager = await three("round-robin")
    await manager.health.cool_down("c", Cooldown(until=time.time() + 300, reason="rate limited"))
    other = TokenManager.from_settings(Settings.from_env())  # e.g. another worker
    await other.get_tokens("c")  # loads the record, and with it the cooldown
    assert other.health.cooldown("c") is not None
    assert "c" not in await Pool(other).order()


async def test_relogin_required_accounts_are_skipped(three) -> None:
    manager = await three("fill-first")
    record = await manager.load("a")
    await manager.store.save(record.model_copy(update={"relogin_reason": "invalid_grant"}))
    manager.invalidate()
    pool = Pool(manager)
    with pytest.raises(ReloginRequiredError):
        await manager.get_tokens("a")
    assert (await pool.next_tokens())[0] == "b"


async def test_empty_pool_means_not_logged_in(env: dict[str, str]) -> None:
    with pytest.raises(NotLoggedInError):
        await Pool(TokenManager.from_settings(Settings.from_env())).next_tokens()


async def test_a_session_stays_on_its_account_and_moves_only_when_rejected(three) -> None:
    """Issue 11: a conversation's prompt cache lives on one account; round-robin would scatter it."""
    manager = await three("round-robin")
    pool = Pool(manager)
    first = (await pool.next_tokens(session="s:conv-1"))[0]
    assert {(await pool.next_tokens(session="s:conv-1"))[0] for _ in range(5)} == {first}
    assert len({(await pool.next_tokens())[0] for _ in range(3)}) == 3  # no session: still round-robin
    await manager.health.cool_down(first, Cooldown(until=time.time() + 300, reason="rate limited"))
    moved = (await pool.next_tokens(session="s:conv-1"))[0]
    assert moved != first
    assert {(await pool.next_tokens(session="s:conv-1"))[0] for _ in range(5)} == {moved}


async def test_sessions_can_be_turned_off(three, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_OAUTH_SESSION_TTL", "0")
    manager = await three("round-robin")
    pool = Pool(manager)
    assert len({(await pool.next_tokens(session="s:conv-1"))[0] for _ in range(3)}) == 3


def test_session_key_prefers_claude_codes_session_header() -> None:
    from litellm_claude_oauth.hook import request_headers, session_key

    assert session_key(request_headers({"X-Claude-Code-Session-Id": "abc"}), {"user_id": "u"}) == "s:abc"
    assert session_key(request_headers({}), {"user_id": "u"}) == "u:u"
    assert session_key(request_headers(None), None) is None


async def test_least_used_prefers_the_lowest_five_hour_use_and_skips_accounts_near_the_limit(three) -> None:
    manager = await three("least-used")
    reset = str(int(time.time()) + 3600)

    def seen(account: str, used: float) -> None:
        manager.quotas.observe(account, {
            "anthropic-ratelimit-unified-status": "allowed",
            "anthropic-ratelimit-unified-5h-status": "allowed",
            "anthropic-ratelimit-unified-5h-utilization": str(used),
            "anthropic-ratelimit-unified-5h-reset": reset,
        })

    seen("a", 0.7)
    seen("b", 0.2)
    seen("c", 0.5)
    pool = Pool(manager)
    assert [await pool.order() for _ in range(2)] == [["b", "c", "a"], ["b", "c", "a"]]
    seen("b", 0.97)  # above CLAUDE_OAUTH_QUOTA_THRESHOLD (0.95): used only if nothing else can serve
    assert (await pool.order())[-1] == "b"
    assert (await pool.next_tokens())[0] == "c"
