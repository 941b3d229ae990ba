"""Account health: which accounts a pool may use right now, and why not.

Two kinds of trouble, both learnt from Anthropic and both shared through the store:

* a **cooldown** after a quota 429: the whole account, or one model family when only a
  model-scoped window (e.g. the 7-day Opus limit) was rejected;
* **re-login required** after ``invalid_grant``: the account is skipped until someone
  logs in again.

The in-memory view is a cache of the store, never the other way round: writes go
through :meth:`TokenStore.update`, which changes only the health fields of the record
as it is at that moment, so a cooldown can never write back a spent refresh token (audit
H1). Entries are dropped when another process announces a change (so a re-login brings
the account back at once, audit H5), and "needs re-login" also expires after a while,
so processes without change events recover too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import TokenStoreError
from .ratelimit import Cooldown
from .store import AccountRecord, TokenStore

log = logging.getLogger(__name__)

# Without change events a worker re-checks the store for a dead account this often.
UNUSABLE_RECHECK_SECONDS = 30.0


class AccountHealth:
    def __init__(
        self,
        store: TokenStore,
        announce: Callable[[str], Awaitable[None]],
        clock: Callable[[], float] = time.time,
    ):
        self._store = store
        self._announce = announce
        self._clock = clock
        self._cooldowns: dict[str, Cooldown] = {}
        self._family_cooldowns: dict[tuple[str, str], Cooldown] = {}
        self._unusable: dict[str, tuple[str, float]] = {}

    def note(self, record: AccountRecord) -> None:
        """Take what the store says about an account (called on every store read)."""
        now, account = self._clock(), record.account
        if record.cooldown_until is not None and record.cooldown_until > now:
            reason = record.cooldown_reason or "rate limited"
            self._cooldowns[account] = Cooldown(until=record.cooldown_until, reason=reason)
        else:
            self._cooldowns.pop(account, None)
        for key in [k for k in self._family_cooldowns if k[0] == account]:
            del self._family_cooldowns[key]
        for family, (until, reason) in record.model_cooldowns.items():
            if until > now:
                self._family_cooldowns[(account, family)] = Cooldown(until=until, reason=reason, model_family=family)
        if record.relogin_reason is not None:
            self._unusable[account] = (record.relogin_reason, now)
        else:
            self._unusable.pop(account, None)

    def forget(self, account: str | None) -> None:
        """Another process changed the account: the next use re-reads it from the store."""
        if account is None:
            self._cooldowns.clear()
            self._family_cooldowns.clear()
            self._unusable.clear()
            return
        self._cooldowns.pop(account, None)
        self._unusable.pop(account, None)
        for key in [k for k in self._family_cooldowns if k[0] == account]:
            del self._family_cooldowns[key]

    def mark_unusable(self, account: str, reason: str) -> None:
        self._unusable[account] = (reason, self._clock())

    async def suspend(self, account: str, reason: str) -> None:
        """Anthropic refused the account as a whole (disabled organization): stop using it until a new login.

        Recorded as "re-login required" in the store, so every worker and ``status`` see it.
        """
        self.mark_unusable(account, reason)

        def flag(record: AccountRecord | None) -> AccountRecord | None:
            if record is None or record.relogin_reason is not None:
                return record
            return record.model_copy(update={"relogin_reason": reason})

        try:
            await self._store.update(account, flag)
        except TokenStoreError as exc:
            log.warning("could not record that '%s' is refused in the store: %s", account, exc)
            return
        log.error("Claude account '%s' was refused by Anthropic and is no longer used: %s", account, reason)
        await self._announce(account)

    def unusable_reason(self, account: str) -> str | None:
        entry = self._unusable.get(account)
        if entry is None:
            return None
        reason, since = entry
        if self._clock() - since > UNUSABLE_RECHECK_SECONDS:
            del self._unusable[account]  # let the next use re-read the store: maybe someone logged in
            return None
        return reason

    def cooldown(self, account: str, family: str | None = None) -> Cooldown | None:
        """The account's rest, or its rest for ``family`` when only that family is limited."""
        if not self._cooldowns and not self._family_cooldowns:
            return None  # every request asks; almost always nothing rests
        now = self._clock()
        found = self._live(self._cooldowns, account, now)
        if family is not None:
            scoped = self._live(self._family_cooldowns, (account, family), now)
            if scoped is not None and (found is None or scoped.until > found.until):
                found = scoped
        return found

    @staticmethod
    def _live(table: dict[Any, Cooldown], key: object, now: float) -> Cooldown | None:
        cooldown = table.get(key)
        if cooldown is not None and cooldown.until <= now:
            del table[key]
            return None
        return cooldown

    async def cool_down(self, account: str, cooldown: Cooldown) -> None:
        """Rest an account (or one of its model families) until the window resets; every worker sees it."""
        family = cooldown.model_family
        current = self.cooldown(account, family)
        if current is not None and current.until >= cooldown.until:
            return
        if family is None:
            self._cooldowns[account] = cooldown
        else:
            self._family_cooldowns[(account, family)] = cooldown
        log.warning("Claude account '%s' %s; resting it%s until %s UTC", account, cooldown.reason,
                    f" for {family} models" if family else "", time.strftime("%H:%M:%S", time.gmtime(cooldown.until)))

        def rest(record: AccountRecord | None) -> AccountRecord | None:
            if record is None:
                return None
            if family is None:
                if (record.cooldown_until or 0) >= cooldown.until:
                    return record
                return record.model_copy(update={"cooldown_until": cooldown.until, "cooldown_reason": cooldown.reason})
            if record.model_cooldowns.get(family, (0.0, ""))[0] >= cooldown.until:
                return record
            scoped = {**record.model_cooldowns, family: (cooldown.until, cooldown.reason)}
            return record.model_copy(update={"model_cooldowns": scoped})

        try:
            await self._store.update(account, rest)
        except TokenStoreError as exc:
            log.warning("could not record the cooldown of '%s' in the store: %s", account, exc)
            return
        await self._announce(account)
