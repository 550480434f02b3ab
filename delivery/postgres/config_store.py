"""ConfigStore on PostgreSQL: the shared statements (delivery/sql/config_store.py), and what only
a database shared by nodes needs: the notifications that keep every node's snapshot current,
the order of reads and writes, and a lock held across nodes.

A write sends `<kind>:<id>:<node>` (sealed: channel.py) in its own transaction (driver.py).
Every other node reloads that object (a source or an integration: its edge routes and its
delivery worker follow through the change listeners) or forgets it (an identity in its cache).
After the listener's connection was lost, the node reloads everything. So a change made on any
node reaches every node within the notification's delay: milliseconds.

Reads race with writes: a full reload reads everything while this node writes and others
notify, and two reads of one object may finish out of order. So each source and integration
carries a sequence number, moved on by every local write and every notification; a read is
taken into the snapshot only when nothing moved the object's number since it began, and a
local write whose object was changed elsewhere meanwhile reads what is stored instead of
keeping its own copy. No reload puts back a state older than one already known.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg

from delivery.config import Integration
from delivery.postgres.channel import Channel
from delivery.postgres.db import ACQUIRE_TIMEOUT, COMMAND_TIMEOUT, PgDatabase, environmental, spawn
from delivery.postgres.driver import PgDriver
from delivery.secrets import SecretBox
from delivery.snapshot import integration_decoder, source_decoder
from delivery.sql.config_store import SqlConfigStore

log = logging.getLogger("signal_edge.store")
Key = tuple[str, str]  # ("source" | "integration", id)


class PgConfigStore(SqlConfigStore):
    def __init__(self, db: PgDatabase, node: str) -> None:
        self.driver = PgDriver(db, node)
        super().__init__(self.driver)
        self.db = db
        self.node = node
        self.channel: Channel | None = None
        self._tasks: set[asyncio.Task] = set()
        self._sequence = 0
        self._moved: dict[Key, int] = {}  # the sequence number each object was last moved to

    async def open(self, box: SecretBox) -> None:
        await super().open(box)
        self.channel = self.driver.channel = Channel(box)

    def listen(self) -> None:
        """Follow the other nodes' changes (call once the snapshot is loaded)."""
        self.db.listen(self._notified, self._reload_all)

    # --- ordering reads and writes --------------------------------------------------------

    def _move(self, key: Key) -> int:
        self._sequence += 1
        self._moved[key] = self._sequence
        return self._sequence

    def _mark(self, kind: str, object_id: str) -> int:
        return self._moved.get((kind, object_id), 0)

    async def _settled(self, kind: str, object_id: str, mark: int) -> bool:
        if self._moved.get((kind, object_id), 0) == mark:
            self._move((kind, object_id))
            return True
        await self._reload(kind, object_id, self._move((kind, object_id)))  # changed elsewhere meanwhile
        return False

    # --- other nodes' changes -----------------------------------------------------------

    def _notified(self, payload: str) -> None:
        opened = self.channel.open(payload) if self.channel is not None else None
        if opened is None:
            return
        kind, rest = opened
        object_id, _, node = rest.rpartition(":")
        if node == self.node:
            return
        if kind == "identity":
            self.forget_identity(object_id)
        elif kind == "suppression":
            spawn(self._tasks, self.load_suppressions())
        elif kind in ("source", "integration"):
            spawn(self._tasks, self._reload(kind, object_id, self._move((kind, object_id))))

    async def _reload(self, kind: str, object_id: str, sequence: int) -> bytes | None:
        """Read the object and take it into the snapshot, unless it moved past `sequence`
        meanwhile (a later read or write knows better). Returns the body read."""
        try:
            body = await self._stored(kind, object_id)
        except Exception:  # the listener reconnects and reloads everything when the database is back
            log.warning("could not reload %s %s after another node changed it", kind, object_id)
            return None
        if self._moved.get((kind, object_id)) == sequence:
            self._apply(kind, object_id, body)
        return body

    async def _reload_all(self) -> None:
        """Notifications were missed: compare everything with the database. An object moved
        while this read ran is left alone: its write or its own reload holds a newer state."""
        began = self._sequence
        sources, integrations = await self._load()
        bodies = {("source", source_decoder.decode(b).id): b for b in sources}
        bodies.update({("integration", integration_decoder.decode(b).id): b for b in integrations})
        known = {("source", i) for i in self._sources} | {("integration", i) for i in self._integrations}
        for key in known | set(bodies):
            if self._moved.get(key, 0) <= began:
                self._apply(*key, bodies.get(key))
        self.forget_identities()
        await self.load_suppressions()

    @contextlib.asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[None]:
        """Held across every node: a session advisory lock on a connection of its own, outside
        the pool (whose connections the holder's own calls need: with SIGNAL_POOL_SIZE=2 the
        appender keeps one), released with the connection if this node dies. Coroutines of this
        node queue up first."""
        async with super().exclusive(name):
            conn = None
            try:
                conn = await asyncpg.connect(self.db.url, timeout=ACQUIRE_TIMEOUT)
                await conn.execute("SELECT pg_advisory_lock(hashtext($1))", name, timeout=COMMAND_TIMEOUT)
            except Exception as exc:
                if conn is not None:
                    conn.terminate()
                if not environmental(exc):
                    raise
                raise self.db._failed(exc) from None
            try:
                yield
            finally:
                conn.terminate()  # the lock goes with the connection

    async def reload_integration(self, integration_id: str) -> Integration | None:
        moved = self._move(("integration", integration_id))
        return self._opened(await self._reload("integration", integration_id, moved))
