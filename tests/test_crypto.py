import pytest

from litellm_claude_oauth.crypto import Cipher, key_id
from litellm_claude_oauth.errors import DecryptionError

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


def test_plaintext_mode_upgrades_when_a_key_appears() -> None:
    plain = Cipher(None).seal(PAYLOAD, "a")
    assert plain["alg"] == "none"
    assert Cipher(A).open(plain, "a") == PAYLOAD
    assert not Cipher(A).is_current(plain)
