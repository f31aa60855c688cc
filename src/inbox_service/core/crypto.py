"""Encryption of stored credentials (Fernet: AES-128-CBC + HMAC-SHA256, with key rotation)."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr


class CredentialCipher:
    """Encrypts secrets with the first key; decrypts with any (comma-separated keys rotate)."""

    def __init__(self, keys: str) -> None:
        parts = [k.strip() for k in keys.split(",") if k.strip()]
        if not parts:
            raise ValueError("INBOX_SECRET_KEY is empty")
        self._fernet = MultiFernet([Fernet(k.encode()) for k in parts])

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise ValueError("stored credential cannot be decrypted with INBOX_SECRET_KEY") from exc


def generate_key() -> str:
    return Fernet.generate_key().decode()


def cipher_from(key: SecretStr | None) -> CredentialCipher | None:
    """The cipher for the configured INBOX_SECRET_KEY, or None when none is configured."""
    return CredentialCipher(key.get_secret_value()) if key is not None else None
