"""Credential integrity under races: no write may put back a spent refresh token (audit H1, M1, M2, H5, M5, M8).

Each test forces the interleaving the audit reproduced (research/audit-2026-11/test_audit_repro.py,
R1–R14) and asserts the opposite of the defect.
"""

from __future__ import annotations

import asyncio

import pytest

from litellm_claude_oauth.errors import NotLoggedInError, ReloginRequiredError, TokenStoreError
from litellm_claude_oauth.manager import TokenManager
from litellm_claude_oauth.ratelimit import Cooldown
from litellm_claude_oauth.routing import Pool
from litellm_claude_oauth.settings import Settings

from .conftest import KEY_B, Clock, FakeTokenEndpoint, logged_in


def _gated(monkeypatch: pytest.MonkeyPatch, manager: TokenManager) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold every refresh at the token endpoint until ``gate`` is set; ``started`` says one is waiting."""
    real_refresh = manager.oauth.refresh
    started, gate = asyncio.Event(), asyncio.Event()

    async def slow_refresh(tokens):  # type: ignore[no-untyped-def]
        started.set()
        await gate.wait()
        return await real_refresh(tokens)

    monkeypatch.setattr(manager.oauth, "refresh", slow_refresh)
    return started, gate


@pytest.mark.parametrize("cooldown_first", [True, False])
async def test_a_cooldown_racing_a_refresh_keeps_the_rotated_refresh_token(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint, clock: Clock, monkeypatch: pytest.MonkeyPatch,
    cooldown_first: bool,
) -> None:
    """H1: the cooldown used to rewrite the whole record it had loaded before the refresh committed."""
    await logged_in(manager, token_endpoint)
    started, gate = _gated(monkeypatch, manager)
    clock.now += 3600
    refresh = asyncio.create_task(manager.get_tokens())
    await started.wait()
    rest = Cooldown(until=clock.now + 600, reason="rate limited (five_hour)")
    if cooldown_first:
        await manager.health.cool_down("default", rest)
        gate.set()
        await refresh
    else:
        gate.set()
        await refresh
        await manager.health.cool_down("default", rest)
    stored = await manager.store.load("default")
    assert stored is not None
    assert stored.tokens.refresh == "sk-ant-ort01-refresh2"
    assert stored.tokens.refresh in token_endpoint.live_refresh
    assert stored.cooldown_until == rest.until
    manager.invalidate()
    clock.now += 3600
    assert (await manager.get_tokens()).access == "sk-ant-oat01-access3"  # still alive, no re-login


async def test_logout_during_a_refresh_stays_logged_out(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """M1: the refresh finishing after the logout used to write the account back."""
    await logged_in(manager, token_endpoint)
    other = TokenManager.from_settings(Settings.from_env())  # e.g. the CLI
    started, gate = _gated(monkeypatch, manager)
    clock.now += 3600
    inflight = asyncio.create_task(manager.get_tokens())
    await started.wait()
    assert await other.logout() is True
    gate.set()
    with pytest.raises(NotLoggedInError):
        await inflight
    assert await manager.store.load("default") is None
    with pytest.raises(NotLoggedInError):
        await manager.get_tokens()


async def test_a_login_during_a_refresh_wins_over_the_old_grant(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await logged_in(manager, token_endpoint)  # refresh1
    other = TokenManager.from_settings(Settings.from_env(), clock=clock)
    started, gate = _gated(monkeypatch, manager)
    clock.now += 3600
    inflight = asyncio.create_task(manager.get_tokens())
    await started.wait()
    await logged_in(other, token_endpoint)  # a new login: access2/refresh2
    gate.set()
    handed_out = await inflight  # the old grant's refresh: access3/refresh3, not committed
    assert handed_out.access == "sk-ant-oat01-access2"
    assert (await manager.store.load("default")).tokens.refresh == "sk-ant-ort01-refresh2"


async def test_an_unsaved_refresh_never_overwrites_a_newer_login(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """M2: a worker replaying a record it failed to save used to undo a login done meanwhile."""
    await logged_in(manager, token_endpoint)
    real_update = manager.store.update
    fail = {"on": True}

    async def flaky_update(account, change):  # type: ignore[no-untyped-def]
        if fail["on"]:
            raise TokenStoreError("db blip")
        return await real_update(account, change)

    monkeypatch.setattr(manager.store, "update", flaky_update)
    clock.now += 3600
    await manager.get_tokens()  # refresh2 kept in memory, unsaved
    assert "default" in manager._unsaved
    fail["on"] = False
    other = TokenManager.from_settings(Settings.from_env(), clock=clock)
    await logged_in(other, token_endpoint)  # access3/refresh3: the operator logged in again
    await manager._save_unsaved("default")
    assert (await manager.store.load("default")).tokens.refresh == "sk-ant-ort01-refresh3"
    assert "default" not in manager._unsaved
    # …and a logout elsewhere is not undone either.
    fail["on"] = True
    manager.invalidate()
    clock.now += 3600
    await manager.get_tokens()
    fail["on"] = False
    await other.logout()
    await manager._save_unsaved("default")
    assert await manager.store.load("default") is None


async def test_a_disk_full_error_keeps_the_rotated_token(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """H2 through the real file store: ENOSPC while saving a rotated refresh token."""
    import errno
    import tempfile

    await logged_in(manager, token_endpoint)
    real_mkstemp = tempfile.mkstemp

    def full_disk(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "mkstemp", full_disk)
    clock.now += 3600
    assert (await manager.get_tokens()).access == "sk-ant-oat01-access2"
    assert manager._unsaved["default"].tokens.refresh == "sk-ant-ort01-refresh2"
    monkeypatch.setattr(tempfile, "mkstemp", real_mkstemp)
    await manager._save_unsaved("default")
    assert (await manager.store.load("default")).tokens.refresh == "sk-ant-ort01-refresh2"


async def test_invalid_grant_does_not_flag_an_account_someone_just_logged_in(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """H1's twin in the invalid_grant branch: the flag is compare-and-set on the rejected credential."""
    await logged_in(manager, token_endpoint)
    other = TokenManager.from_settings(Settings.from_env(), clock=clock)
    real_refresh = manager.oauth.refresh

    async def refresh_then_login_elsewhere(tokens):  # type: ignore[no-untyped-def]
        token_endpoint.live_refresh.clear()  # our refresh token is dead…
        await logged_in(other, token_endpoint)  # …and a fresh login lands before we flag it
        return await real_refresh(tokens)

    monkeypatch.setattr(manager.oauth, "refresh", refresh_then_login_elsewhere)
    clock.now += 3600
    tokens = await manager.get_tokens()
    assert tokens.access == "sk-ant-oat01-access2"
    stored = await manager.store.load("default")
    assert stored.relogin_reason is None and stored.tokens.refresh == "sk-ant-ort01-refresh2"


async def test_a_store_outage_inside_the_margin_keeps_serving_the_valid_token(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """M8: 200 s of validity left, store down: serve the cached token, do not refresh blind."""
    await logged_in(manager, token_endpoint)

    async def down(account: str) -> None:
        raise TokenStoreError("cannot reach PostgreSQL at db:5432/litellm: connection refused")

    monkeypatch.setattr(manager.store, "load", down)
    clock.now += 3600 - 200
    assert (await manager.get_tokens()).access == "sk-ant-oat01-access1"
    assert token_endpoint.refreshes == 0
    clock.now += 400  # now expired: nothing valid to serve, the outage is the answer
    with pytest.raises(TokenStoreError):
        await manager.get_tokens()


async def test_one_undecryptable_pool_member_does_not_fail_requests(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint
) -> None:
    """M5: a record written under another key used to fail every other pool request."""
    from litellm_claude_oauth.crypto import Cipher
    from litellm_claude_oauth.store.file import FileTokenStore

    await logged_in(manager, token_endpoint, "alice")
    other = FileTokenStore(manager.settings.token_file, Cipher(bytes.fromhex(KEY_B)))
    record = await manager.store.load("alice")
    await other.save(record.model_copy(update={"account": "bob"}))
    pool = Pool(manager)
    outcomes = [(await pool.next_tokens())[0] for _ in range(6)]
    assert outcomes == ["alice"] * 6


async def test_a_relogin_elsewhere_brings_the_account_back_into_the_pool(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, token_endpoint: FakeTokenEndpoint, clock: Clock
) -> None:
    """H5: the worker kept skipping the account until it restarted."""
    monkeypatch.setenv("CLAUDE_OAUTH_POOL", "alice")
    worker = TokenManager.from_settings(Settings.from_env(), clock=clock)
    await logged_in(worker, token_endpoint, "alice")
    pool = Pool(worker)
    token_endpoint.live_refresh.clear()  # revoked upstream
    clock.now += 4000
    with pytest.raises(ReloginRequiredError):
        await pool.next_tokens()
    cli = TokenManager.from_settings(Settings.from_env(), clock=clock)
    await logged_in(cli, token_endpoint, "alice")
    worker._on_change("alice")  # what the change feed (Redis, Postgres NOTIFY, file watch) delivers
    account, tokens = await pool.next_tokens()
    assert account == "alice" and tokens.refresh in token_endpoint.live_refresh


async def test_without_a_change_feed_a_dead_account_is_rechecked_after_a_while(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, token_endpoint: FakeTokenEndpoint, clock: Clock
) -> None:
    from litellm_claude_oauth.health import UNUSABLE_RECHECK_SECONDS

    monkeypatch.setenv("CLAUDE_OAUTH_POOL", "alice")
    worker = TokenManager.from_settings(Settings.from_env(), clock=clock)
    await logged_in(worker, token_endpoint, "alice")
    pool = Pool(worker)
    token_endpoint.live_refresh.clear()
    clock.now += 4000
    with pytest.raises(ReloginRequiredError):
        await pool.next_tokens()
    await logged_in(TokenManager.from_settings(Settings.from_env(), clock=clock), token_endpoint, "alice")
    worker.invalidate = lambda account=None: None  # no feed at all
    clock.now += UNUSABLE_RECHECK_SECONDS + 1
    worker._cache.clear()
    assert (await pool.next_tokens())[0] == "alice"


async def test_a_bad_plugin_setting_never_touches_other_deployments(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """M4: a typo in CLAUDE_TOKEN_ENCRYPTION_KEY used to fail every model on the proxy."""
    from litellm_claude_oauth import manager as manager_module
    from litellm_claude_oauth.hook import ClaudeOAuthHandler

    monkeypatch.setattr(manager_module, "_manager", None)
    monkeypatch.setenv("CLAUDE_TOKEN_ENCRYPTION_KEY", "not-hex")
    handler = ClaudeOAuthHandler()
    kwargs = {"model": "openai/gpt-4o", "api_key": "sk-openai-123"}
    assert await handler.async_pre_call_deployment_hook(kwargs, "acompletion") is None
    import litellm

    with pytest.raises(litellm.ServiceUnavailableError, match="CLAUDE_TOKEN_ENCRYPTION_KEY"):
        await handler.async_pre_call_deployment_hook(
            {"model": "anthropic/claude-haiku-4-5-20251001", "api_key": "claude-oauth"}, "acompletion"
        )


async def test_a_change_feed_flush_during_a_store_outage_keeps_the_token_served(
    manager: TokenManager, token_endpoint: FakeTokenEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Postgres down drops its LISTEN connection too; the feed's "*" flush must not turn a valid token into 503s."""
    await logged_in(manager, token_endpoint)

    async def down(account: str) -> None:
        raise TokenStoreError("cannot reach PostgreSQL at db:5432/litellm: connection refused")

    monkeypatch.setattr(manager.store, "load", down)
    manager._on_change("*")
    assert (await manager.get_tokens()).access == "sk-ant-oat01-access1"
    monkeypatch.undo()
    await manager.store.delete("default")  # a logout elsewhere, seen once the store is back
    manager._on_change("default")
    with pytest.raises(NotLoggedInError):
        await manager.get_tokens()
