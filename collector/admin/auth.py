"""The admin token: only its SHA-256 is stored, comparison is constant-time.

The stored hash is the truth, read again at most every RECHECK seconds: a rotation by
`signal-edge admin-token --rotate` (another process) or through another node takes effect
in every running server within a second, whoever presents which token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict, deque

META_KEY = "admin_token_sha256"
TOKEN_PREFIX = "sea_"
RECHECK = 0.5  # seconds a server trusts the hash it last read
MIN_RELOAD = 0.05  # a token that does not match is checked against the store at most this often

log = logging.getLogger("signal_edge.admin")


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AdminAuth:
    def __init__(self, store, secret_key: str) -> None:
        self.store = store
        self.secret_key = secret_key  # also signs the UI's session cookie
        self._digest = ""  # nothing read yet; _loaded makes the first check read the store
        self._loaded = 0.0

    async def ensure(self, configured: str | None) -> str | None:
        """SIGNAL_ADMIN_TOKEN seeds the token only while the database holds none (as Grafana's
        admin password does): after a rotation the variable no longer works, and a restart does
        not bring it back. Without either, a token is generated and returned (the caller prints
        it once: it is not kept anywhere)."""
        stored = await self.store.get_meta(META_KEY)
        if stored:
            if configured and not hmac.compare_digest(_digest(configured), stored):
                log.warning("SIGNAL_ADMIN_TOKEN is set but is not the admin token: the database holds a newer one "
                            "(rotated with `signal-edge admin-token --rotate`); the variable only seeds the first")
            self._remember(stored)
            return None
        token = configured or new_token()
        # Several nodes may start on an empty database at once: the first token stored wins.
        stored = await self.store.init_meta(META_KEY, _digest(token))
        self._remember(stored)
        return None if configured or stored != _digest(token) else token

    async def rotate(self) -> str:
        """A new token; the old one and every UI session end."""
        token = new_token()
        await self.store.set_meta(META_KEY, _digest(token))
        await self.store.delete_sessions(None)
        self._remember(_digest(token))
        return token

    def _remember(self, digest: str) -> None:
        self._digest, self._loaded = digest, time.monotonic()

    async def check(self, presented: str | None) -> bool:
        """The old token stops working within RECHECK seconds of a rotation; a token that does
        not match what was last read is checked against the store at once (it may be the new
        one: wrong tokens are throttled per client before they get here)."""
        if not presented:
            return False
        digest = _digest(presented)
        age = time.monotonic() - self._loaded
        if age >= RECHECK or (age >= MIN_RELOAD and not hmac.compare_digest(digest, self._digest)):
            self._remember(await self.store.get_meta(META_KEY) or "")
        return bool(self._digest) and hmac.compare_digest(digest, self._digest)


class Throttle:
    """At most `limit` wrong tokens per client in `window` seconds, then 429 for wrong ones. The
    right token is never refused (it is checked first), and does not clear the count either: on
    an address shared with someone guessing, an admin's login must not give them more tries."""

    def __init__(self, limit: int = 20, window: float = 300.0, max_clients: int = 10_000) -> None:
        self.limit, self.window, self.max_clients = limit, window, max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, client: str) -> float:
        """0 when `client` may try, else the seconds until it may."""
        failures = self._recent(client)
        if failures is None or len(failures) < self.limit:
            return 0.0
        return failures[0] + self.window - time.monotonic()

    def failed(self, client: str) -> None:
        failures = self._recent(client) or deque()
        failures.append(time.monotonic())
        self._failures[client] = failures
        self._failures.move_to_end(client)
        if len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)

    def _recent(self, client: str) -> deque[float] | None:
        failures = self._failures.get(client)
        if failures is not None:
            cutoff = time.monotonic() - self.window
            while failures and failures[0] <= cutoff:
                failures.popleft()
        return failures
