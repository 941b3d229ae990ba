import json
from pathlib import Path

import pytest

from litellm_claude_oauth.crypto import Cipher, key_id
from litellm_claude_oauth.errors import DecryptionError
from litellm_claude_oauth.settings import Settings
from litellm_claude_oauth.store.base import AccountRecord
from litellm_claude_oauth.store.file import FileTokenStore
from litellm_claude_oauth.tokens import TokenSet

A, B = bytes.fromhex("a1" * 32), bytes.fromhex("b2" * 32)
PAYLOAD = {"access_token": "sk-ant-oat01-secret", "n": 1}


def test_round_trip_and_no_plaintext() -> None:
    envelope = Cipher(A).seal(PAYLOAD, "account:default")
    assert envelope["alg"] == "AES-256-GCM" and envelope["kid"] == key_id(A)
    assert "sk-ant" not in str(envelope)
    assert Cipher(A).open(envelope, "account:default") == PAYLOAD


def test_nonce_is_fresh_each_time() -> None:
    cipher = Cipher(A)
    assert cipher.seal(PAYLOAD, "x")["nonce"] != cipher.seal(PAYLOAD, "x")["nonce"]


def test_wrong_key_names_the_missing_key() -> None:
    envelope = Cipher(A).seal(PAYLOAD, "account:default")
    with pytest.raises(DecryptionError, match="not configured"):
        Cipher(B).open(envelope, "account:default")
    with pytest.raises(DecryptionError, match="CLAUDE_TOKEN_ENCRYPTION_KEY"):
        Cipher(None).open(envelope, "account:default")


def test_record_cannot_be_moved_to_another_account() -> None:
    envelope = Cipher(A).seal(PAYLOAD, "account:alice")
    with pytest.raises(DecryptionError, match="failed authentication"):
        Cipher(A).open(envelope, "account:bob")


def test_tampering_is_detected() -> None:
    envelope = Cipher(A).seal(PAYLOAD, "a")
    envelope["ct"] = envelope["ct"][:-4] + ("AAAA" if envelope["ct"][-4:] != "AAAA" else "BBBB")
    with pytest.raises(DecryptionError):
        Cipher(A).open(envelope, "a")


def test_rotation_opens_with_old_key_and_flags_reseal() -> None:
    old_envelope = Cipher(A).seal(PAYLOAD, "a")
    rotated = Cipher(B, (A,))
    assert rotated.open(old_envelope, "a") == PAYLOAD
    assert not rotated.is_current(old_envelope)
    assert rotated.is_current(rotated.seal(PAYLOAD, "a"))


def test_plaintext_is_refused_once_a_key_is_set() -> None:
    # Audit M3: whoever can write the store could plant unauthenticated tokens.
    plain = Cipher(None).seal(PAYLOAD, "a")
    assert plain["alg"] == "none" and Cipher(None).open(plain, "a") == PAYLOAD
    with pytest.raises(DecryptionError, match="not encrypted although CLAUDE_TOKEN_ENCRYPTION_KEY is set") as info:
        Cipher(A).open(plain, "a")
    assert "CLAUDE_TOKEN_ALLOW_PLAINTEXT_MIGRATION=1" in str(info.value) and "\n" not in str(info.value)
    assert "sk-ant" not in str(info.value)


def test_plaintext_migration_flag_reads_and_flags_reseal() -> None:
    plain = Cipher(None).seal(PAYLOAD, "a")
    migrating = Cipher(A, allow_plaintext=True)
    assert migrating.open(plain, "a") == PAYLOAD
    assert not migrating.is_current(plain)
    assert migrating.seal(PAYLOAD, "a")["alg"] == "AES-256-GCM"  # re-sealed with the key, never in clear


def test_without_a_current_key_nothing_is_flagged_for_reseal() -> None:
    # Re-sealing without a current key would write tokens in clear (audit M3).
    sealed = Cipher(A).seal(PAYLOAD, "a")
    old_only = Cipher(None, (A,))
    assert old_only.open(sealed, "a") == PAYLOAD
    assert old_only.is_current(sealed) and old_only.is_current(Cipher(None).seal(PAYLOAD, "a"))
    assert old_only.is_current("garbage")


def test_cipher_for_settings_takes_keys_and_migration_flag() -> None:
    settings = Settings.from_env({"CLAUDE_TOKEN_ENCRYPTION_KEY": "b2" * 32})
    cipher = Cipher.for_settings(settings)
    assert cipher.enabled and not cipher.allow_plaintext and cipher.open(Cipher(B).seal(PAYLOAD, "a"), "a") == PAYLOAD
    migrating = Cipher.for_settings(
        Settings.from_env({"CLAUDE_TOKEN_ENCRYPTION_KEY": "b2" * 32, "CLAUDE_TOKEN_ALLOW_PLAINTEXT_MIGRATION": "1"})
    )
    assert migrating.allow_plaintext


def _record() -> AccountRecord:
    tokens = TokenSet.from_token_response({"access_token": "sk-ant-oat01-real", "refresh_token": "sk-ant-ort01-real"})
    return AccountRecord(account="default", tokens=tokens)


def _plant(path: Path) -> None:
    forged = {"account": "default", "tokens": {"access_token": "sk-ant-oat01-ATTACKER", "expires_at": 9e9}}
    doc = {"format": "litellm-claude-oauth", "version": 1, "pending": {},
           "accounts": {"default": {"v": 1, "alg": "none", "data": forged}}}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


async def test_planted_plaintext_record_is_not_loaded(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    _plant(path)
    with pytest.raises(DecryptionError, match="not encrypted"):
        await FileTokenStore(path, Cipher(A)).load("default")
    assert "ATTACKER" in path.read_text()  # refused, not rewritten


async def test_migration_flag_encrypts_a_plaintext_store_on_read(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    await FileTokenStore(path, Cipher(None)).save(_record())
    loaded = await FileTokenStore(path, Cipher(A, allow_plaintext=True)).load("default")
    assert loaded is not None and loaded.tokens.access == "sk-ant-oat01-real"
    assert "sk-ant" not in path.read_text()
    assert (await FileTokenStore(path, Cipher(A)).load("default")) is not None  # flag no longer needed


async def test_old_key_only_never_decrypts_the_store_to_disk(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    await FileTokenStore(path, Cipher(A)).save(_record())
    loaded = await FileTokenStore(path, Cipher(None, (A,))).load("default")
    assert loaded is not None and loaded.tokens.refresh == "sk-ant-ort01-real"
    envelope = json.loads(path.read_text())["accounts"]["default"]
    assert envelope["alg"] == "AES-256-GCM" and "sk-ant" not in path.read_text()
