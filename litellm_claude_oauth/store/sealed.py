"""Sealing: the one place that turns records into envelopes and back.

The stores (file, Postgres, the Redis pending logins) only move envelopes; what an
envelope holds and how it is bound lives here. Each is sealed by
:class:`~litellm_claude_oauth.crypto.Cipher` with associated data that names the record
(``account:<id>``, ``pending:<state>``), so an envelope copied to another account or
login does not open. Key rotation is written once: :meth:`Sealer.needs_reseal` says
whether an envelope was sealed under an old key (or in clear before a key was set),
:meth:`Sealer.reseal` seals its content again under the current one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import ValidationError

from ..crypto import Cipher
from ..errors import DecryptionError
from ..tokens import PendingLogin
from .base import AccountRecord

Kind = Literal["account", "pending"]
Envelope = dict[str, Any]


def _aad(kind: Kind, key: str) -> str:
    return f"{kind}:{key}"


class Sealer:
    def __init__(self, cipher: Cipher):
        self.cipher = cipher

    @property
    def encrypted(self) -> bool:
        return self.cipher.enabled

    # -- accounts --------------------------------------------------------------------

    def seal_account(self, record: AccountRecord) -> Envelope:
        return self.cipher.seal(record.to_storage(), _aad("account", record.account))

    def open_account(self, account: str, envelope: Any) -> AccountRecord:
        return AccountRecord.from_storage(self.cipher.open(envelope, _aad("account", account)), account)

    # -- pending logins --------------------------------------------------------------

    def seal_pending(self, pending: PendingLogin) -> Envelope:
        return self.cipher.seal(pending.to_storage(), _aad("pending", pending.state))

    def open_pending(self, state: str, envelope: Any) -> PendingLogin:
        return PendingLogin.model_validate(self.cipher.open(envelope, _aad("pending", state)))

    def pending_of(self, sealed: Iterable[tuple[str, Any]], account: str) -> list[PendingLogin]:
        """Open ``(state, envelope)`` pairs and keep the account's logins, oldest first."""
        found = []
        for state, envelope in sealed:
            try:
                pending = self.open_pending(state, envelope)
            except (DecryptionError, ValidationError):
                continue  # a login started under another key cannot be finished anyway
            if pending.account == account:
                found.append(pending)
        return sorted(found, key=lambda p: p.created_at)

    def pending_started(self, state: str, envelope: Any) -> float:
        """When the login began; 0 for one that does not open (it can never be finished: prune it)."""
        try:
            return self.open_pending(state, envelope).created_at
        except (DecryptionError, ValidationError):
            return 0.0

    # -- key rotation ----------------------------------------------------------------

    def needs_reseal(self, envelope: Any) -> bool:
        return not self.cipher.is_current(envelope)

    def reseal(self, kind: Kind, key: str, envelope: Any) -> Envelope:
        aad = _aad(kind, key)
        return self.cipher.seal(self.cipher.open(envelope, aad), aad)
