"""Encryption of stored secrets (AES-256-GCM, key derived from SIGNAL_SECRET_KEY)."""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "enc1:"


class SecretBox:
    def __init__(self, secret_key: str) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"signal-edge stored secrets").derive(
            secret_key.encode()
        )
        self._aead = AESGCM(key)

    def seal(self, plaintext: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), b"signal-edge")
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, token: str) -> str:
        if not token.startswith(PREFIX):
            raise ValueError("not a sealed secret")
        raw = base64.urlsafe_b64decode(token[len(PREFIX):])
        return self._aead.decrypt(raw[:12], raw[12:], b"signal-edge").decode()


def mask(secret: str | None) -> str | None:
    """What the API shows of a secret: its prefix and last 4 characters."""
    if not secret:
        return secret
    prefix = secret.split("_", 1)[0] + "_" if "_" in secret[:6] else ""
    if len(secret) <= len(prefix) + 8:
        return prefix + "****"
    return f"{prefix}****{secret[-4:]}"
