"""Identity memory (hashes only, keyed by a browser's anonymous id or a userId's hash), with the
snapshot's cache in front; and erasure of a person from it, with the suppressions that keep
their new events out afterwards (delivery/erasure.py)."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable

from delivery.erasure import SALT_META, Person, Suppressions
from delivery.snapshot import Snapshot, encode, identity_decoder
from delivery.sql.meta import Meta
from delivery.sql.statements import Driver, Op, execute, executemany, fetch, notify
from delivery.store import StoredIdentity

ERASE_BATCH = 2000  # records an erasure scans per statement: others get the database in between
ERASE_ROUNDS = 4  # scans of identity memory while each finds more of the person
USER_KEY_PREFIX = "user:"  # identities keyed by userId; a browser's anonymous id is a UUID

IdentityRow = tuple[str, str | None, bytes]  # anonymous id, user id, stored body


class IdentityMemory(Meta, Snapshot):
    sql: Driver

    def __init__(self) -> None:
        super().__init__()
        self.suppressions = Suppressions()  # erased people whose new events the edge drops

    async def identity(self, anonymous_id: str) -> StoredIdentity | None:
        cached = self.cached_identity(anonymous_id)
        if cached is not self.MISSING:
            self._identities.move_to_end(anonymous_id)
            return cached
        found = await self._read_identity(anonymous_id, time.time() - self.identity_retention)
        if found is None:
            self._cache_identity(anonymous_id, None, 0, time.time())
            return None
        stored, updated_at = found
        self._cache_identity(anonymous_id, stored, len(encode(stored)), updated_at)
        return stored

    async def save_identity(self, anonymous_id: str, stored: StoredIdentity) -> None:
        body = encode(stored)
        now = time.time()
        await self._write_identity(anonymous_id, stored.user_id, body, now)
        self._cache_identity(anonymous_id, stored, len(body), now)

    async def _read_identity(self, anonymous_id: str, not_before: float) -> tuple[StoredIdentity, float] | None:
        """The identity and when it was saved, unless saved before `not_before`."""
        row = await self.sql.fetchrow(
            "SELECT user_id, identity, updated_at FROM identities WHERE anonymous_id = ? AND updated_at >= ?",
            anonymous_id, not_before)
        return (StoredIdentity(row[0], identity_decoder.decode(row[1]).identity), row[2]) if row else None

    async def _write_identity(self, anonymous_id: str, user_id: str | None, body: bytes, at: float) -> None:
        await self.sql.execute(
            "INSERT INTO identities (anonymous_id, user_id, identity, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (anonymous_id) DO UPDATE SET user_id = excluded.user_id, identity = excluded.identity, "
            "updated_at = excluded.updated_at",
            anonymous_id, user_id, body, at, notice=("identity", anonymous_id))  # other nodes forget their copy

    # A server-side call has no browser cookie: its identity memory is kept by the userId it
    # names, under a key of its own (only its hash: a userId may be anything the site chose).

    async def user_identity(self, user_id: str) -> StoredIdentity | None:
        return await self.identity(user_identity_key(user_id))

    async def save_user_identity(self, user_id: str, stored: StoredIdentity) -> None:
        await self.save_identity(user_identity_key(user_id), stored)

    async def prune_identities(self, limit: int = 1000) -> int:
        """Delete up to `limit` identities past their retention; returns how many went."""
        rows = await self.sql.fetch(
            "DELETE FROM identities WHERE anonymous_id IN (SELECT anonymous_id FROM identities WHERE updated_at < ? "
            "LIMIT ?{skip_locked}) RETURNING anonymous_id", time.time() - self.identity_retention, limit)
        for (anonymous_id,) in rows:
            self.forget_identity(anonymous_id)
        return len(rows)

    # --- erasure and suppression ----------------------------------------------------------

    async def erase_identities(self, person: Person, batch: int = ERASE_BATCH) -> int:
        """Delete the person's identity records, learning from each what else identifies them
        (its anonymous id, userId, hashes) and scanning again while that finds more."""
        deleted = 0
        for _ in range(ERASE_ROUNDS):
            learned, after = False, ""
            while True:
                rows, after = await self.sql.transaction(_erase_identities, _matcher(person), after, batch)
                for anonymous_id, user_id, body in rows:
                    self.forget_identity(anonymous_id)
                    learned |= person.learn(anonymous_id, user_id, identity_decoder.decode(body).identity)
                deleted += len(rows)
                if not after:
                    break
            if not learned:
                break
        return deleted

    async def load_suppressions(self) -> None:
        """The salt and the suppressions in force, into memory (at start, and when another node
        adds some)."""
        salt = await self.init_meta(SALT_META, secrets.token_hex(32))
        self.suppressions.salt = bytes.fromhex(salt)
        rows = await self.sql.fetch("SELECT key, until FROM suppressions WHERE until > ?", time.time())
        self.suppressions.until = {row[0]: row[1] for row in rows}

    async def _write_suppressions(self, rows: list[tuple[str, float]]) -> None:
        """(key, until) rows; a key already suppressed keeps the later end."""
        await self.sql.transaction(_suppress, rows)

    async def suppress(self, keys: set[str], until: float) -> None:
        await self._write_suppressions([(key, until) for key in sorted(keys)])
        for key in keys:
            self.suppressions.until[key] = max(until, self.suppressions.until.get(key, 0.0))


def _erase_identities(match: Callable[[str, str | None, bytes], bool], after: str,
                      limit: int) -> Op[tuple[list[IdentityRow], str]]:
    """Scan up to `limit` identities after the cursor `after`; delete those `match` names (every
    node forgets its cached copy); return them, and the cursor to go on from ("": done)."""
    rows = yield fetch("SELECT anonymous_id, user_id, identity FROM identities WHERE anonymous_id > ? "
                       "ORDER BY anonymous_id LIMIT ?", after, limit)
    gone = [(row[0], row[1], row[2]) for row in rows if match(row[0], row[1], row[2])]
    for anonymous_id, _, _ in gone:
        yield execute("DELETE FROM identities WHERE anonymous_id = ?", anonymous_id, notice=("identity", anonymous_id))
    return gone, (rows[-1][0] if len(rows) == limit else "")


def _suppress(rows: list[tuple[str, float]]) -> Op[None]:
    yield executemany("INSERT INTO suppressions (key, until) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
                      "SET until = {greatest}(suppressions.until, excluded.until)", rows)
    yield notify("suppression", "all")  # the other nodes load them


def user_identity_key(user_id: str) -> str:
    return USER_KEY_PREFIX + hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()


def _matcher(person: Person) -> Callable[[str, str | None, bytes], bool]:
    """Whether an identity record is the person's (decoded only when it names one of their identifiers)."""
    def match(anonymous_id: str, user_id: str | None, body: bytes) -> bool:
        if anonymous_id in person.anonymous_ids or (user_id is not None and user_id in person.user_ids):
            return True
        return person.mentioned(body) and person.identity_matches(
            anonymous_id, user_id, identity_decoder.decode(body).identity)
    return match
