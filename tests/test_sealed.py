"""The sealing layer: every store's envelopes are made and opened here, bound to their record."""

from __future__ import annotations

import pytest

from litellm_claude_oauth.crypto import Cipher, key_id
from litellm_claude_oauth.errors import DecryptionError
from litellm_claude_oauth.store.base import AccountRecord
from litellm_claude_oauth.store.sealed import Sealer
from litellm_claude_oauth.tokens import PendingLogin, TokenSet

A, B = bytes.fromhex("a1" * 32), bytes.fromhex("b2" * 32)


def record(account: str) -> AccountRecord:
    tokens = TokenSet(access_token="sk-ant-oat01-real", refresh_token="sk-ant-ort01-real", expires_at=9e9)
    return AccountRecord(account=account, tokens=tokens)


def pending(state: str, account: str, created_at: float) -> PendingLogin:
    return PendingLogin(state=state, code_verifier="v" * 43, account=account,
                        redirect_uri="https://platform.claude.com/oauth/code/callback", created_at=created_at)  # fmt: skip


def test_an_account_envelope_opens_only_as_its_own_account() -> None:
    sealer = Sealer(Cipher(A))
    envelope = sealer.seal_account(record("alice"))
    assert "sk-ant" not in str(envelope)
    assert sealer.open_account("alice", envelope).tokens.refresh == "sk-ant-ort01-real"
    with pytest.raises(DecryptionError, match="failed authentication"):
        sealer.open_account("bob", envelope)


def test_a_pending_login_is_bound_to_its_state_and_never_opens_as_an_account() -> None:
    sealer = Sealer(Cipher(A))
    envelope = sealer.seal_pending(pending("s1", "alice", 10.0))
    assert sealer.open_pending("s1", envelope).account == "alice"
    with pytest.raises(DecryptionError):
        sealer.open_pending("s2", envelope)
    with pytest.raises(DecryptionError):
        sealer.open_account("s1", envelope)


def test_pending_of_keeps_the_accounts_logins_oldest_first_and_skips_what_does_not_open() -> None:
    sealer, other_key = Sealer(Cipher(A)), Sealer(Cipher(B))
    sealed = [
        ("late", sealer.seal_pending(pending("late", "alice", 30.0))),
        ("bob", sealer.seal_pending(pending("bob", "bob", 5.0))),
        ("early", sealer.seal_pending(pending("early", "alice", 10.0))),
        ("foreign", other_key.seal_pending(pending("foreign", "alice", 1.0))),
        ("moved", sealer.seal_pending(pending("elsewhere", "alice", 2.0))),
    ]
    assert [p.state for p in sealer.pending_of(sealed, "alice")] == ["early", "late"]
    assert sealer.pending_started("foreign", sealed[3][1]) == 0.0  # cannot be finished: first to prune
    assert sealer.pending_started("late", sealed[0][1]) == 30.0


def test_rotation_reseals_under_the_current_key_and_keeps_the_content() -> None:
    old = Sealer(Cipher(A)).seal_account(record("alice"))
    rotated = Sealer(Cipher(B, (A,)))
    assert rotated.needs_reseal(old)
    new = rotated.reseal("account", "alice", old)
    assert new["kid"] == key_id(B) and not rotated.needs_reseal(new)
    assert Sealer(Cipher(B)).open_account("alice", new) == rotated.open_account("alice", old)


def test_without_a_key_nothing_is_resealed_into_clear_text() -> None:
    envelope = Sealer(Cipher(A)).seal_account(record("alice"))
    assert not Sealer(Cipher(None, (A,))).needs_reseal(envelope)
    assert not Sealer(Cipher(None)).encrypted and Sealer(Cipher(A)).encrypted
