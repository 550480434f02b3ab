"""Encryption of stored secrets (AES-256-GCM, key derived from SIGNAL_SECRET_KEY)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from delivery.config import SECRET_KEYS, Integration
from delivery.store import StorageUnusable

PREFIX = "enc1:"
STORED_SECRETS = b"signal-edge stored secrets"
CHECK_META = "secret_key_check"  # the database's record of its key: fingerprint(key), never the key


def fingerprint(key: str) -> str:
    return hmac.new(key.encode(), b"signal-edge secret key check", hashlib.sha256).hexdigest()[:32]


class SecretBox:
    """AES-256-GCM with a key derived from the secret key for one `purpose` (stored secrets by
    default); `fingerprint` names the secret key, as the database records it."""

    def __init__(self, secret_key: str, purpose: bytes = STORED_SECRETS) -> None:
        self._secret_key = secret_key
        self.fingerprint = fingerprint(secret_key)
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret_key.encode())
        self._aead = AESGCM(key)

    def for_purpose(self, purpose: bytes) -> SecretBox:
        """A box with another key derived from the same secret key."""
        return SecretBox(self._secret_key, purpose)

    def seal(self, plaintext: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), b"signal-edge")
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, token: str) -> str:
        if not token.startswith(PREFIX):
            raise ValueError("not a sealed secret")
        raw = base64.urlsafe_b64decode(token[len(PREFIX):])
        return self._aead.decrypt(raw[:12], raw[12:], b"signal-edge").decode()


def seal_integration(integration: Integration, box: SecretBox) -> Integration:
    """The integration as stored: its secrets encrypted."""
    return _with_secrets(integration, box.seal)


def open_integration(integration: Integration, box: SecretBox) -> Integration:
    """The stored integration with its secrets decrypted; StorageUnusable when `box` holds
    another key than the one they were sealed with."""
    try:
        return _with_secrets(integration, box.open)
    except (InvalidTag, ValueError):
        raise StorageUnusable(
            f"the stored tokens of integration {integration.id} cannot be decrypted with this secret key: start with "
            "the key file (or SIGNAL_SECRET_KEY) they were written with") from None


def _with_secrets(integration: Integration, convert) -> Integration:
    config = integration.config
    secrets = {k: convert(v) for k in SECRET_KEYS if (v := getattr(config, k))}
    return msgspec.structs.replace(integration, config=msgspec.structs.replace(config, **secrets))


def mask(secret: str | None) -> str | None:
    """What the API shows of a secret: its prefix and last 4 characters."""
    if not secret:
        return secret
    prefix = secret.split("_", 1)[0] + "_" if "_" in secret[:6] else ""
    if len(secret) <= len(prefix) + 8:
        return prefix + "****"
    return f"{prefix}****{secret[-4:]}"
