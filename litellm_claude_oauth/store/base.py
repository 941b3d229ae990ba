"""What every token store provides.

Stores hold two kinds of record, both sealed (see :mod:`.sealed`; the stores move only
envelopes): the token set of each account, and pending logins (PKCE verifier + state)
that let ``login`` and ``callback`` run in different processes or replicas.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from ..errors import TokenStoreError
from ..tokens import PendingLogin, TokenSet


class AccountRecord(BaseModel):
    """An account's tokens plus what the plugin learned about their health."""

    model_config = ConfigDict(frozen=True)

    account: str
    tokens: TokenSet
    # Set when Anthropic refused the refresh token for good; cleared by the next login.
    relogin_reason: str | None = None
    # Set when Anthropic rate-limited the account (429): skipped by pools until then.
    cooldown_until: float | None = None
    cooldown_reason: str | None = None
    # Rejections of a model-scoped window (e.g. the 7-day Opus limit): family -> (until, reason).
    model_cooldowns: dict[str, tuple[float, str]] = Field(default_factory=dict)
    # Claude Code's credentials file this account shares its refresh token with (import --linked).
    linked_credentials: str | None = None
    updated_at: float = Field(default_factory=time.time)

    @property
    def credential(self) -> str:
        """What identifies this grant: a refresh rotates it, a login replaces it.

        Writes that carry tokens compare it with what they started from, so a stale
        writer can never put a spent refresh token back.
        """
        return self.tokens.refresh or self.tokens.access

    def to_storage(self) -> dict[str, object]:
        data: dict[str, object] = {
            "account": self.account,
            "tokens": self.tokens.to_storage(),
            "relogin_reason": self.relogin_reason,
            "cooldown_until": self.cooldown_until,
            "cooldown_reason": self.cooldown_reason,
            "updated_at": self.updated_at,
        }
        # Only written when set, so records stay readable by earlier versions.
        if self.model_cooldowns:
            data["model_cooldowns"] = {k: list(v) for k, v in self.model_cooldowns.items()}
        if self.linked_credentials:
            data["linked_credentials"] = self.linked_credentials
        return data

    @classmethod
    def from_storage(cls, data: dict[str, Any], account: str) -> AccountRecord:
        try:
            return cls(
                account=account,
                tokens=TokenSet.model_validate(data["tokens"]),
                relogin_reason=data.get("relogin_reason"),
                cooldown_until=data.get("cooldown_until"),
                cooldown_reason=data.get("cooldown_reason"),
                model_cooldowns={
                    str(k): (float(v[0]), str(v[1])) for k, v in (data.get("model_cooldowns") or {}).items()
                },
                linked_credentials=data.get("linked_credentials"),
                updated_at=float(data.get("updated_at") or time.time()),
            )
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise TokenStoreError(f"stored record for '{account}' is malformed: {type(exc).__name__}") from None


Change = Callable[["AccountRecord | None"], "AccountRecord | None"]
"""A read-modify-write step: gets the stored record (None if absent) and returns what to store.

Returning the argument itself writes nothing; returning None deletes the record. Raising
aborts with nothing written. It runs under the store's write lock, so it must be quick
and do no I/O.
"""


@runtime_checkable
class TokenStore(Protocol):
    @property
    def location(self) -> str:
        """Where tokens live, for ``status`` (never includes a password)."""
        ...

    @property
    def encrypted(self) -> bool: ...

    async def load(self, account: str) -> AccountRecord | None: ...

    async def save(self, record: AccountRecord) -> None:
        """Unconditional write. Only for records that replace whatever is there (tests, tools)."""
        ...

    async def update(self, account: str, change: Change) -> AccountRecord | None:
        """Atomic read-modify-write of one record under the store's lock; returns what is stored after.

        Every mutation the manager makes goes through here: a cooldown changes only the
        cooldown fields of the record as it is *now*, and a refresh commits only if the
        stored credential is still the one it started from.
        """
        ...

    async def delete(self, account: str) -> bool: ...

    async def accounts(self) -> list[str]: ...

    async def put_pending(self, pending: PendingLogin) -> None: ...

    async def take_pending(self, state: str) -> PendingLogin | None:
        """Remove and return the pending login for ``state``: a state is good for one exchange."""
        ...

    async def pending_for(self, account: str) -> list[PendingLogin]: ...

    async def prune_pending(self, older_than: float) -> int:
        """Drop pending logins started before ``older_than`` (unix seconds); how many went."""
        ...

    def lock(self, account: str) -> AbstractAsyncContextManager[None]:
        """Cross-process lock serialising refreshes of one account."""
        ...

    async def rotate_keys(self) -> int:
        """Re-seal every record with the current key; returns how many were rewritten."""
        ...

    async def close(self) -> None: ...
