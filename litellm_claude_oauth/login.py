"""Browser login: start (PKCE + pending login), then finish with the pasted code.

The two halves may run in different processes or replicas (``login`` in a terminal,
``callback`` or the HTTP route elsewhere), so everything the second half needs — the
verifier, the account, the exact redirect_uri — travels in the sealed pending login.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr

from .errors import LoginStateError, OAuthError
from .oauth import OAuthClient, build_authorize_url, parse_authorization_input
from .pending import PendingLogins
from .pkce import create_s256_code_challenge, generate_code_verifier, generate_state
from .settings import Settings, validate_account_id
from .store import AccountRecord, TokenStore
from .tokens import PendingLogin, TokenSet


class LoginStart(BaseModel):
    model_config = ConfigDict(frozen=True)

    authorization_url: str
    state: str
    account: str
    expires_at: float


def replace_credentials(
    current: AccountRecord | None, account: str, tokens: TokenSet, now: float, linked: str | None = None
) -> AccountRecord:
    """The record a fresh login or import writes over whatever is stored.

    A rest Anthropic imposed on this Claude account still holds after a new login, so
    cooldowns survive when the new tokens belong to the same Claude account.
    """
    same_user = (
        current is not None
        and tokens.account_uuid is not None
        and current.tokens.account_uuid == tokens.account_uuid
    )
    health: dict[str, Any] = (
        {"cooldown_until": current.cooldown_until, "cooldown_reason": current.cooldown_reason,
         "model_cooldowns": current.model_cooldowns}
        if same_user and current is not None
        else {}
    )
    return AccountRecord(account=account, tokens=tokens, updated_at=now, linked_credentials=linked, **health)


class LoginFlow:
    def __init__(
        self,
        settings: Settings,
        store: TokenStore,
        pending: PendingLogins,
        oauth: OAuthClient,
        on_login: Callable[[AccountRecord], Awaitable[None]],
        clock: Callable[[], float] = time.time,
    ):
        self.settings = settings
        self._store = store
        self._pending = pending
        self._oauth = oauth
        self._on_login = on_login
        self._clock = clock

    def _account(self, account: str | None) -> str:
        return validate_account_id(account) if account else self.settings.default_account

    async def start(self, account: str | None = None) -> LoginStart:
        account = self._account(account)
        verifier = generate_code_verifier()
        state = generate_state()
        now = self._clock()
        pending = PendingLogin(
            state=state,
            code_verifier=SecretStr(verifier),
            account=account,
            redirect_uri=self.settings.redirect_uri,
            created_at=now,
        )
        await self._pending.prune_pending(now - self.settings.login_state_ttl_seconds)
        await self._pending.put_pending(pending)
        url = build_authorize_url(self.settings, code_challenge=create_s256_code_challenge(verifier), state=state)
        return LoginStart(
            authorization_url=url, state=state, account=account, expires_at=now + self.settings.login_state_ttl_seconds
        )

    async def complete(self, code_input: str, *, state: str | None = None, account: str | None = None) -> AccountRecord:
        try:
            code, pasted_state = parse_authorization_input(code_input)
        except ValueError as exc:
            raise LoginStateError(str(exc)) from None
        if state and pasted_state and state != pasted_state:
            raise LoginStateError("the state in the pasted code does not match the login being completed")
        state = state or pasted_state or await self._latest_pending_state(self._account(account))

        pending = await self._pending.take_pending(state)
        if pending is None:
            raise LoginStateError(
                "this login is unknown or was already used; start a new one with `litellm claude login`"
            )
        if account is not None and pending.account != self._account(account):
            await self._pending.put_pending(pending)
            raise LoginStateError(f"this login was started for account '{pending.account}', not '{account}'")
        ttl = self.settings.login_state_ttl_seconds
        if pending.expired(ttl, self._clock()):
            raise LoginStateError(
                f"this login expired (codes are good for {ttl // 60} minutes); run `litellm claude login` again"
            )
        try:
            tokens = await self._oauth.exchange_code(
                code=code,
                state=state,
                code_verifier=pending.code_verifier.get_secret_value(),
                # Must repeat the authorize request's redirect_uri exactly, even if this
                # process was started with another CLAUDE_OAUTH_REDIRECT_URI.
                redirect_uri=pending.redirect_uri,
            )
        except OAuthError as exc:
            if not exc.reached_server:
                await self._pending.put_pending(pending)  # the code is unspent: let the user retry
            raise
        now = self._clock()
        record = await self._store.update(
            pending.account, lambda current: replace_credentials(current, pending.account, tokens, now)
        )
        assert record is not None
        await self._on_login(record)
        return record

    async def _latest_pending_state(self, account: str) -> str:
        now = self._clock()
        ttl = self.settings.login_state_ttl_seconds
        live = [p for p in await self._pending.pending_for(account) if not p.expired(ttl, now)]
        if not live:
            raise LoginStateError(
                f"no login in progress for account '{account}' (or it expired); run `litellm claude login` first"
            )
        return live[-1].state
