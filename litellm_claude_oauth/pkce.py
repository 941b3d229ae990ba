"""RFC 7636 (PKCE) with the S256 method, plus the OAuth ``state`` value."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

# RFC 7636 section 4.1: unreserved characters, 43 to 128 of them.
_VERIFIER_RE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")


def generate_code_verifier(length: int = 64) -> str:
    if not 43 <= length <= 128:
        raise ValueError("code_verifier length must be between 43 and 128")
    # token_urlsafe yields ~1.3 chars per byte, all in the unreserved set.
    return secrets.token_urlsafe(length)[:length]


def validate_code_verifier(verifier: str) -> str:
    if not _VERIFIER_RE.match(verifier):
        raise ValueError("code_verifier must be 43-128 characters of [A-Za-z0-9-._~]")
    return verifier


def create_s256_code_challenge(verifier: str) -> str:
    digest = hashlib.sha256(validate_code_verifier(verifier).encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def generate_state() -> str:
    return secrets.token_urlsafe(32)
