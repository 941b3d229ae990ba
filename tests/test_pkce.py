import base64
import re

import pytest

from litellm_claude_oauth import pkce


def test_rfc7636_appendix_b_vector() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce.create_s256_code_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


@pytest.mark.parametrize("length", [43, 64, 128])
def test_generated_verifier_is_valid(length: int) -> None:
    verifier = pkce.generate_code_verifier(length)
    assert len(verifier) == length
    assert pkce.validate_code_verifier(verifier) == verifier
    assert len(pkce.create_s256_code_challenge(verifier)) == 43


@pytest.mark.parametrize("bad", ["short", "a" * 129, "x" * 42 + " ", "é" * 50])
def test_bad_verifiers_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        pkce.create_s256_code_challenge(bad)


def test_verifier_length_bounds() -> None:
    with pytest.raises(ValueError):
        pkce.generate_code_verifier(42)
    with pytest.raises(ValueError):
        pkce.generate_code_verifier(129)


def test_state_and_verifier_are_unpredictable() -> None:
    assert len({pkce.generate_state() for _ in range(100)}) == 100
    assert len({pkce.generate_code_verifier() for _ in range(100)}) == 100


def test_state_is_32_random_bytes_in_43_base64url_characters() -> None:
    # protocol-2026 §2.1: the authorize page rejects states that are not 32 bytes
    # base64url (43 characters); 16-byte states are silently refused.
    for _ in range(50):
        state = pkce.generate_state()
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", state)
        assert len(base64.urlsafe_b64decode(state + "=")) == 32
