"""The admin token: only its SHA-256 is stored, comparison is constant-time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

META_KEY = "admin_token_sha256"
TOKEN_PREFIX = "sea_"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AdminAuth:
    def __init__(self, store, secret_key: str) -> None:
        self.store = store
        self.secret_key = secret_key  # also signs the UI's session cookie
        self._digest: str | None = None
        self._reloaded = 0.0

    @property
    def digest(self) -> str:
        return self._digest or ""

    async def ensure(self, configured: str | None) -> str | None:
        """Use SIGNAL_ADMIN_TOKEN when set; else keep the stored one; else generate one
        and return it (the caller prints it once: it is not kept anywhere)."""
        if configured:
            self._digest = _digest(configured)
            await self.store.set_meta(META_KEY, self._digest)
            return None
        self._digest = await self.store.get_meta(META_KEY)
        if self._digest:
            return None
        return await self.rotate()

    async def rotate(self) -> str:
        token = new_token()
        self._digest = _digest(token)
        await self.store.set_meta(META_KEY, self._digest)
        return token

    async def check(self, presented: str | None) -> bool:
        if not presented:
            return False
        digest = _digest(presented)
        if self._digest and hmac.compare_digest(digest, self._digest):
            return True
        # The token may have been rotated by `signal-edge admin-token --rotate` in another
        # process: look at the stored hash again, at most once a second.
        now = time.monotonic()
        if now - self._reloaded < 1.0:
            return False
        self._reloaded = now
        self._digest = await self.store.get_meta(META_KEY)
        return bool(self._digest) and hmac.compare_digest(digest, self._digest)
