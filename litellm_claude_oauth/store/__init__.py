"""Token stores: where an account's (encrypted) tokens and pending logins live."""

from __future__ import annotations

from ..crypto import Cipher
from ..settings import Settings
from .base import AccountRecord, TokenStore

__all__ = ["AccountRecord", "TokenStore", "build_store", "cipher_for"]


def cipher_for(settings: Settings) -> Cipher:
    return Cipher.for_settings(settings)


def build_store(settings: Settings) -> TokenStore:
    """The store named by CLAUDE_TOKEN_STORE; backends are imported only when chosen."""
    from ..locks import lock_wait, refresh_bound

    cipher = cipher_for(settings)
    # Waiters must outlast a slow but successful refresh, or they fail while it succeeds (audit L10).
    wait = lock_wait(refresh_bound(settings))
    if settings.store == "postgres":
        from .postgres import PostgresTokenStore

        assert settings.database_url is not None  # Settings.from_env guarantees it
        return PostgresTokenStore(settings.database_url.get_secret_value(), cipher, lock_timeout=wait)
    from .file import FileTokenStore

    return FileTokenStore(settings.token_file, cipher, lock_timeout=wait)
