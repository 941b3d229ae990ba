"""AES-256-GCM envelopes for tokens at rest, with key rotation.

An envelope names the key it was sealed with (a short fingerprint, not the key), so
decryption picks the right key directly and a missing key is reported as such rather
than as "corrupt data". The record id is bound in as associated data: a ciphertext
copied from one account to another does not decrypt.

With a key configured, an unencrypted (``alg: none``) envelope is refused: anyone able to
write the store could otherwise plant tokens that skip authentication (audit M3). A
store written before the key was set is migrated by running once with
``CLAUDE_TOKEN_ALLOW_PLAINTEXT_MIGRATION=1``. Nothing is ever re-sealed *to* plaintext.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import DecryptionError

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger(__name__)

ENVELOPE_VERSION = 1
_ALG_GCM = "AES-256-GCM"
_ALG_NONE = "none"


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"litellm-claude-oauth:" + key).hexdigest()[:12]


class Cipher:
    """Seals with the current key; opens with the current or any old key."""

    def __init__(self, current: bytes | None, old: tuple[bytes, ...] = (), *, allow_plaintext: bool = False):
        for key in (current, *old):
            if key is not None and len(key) != 32:
                raise ValueError("AES-256 keys are 32 bytes")
        self._current = current
        self._keys = {key_id(k): k for k in (*old, *(() if current is None else (current,)))}
        # Only matters with a current key: without one, plaintext is the store's format.
        self.allow_plaintext = allow_plaintext

    @classmethod
    def for_settings(cls, settings: Settings) -> Cipher:
        current, old = settings.key_bytes()
        return cls(current, old, allow_plaintext=settings.allow_plaintext_migration)

    @property
    def enabled(self) -> bool:
        return self._current is not None

    def seal(self, payload: dict[str, Any], aad: str) -> dict[str, Any]:
        plaintext = json.dumps(payload, separators=(",", ":")).encode()
        if self._current is None:
            return {"v": ENVELOPE_VERSION, "alg": _ALG_NONE, "data": payload}
        nonce = os.urandom(12)
        ct = AESGCM(self._current).encrypt(nonce, plaintext, aad.encode())
        return {
            "v": ENVELOPE_VERSION,
            "alg": _ALG_GCM,
            "kid": key_id(self._current),
            "nonce": base64.b64encode(nonce).decode(),
            "ct": base64.b64encode(ct).decode(),
        }

    def open(self, envelope: Any, aad: str) -> dict[str, Any]:
        if not isinstance(envelope, dict) or envelope.get("v") != ENVELOPE_VERSION:
            raise DecryptionError(f"stored record '{aad}' is not a token envelope this version understands")
        alg = envelope.get("alg")
        if alg == _ALG_NONE:
            if self._current is not None and not self.allow_plaintext:
                raise DecryptionError(
                    f"stored record '{aad}' is not encrypted although CLAUDE_TOKEN_ENCRYPTION_KEY is set; "
                    "refusing it (it may have been planted). If it was written before the key was set, "
                    "run once with CLAUDE_TOKEN_ALLOW_PLAINTEXT_MIGRATION=1 to encrypt it"
                )
            data = envelope.get("data")
            if not isinstance(data, dict):
                raise DecryptionError(f"stored record '{aad}' is malformed")
            if self._current is not None:
                log.warning("stored record '%s' was not encrypted; it will be re-encrypted (plaintext migration)", aad)
            return data
        if alg != _ALG_GCM:
            raise DecryptionError(f"stored record '{aad}' uses unknown algorithm {alg!r}")
        kid = envelope.get("kid")
        key = self._keys.get(str(kid))
        if key is None:
            hint = (
                "set CLAUDE_TOKEN_ENCRYPTION_KEY"
                if not self._keys
                else "add the key it was written with to CLAUDE_TOKEN_ENCRYPTION_KEYS_OLD"
            )
            raise DecryptionError(
                f"stored record '{aad}' was encrypted with a key that is not configured (key id {kid}); {hint}"
            )
        try:
            nonce = base64.b64decode(envelope["nonce"])
            ct = base64.b64decode(envelope["ct"])
            plaintext = AESGCM(key).decrypt(nonce, ct, aad.encode())
            data = json.loads(plaintext)
        except (InvalidTag, KeyError, ValueError, TypeError):
            raise DecryptionError(
                f"stored record '{aad}' failed authentication: it was altered or belongs to another record"
            ) from None
        if not isinstance(data, dict):
            raise DecryptionError(f"stored record '{aad}' is malformed")
        return data

    def is_current(self, envelope: Any) -> bool:
        """False when the envelope should be re-sealed (old key, or plaintext now that a key is set).

        Without a current key every envelope counts as current: re-sealing would write
        tokens in clear.
        """
        if self._current is None:
            return True
        if not isinstance(envelope, dict):
            return False
        return envelope.get("alg") == _ALG_GCM and envelope.get("kid") == key_id(self._current)
