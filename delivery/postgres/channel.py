"""The LISTEN/NOTIFY channel's payloads, sealed. Any role that may connect to the database may
LISTEN on any channel and NOTIFY on it, so every payload is encrypted and authenticated
(AES-GCM) with a key derived from the secret key, which every node has and no other role: a
listener reads nothing (live debugger records, visitor ids), and a forged or altered payload
is dropped. A payload older than FRESH seconds is dropped too: a recorded one cannot be
played back later. Payloads are `<kind>:<message>` once opened."""

from __future__ import annotations

import logging
import time

import asyncpg
from cryptography.exceptions import InvalidTag

from delivery.postgres.db import CHANNEL
from delivery.secrets import SecretBox

log = logging.getLogger("signal_edge.db")
PURPOSE = b"signal-edge notifications"
FRESH = 120.0  # seconds: notifications arrive in milliseconds; this leaves room for clock skew
MAX_PAYLOAD = 7999  # PostgreSQL's limit is 8000 bytes
WARN_EVERY = 60.0


class Channel:
    def __init__(self, box: SecretBox) -> None:
        self._box = box.for_purpose(PURPOSE)
        self.dropped = 0
        self._warned = 0.0

    def seal(self, kind: str, message: str) -> str:
        return self._box.seal(f"{time.time():.0f}:{kind}:{message}")

    def open(self, payload: str) -> tuple[str, str] | None:
        """(kind, message), or None for a payload that is not ours, or is too old."""
        try:
            at, _, text = self._box.open(payload).partition(":")
        except (InvalidTag, ValueError):
            self._drop("not sealed with this deployment's secret key (another role notifying on the channel, or a "
                       "node started with another key)")
            return None
        if not at.isdigit() or abs(time.time() - int(at)) > FRESH:
            self._drop(f"older than {FRESH:.0f}s (played back, or a node's clock is off)")
            return None
        kind, _, message = text.partition(":")
        return kind, message

    def _drop(self, why: str) -> None:
        """Count and (now and then) log a dropped payload; `open` answers None for it."""
        self.dropped += 1
        now = time.monotonic()
        if now - self._warned >= WARN_EVERY:
            self._warned = now
            log.warning("dropped a notification on the %s channel: %s (%d so far)", CHANNEL, why, self.dropped)
        return None


async def notify(conn: asyncpg.Connection, channel: Channel, kind: str, message: str) -> None:
    """Tell every node `kind:message`, sealed (in the caller's transaction: sent when it commits)."""
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, channel.seal(kind, message))
