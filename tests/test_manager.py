import asyncio

import httpx
import pytest

from litellm_claude_oauth.errors import (
    LoginStateError,
    NotLoggedInError,
    OAuthError,
    ReloginRequiredError,
    TokenStoreError,
)
from litellm_claude_oauth.manager import TokenManager
from litellm_claude_oauth.settings import Settings
from litellm_claude_oauth.store.base import AccountRecord
from litellm_claude_oauth.tokens import TokenSet

from .conftest import Clock, FakeTokenEndpoint, logged_in


async def test_login_then_cached_access_without_store_reads(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = await logged_in(manager, token_endpoint)
    assert record.tokens.account_email == "person@example.com"

    async def no_reads(account: str) -> None:
        raise AssertionError("the hot path must not read the store")

    monkeypatch.setattr(manager.store, "load", no_reads)
    reads_before = manager.stats.store_reads
    for _ in range(50):
        assert await manager.get_access_token() == "sk-ant-oat01-access1"
    assert token_endpoint.refreshes == 0
    assert manager.stats.store_reads == reads_before and manager.stats.cache_hits == 50


async def test_bare_code_finishes_the_latest_login(manager: TokenManager, token_endpoint: FakeTokenEndpoint) -> None:
    start = await manager.start_login()
    code, _, _ = token_endpoint.authorize(start.authorization_url).partition("#")
    record = await manager.complete_login(code)
    assert record.account == "default"


async def test_state_mismatch_is_refused(manager: TokenManager, token_endpoint: FakeTokenEndpoint) -> None:
    start = await manager.start_login()
    code, _, _ = token_endpoint.authorize(start.authorization_url).partition("#")
    with pytest.raises(LoginStateError, match="does not match"):
        await manager.complete_login(f"{code}#forged", state=start.state)
    with pytest.raises(LoginStateError, match="unknown or was already used"):
        await manager.complete_login(f"{code}#forged")
    assert token_endpoint.bodies == []  # nothing was sent to Anthropic


async def test_state_is_single_use(manager: TokenManager, token_endpoint: FakeTokenEndpoint) -> None:
    start = await manager.start_login()
    pasted = token_endpoint.authorize(start.authorization_url)
    await manager.complete_login(pasted)
    with pytest.raises(LoginStateError, match="already used"):
        await manager.complete_login(pasted)


async def test_state_expires_after_ten_minutes(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint, clock: Clock
) -> None:
    start = await manager.start_login()
    pasted = token_endpoint.authorize(start.authorization_url)
    clock.now += 601
    with pytest.raises(LoginStateError, match="expired"):
        await manager.complete_login(pasted)
    with pytest.raises(LoginStateError, match="no login in progress"):
        await manager.complete_login("bare-code")


async def test_login_for_one_account_cannot_be_finished_as_another(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint
) -> None:
    start = await manager.start_login("alice")
    pasted = token_endpoint.authorize(start.authorization_url)
    with pytest.raises(LoginStateError, match="started for account 'alice'"):
        await manager.complete_login(pasted, account="bob")
    record = await manager.complete_login(pasted, account="alice")  # still pending: not consumed by the refusal
    assert record.account == "alice"


async def test_network_failure_during_exchange_keeps_the_login_pending(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = await manager.start_login()
    pasted = token_endpoint.authorize(start.authorization_url)

    async def unreachable(**kwargs: str) -> TokenSet:
        raise OAuthError("cannot reach the Claude token endpoint")

    monkeypatch.setattr(manager.oauth, "exchange_code", unreachable)
    with pytest.raises(OAuthError):
        await manager.complete_login(pasted)
    monkeypatch.undo()
    assert (await manager.complete_login(pasted)).account == "default"


async def test_hundred_concurrent_callers_at_expiry_cause_one_refresh(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint, clock: Clock
) -> None:
    await logged_in(manager, token_endpoint)
    clock.now += 3600 + 1
    tokens = await asyncio.gather(*(manager.get_access_token() for _ in range(100)))
    assert token_endpoint.refreshes == 1
    assert set(tokens) == {"sk-ant-oat01-access2"}


async def test_refresh_happens_inside_the_margin_not_before(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint, clock: Clock
) -> None:
    await logged_in(manager, token_endpoint)
    clock.now += 3600 - 301
    assert await manager.get_access_token() == "sk-ant-oat01-access1"
    clock.now += 2
    assert await manager.get_access_token() == "sk-ant-oat01-access2"
    assert token_endpoint.refreshes == 1


async def test_rotated_refresh_token_survives_a_failed_save_and_is_saved_by_the_retry(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Audit H2: any saving error keeps the rotated token (in memory, served) and retries the save."""
    import litellm_claude_oauth.manager as manager_module

    monkeypatch.setattr(manager_module, "_UNSAVED_RETRY", (0.05, 0.05))
    await logged_in(manager, token_endpoint)
    clock.now += 4000
    real_update = manager.store.update
    failures: list[str] = []

    async def failing_update(account: str, change: object) -> None:
        failures.append(account)
        raise TokenStoreError("disk full")

    monkeypatch.setattr(manager.store, "update", failing_update)
    token_endpoint.expires_in = 8000  # outlives the test clock's jump
    # The refreshed token is served from memory: the store's trouble is not the client's.
    assert await manager.get_access_token() == "sk-ant-oat01-access2"
    assert await manager.get_access_token() == "sk-ant-oat01-access2"
    assert token_endpoint.refreshes == 1  # no second refresh burnt while the save is pending
    fresh = TokenManager.from_settings(Settings.from_env())
    assert (await fresh.load()).tokens.refresh == "sk-ant-ort01-refresh1"

    monkeypatch.setattr(manager.store, "update", real_update)
    for _ in range(50):  # the background retry saves it
        await asyncio.sleep(0.02)
        if (await fresh.load()).tokens.refresh == "sk-ant-ort01-refresh2":
            break
    assert (await fresh.load()).tokens.refresh == "sk-ant-ort01-refresh2"
    assert failures, "the save was attempted"
    await manager.aclose()  # nothing left unsaved: no error


async def test_an_unsaved_token_that_expires_is_refreshed_with_its_own_live_refresh_token(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store still holds the spent refresh token; refreshing with it would log the account out."""
    await logged_in(manager, token_endpoint)
    clock.now += 4000

    async def failing_update(account: str, change: object) -> None:
        raise TokenStoreError("disk full")

    real_update = manager.store.update
    monkeypatch.setattr(manager.store, "update", failing_update)
    assert await manager.get_access_token() == "sk-ant-oat01-access2"  # unsaved, refresh2 live
    monkeypatch.setattr(manager.store, "update", real_update)
    monkeypatch.setattr(manager, "_save_unsaved", _never_saves)  # the disk is still full for the retry
    clock.now += 4000
    assert await manager.get_access_token() == "sk-ant-oat01-access3"
    assert token_endpoint.bodies[-1]["refresh_token"] == "sk-ant-ort01-refresh2"
    assert (await manager.load()).tokens.refresh == "sk-ant-ort01-refresh3"
    assert (await manager.load()).relogin_reason is None


async def _never_saves(account: str) -> None:
    raise TokenStoreError("disk full")


async def test_missing_refresh_token_in_response_keeps_the_old_one(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint, clock: Clock
) -> None:
    token_endpoint.rotate = False
    await logged_in(manager, token_endpoint)
    clock.now += 4000
    await manager.get_access_token()
    assert (await manager.load()).tokens.refresh == "sk-ant-ort01-refresh1"


async def test_invalid_grant_requires_relogin_and_keeps_the_record(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint, clock: Clock
) -> None:
    await logged_in(manager, token_endpoint)
    token_endpoint.live_refresh.clear()  # revoked upstream
    clock.now += 4000
    with pytest.raises(ReloginRequiredError, match="litellm claude login"):
        await manager.get_access_token()
    record = await manager.load()
    assert record.tokens.refresh == "sk-ant-ort01-refresh1" and record.relogin_reason
    status = await manager.status()
    assert status.logged_in and not status.valid and status.relogin_reason
    # Known-dead: later calls do not hammer the token endpoint.
    with pytest.raises(ReloginRequiredError):
        await manager.get_access_token()
    assert token_endpoint.refreshes == 1
    clock.now -= 4000  # back to the wall clock the token endpoint uses
    await logged_in(manager, token_endpoint)  # a new login clears the flag
    assert (await manager.status()).valid


async def test_invalid_grant_never_discards_a_newer_credential(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process rotated the token while we were refreshing: theirs wins, nothing is flagged."""
    await logged_in(manager, token_endpoint)
    clock.now += 4000
    other = TokenManager.from_settings(Settings.from_env())
    real_refresh = manager.oauth.refresh

    async def raced_refresh(tokens: TokenSet) -> TokenSet:
        # e.g. Claude Code itself, which does not take our locks, rotates refresh1 away first
        theirs = await other.oauth.refresh(tokens)
        await other.store.save(AccountRecord(account="default", tokens=theirs))
        return await real_refresh(tokens)

    monkeypatch.setattr(manager.oauth, "refresh", raced_refresh)
    assert await manager.get_access_token() == "sk-ant-oat01-access2"
    record = await manager.load()
    assert record.relogin_reason is None and record.tokens.refresh == "sk-ant-ort01-refresh2"


async def test_failed_proactive_refresh_keeps_serving_a_valid_token(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint, clock: Clock
) -> None:
    await logged_in(manager, token_endpoint)
    token_endpoint.fail_with = httpx.Response(503)
    clock.now += 3600 - 100  # inside the margin, not expired
    assert await manager.get_access_token() == "sk-ant-oat01-access1"
    clock.now += 200  # now expired: the failure must surface
    with pytest.raises(OAuthError, match="503"):
        await manager.get_access_token()


async def test_force_refresh_with_stale_token_is_single_flight(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint
) -> None:
    await logged_in(manager, token_endpoint)
    results = await asyncio.gather(
        *(manager.force_refresh(stale_access="sk-ant-oat01-access1") for _ in range(20))
    )
    assert token_endpoint.refreshes == 1
    assert {t.access for t in results} == {"sk-ant-oat01-access2"}
    # A 401 for a token that is no longer current does not refresh again.
    again = await manager.force_refresh(stale_access="sk-ant-oat01-access1")
    assert again.access == "sk-ant-oat01-access2" and token_endpoint.refreshes == 1


async def test_other_process_login_is_seen_without_restart(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint
) -> None:
    with pytest.raises(NotLoggedInError, match="litellm claude login"):
        await manager.get_access_token()
    cli_process = TokenManager.from_settings(Settings.from_env())
    await logged_in(cli_process, token_endpoint)
    assert await manager.get_access_token() == "sk-ant-oat01-access1"


async def test_setup_token_works_until_expiry_then_asks_for_login(
    manager: TokenManager, clock: Clock
) -> None:
    await manager.import_tokens(TokenSet.from_setup_token("sk-ant-oat01-longlived", now=clock.now))
    assert await manager.get_access_token() == "sk-ant-oat01-longlived"
    clock.now += 366 * 86400
    manager.invalidate()
    with pytest.raises(ReloginRequiredError, match="no refresh token"):
        await manager.get_access_token()


async def test_logout_forgets_everything(manager: TokenManager, token_endpoint: FakeTokenEndpoint) -> None:
    await logged_in(manager, token_endpoint)
    assert await manager.logout() is True
    with pytest.raises(NotLoggedInError):
        await manager.get_access_token()
    assert (await manager.status()).logged_in is False
