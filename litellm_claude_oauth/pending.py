"""Pending logins in Redis, so ``start`` on one replica and ``exchange`` on another works.

Records are sealed with the same cipher as the token store and expire on their own
(Redis TTL = the login's lifetime). ``take`` is GET and DEL in one MULTI/EXEC (not
GETDEL, which needs Redis 6.2): a state is good for one exchange even with two
replicas racing. While Redis is unreachable, the token store keeps pending logins
instead (with a warning), so logging in keeps working.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any, Protocol

from .crypto import Cipher
from .errors import TokenStoreError
from .locks import REDIS_KEY_PREFIX
from .store.base import TokenStore
from .store.sealed import Sealer
from .tokens import PendingLogin

log = logging.getLogger(__name__)


class PendingLogins(Protocol):
    """The pending-login half of :class:`TokenStore`; a store satisfies it as is."""

    async def put_pending(self, pending: PendingLogin) -> None: ...

    async def take_pending(self, state: str) -> PendingLogin | None: ...

    async def pending_for(self, account: str) -> list[PendingLogin]: ...

    async def prune_pending(self, older_than: float) -> int: ...


class RedisPendingLogins:
    def __init__(
        self, redis: Any, cipher: Cipher, fallback: TokenStore, *, ttl: int, key_prefix: str = REDIS_KEY_PREFIX
    ):
        """The Redis client belongs to the caller, who closes it."""
        self._redis = redis
        self._sealer = Sealer(cipher)
        self._fallback = fallback
        self._ttl = ttl
        self._key_prefix = key_prefix

    def _key(self, state: str) -> str:
        return f"{self._key_prefix}:pending:{state}"

    def _index(self, account: str) -> str:
        return f"{self._key_prefix}:pending-by-account:{account}"

    async def put_pending(self, pending: PendingLogin) -> None:
        from redis.exceptions import RedisError

        sealed = self._sealer.seal_pending(pending)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._key(pending.state), json.dumps(sealed), ex=self._ttl)
                pipe.zadd(self._index(pending.account), {pending.state: pending.created_at})
                pipe.expire(self._index(pending.account), self._ttl)
                await pipe.execute()
        except RedisError as exc:
            log.warning("Redis unavailable for pending logins (%s); keeping this one in the token store",
                        type(exc).__name__)
            await self._fallback.put_pending(pending)

    async def take_pending(self, state: str) -> PendingLogin | None:
        from redis.exceptions import RedisError

        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.get(self._key(state))
                pipe.delete(self._key(state))
                raw, _ = await pipe.execute()
        except RedisError as exc:
            log.warning("Redis unavailable for pending logins (%s); looking in the token store", type(exc).__name__)
            found = await self._fallback.take_pending(state)
            if found is None:
                # It may well be in Redis (it was up when the login started): "unknown
                # login" would send the user to start over for nothing.
                raise TokenStoreError(
                    f"cannot finish this login now: Redis, where it may be kept, is unavailable "
                    f"({type(exc).__name__}); try the same code again in a moment"
                ) from None
            return found
        if raw is None:
            # Started while Redis was down, or before Redis was configured.
            return await self._fallback.take_pending(state)
        pending = self._sealer.open_pending(state, json.loads(raw))
        with contextlib.suppress(RedisError):  # the index only helps find bare codes; a stale entry is skipped later
            await self._redis.zrem(self._index(pending.account), state)
        return pending

    async def pending_for(self, account: str) -> list[PendingLogin]:
        from redis.exceptions import RedisError

        try:
            members = await self._redis.zrange(self._index(account), 0, -1)
            states = [s.decode() if isinstance(s, bytes) else s for s in members]
            raws = await self._redis.mget([self._key(s) for s in states]) if states else []
        except RedisError as exc:
            log.warning("Redis unavailable for pending logins (%s); looking in the token store", type(exc).__name__)
            return await self._fallback.pending_for(account)
        sealed = [(state, json.loads(raw)) for state, raw in zip(states, raws, strict=True) if raw is not None]
        found = self._sealer.pending_of(sealed, account) + await self._fallback.pending_for(account)
        return sorted(found, key=lambda p: p.created_at)

    async def prune_pending(self, older_than: float) -> int:
        # Redis expires its own records; only the fallback store needs pruning.
        return await self._fallback.prune_pending(older_than)

