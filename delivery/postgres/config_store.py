"""ConfigStore on PostgreSQL: the SQL behind the shared snapshot, and the notifications that
keep every node's snapshot current.

A write sends `<kind>:<id>:<node>` (sealed: channel.py) in its own transaction. Every other
node reloads that object (a source or an integration: its edge routes and its delivery worker
follow through the change listeners) or forgets it (an identity in its cache). After the
listener's connection was lost, the node reloads everything. So a change made on any node
reaches every node within the notification's delay: milliseconds.

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
import time

import asyncpg
import msgspec

from delivery.config import Integration, Source
from delivery.postgres.channel import Channel, notify
from delivery.postgres.db import ACQUIRE_TIMEOUT, CHANNEL, COMMAND_TIMEOUT, PgDatabase, environmental
from delivery.secrets import CHECK_META, SecretBox, open_integration
from delivery.snapshot import (
    REFUSAL_EXAMPLES_KEPT,
    AuditRow,
    SnapshotStore,
    audit_entry,
    configuration_changed,
    debug_record,
    encode,
    identity_decoder,
    integration_decoder,
    source_activity,
    source_decoder,
)

Key = tuple[str, str]  # ("source" | "integration", id)
from delivery.store import AdminSession, AuditEntry, DebugRecord, Refusal, SourceActivity, StorageError, StoredIdentity

log = logging.getLogger("signal_edge.store")
_UPSERT_META = "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value"


class PgConfigStore(SnapshotStore):
    def __init__(self, db: PgDatabase, node: str) -> None:
        super().__init__()
        self.db = db
        self.node = node
        self.channel: Channel | None = None
        self._tasks: set[asyncio.Task] = set()
        self._sequence = 0
        self._moved: dict[Key, int] = {}  # the sequence number each object was last moved to

    async def open(self, box: SecretBox) -> None:
        await super().open(box)
        self.channel = Channel(box)

    def listen(self) -> None:
        """Follow the other nodes' changes (call once the snapshot is loaded)."""
        self.db.listen(self._notified, self._reload_all)

    async def _notify(self, conn: asyncpg.Connection, kind: str, object_id: str) -> None:
        await notify(conn, self.channel, kind, f"{object_id}:{self.node}")

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
        opened = self.channel.open(payload)
        if opened is None:
            return
        kind, rest = opened
        object_id, _, node = rest.rpartition(":")
        if node == self.node:
            return
        if kind == "identity":
            self.forget_identity(object_id)
        elif kind == "suppression":
            self._spawn(self.load_suppressions())
        elif kind in ("source", "integration"):
            task = asyncio.ensure_future(self._reload(kind, object_id, self._move((kind, object_id))))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _reload(self, kind: str, object_id: str, sequence: int) -> bytes | None:
        """Read the object and take it into the snapshot, unless it moved past `sequence`
        meanwhile (a later read or write knows better). Returns the body read."""
        table = "sources" if kind == "source" else "integrations"
        try:
            body = await self.db.run(lambda c: c.fetchval(f"SELECT body FROM {table} WHERE id = $1", object_id),
                                     single=True)
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

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(lambda t: (self._tasks.discard(t), t.cancelled() or t.exception()))

    def _apply(self, kind: str, object_id: str, body: bytes | None) -> None:
        """Take the stored state of one object into the snapshot; listeners hear of real changes
        (not of a change of an integration's health alone: that is runtime state)."""
        if kind == "source":
            new = source_decoder.decode(body) if body is not None else None
            if new == self._sources.get(object_id):
                return
            if new is None:
                self._forget_source(object_id)
            else:
                self._remember_source(new)
            self._changed("source", object_id)
            return
        old = self._integrations.get(object_id)
        new = open_integration(integration_decoder.decode(body), self.box) if body is not None else None
        if new is None:
            if self._integrations.pop(object_id, None) is not None:
                self._changed("integration", object_id)
            return
        self._integrations[object_id] = new
        if configuration_changed(old, new):
            self._changed("integration", object_id)

    @contextlib.asynccontextmanager
    async def exclusive(self, name: str):
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
        body = await self._reload("integration", integration_id, self._move(("integration", integration_id)))
        return open_integration(integration_decoder.decode(body), self.box) if body is not None else None

    # --- the snapshot's SQL -------------------------------------------------------------

    async def _load(self) -> tuple[list[bytes], list[bytes]]:
        async def load(conn: asyncpg.Connection):
            return ([r[0] for r in await conn.fetch("SELECT body FROM sources")],
                    [r[0] for r in await conn.fetch("SELECT body FROM integrations")])
        return await self.db.run(load)

    async def _write_source(self, source: Source, audit: AuditRow | None) -> None:
        async def write(conn: asyncpg.Connection) -> None:
            await conn.execute("INSERT INTO sources (id, pipeline_key, body) VALUES ($1, $2, $3) ON CONFLICT (id) "
                               "DO UPDATE SET pipeline_key = excluded.pipeline_key, body = excluded.body",
                               source.id, source.pipeline_key, encode(source))
            await _insert_audit(conn, audit)
            await self._notify(conn, "source", source.id)
        await self.db.run(write)

    async def _write_integration(self, integration: Integration, body: bytes, audit: AuditRow | None) -> None:
        async def write(conn: asyncpg.Connection) -> None:
            await self._same_key(conn)
            await conn.execute("INSERT INTO integrations (id, source_id, body) VALUES ($1, $2, $3) ON CONFLICT (id) "
                               "DO UPDATE SET source_id = excluded.source_id, body = excluded.body",
                               integration.id, integration.source_id, body)
            await _insert_audit(conn, audit)
            await self._notify(conn, "integration", integration.id)
        await self.db.run(write)

    async def _rewrite_integration(self, integration_id: str, rewrite) -> Integration | None:
        async def run(conn: asyncpg.Connection) -> Integration | None:
            body = await conn.fetchval("SELECT body FROM integrations WHERE id = $1 FOR UPDATE", integration_id)
            if body is None:
                return None
            write, result = rewrite(body)
            if write is not None:
                await self._same_key(conn)
                await conn.execute("UPDATE integrations SET body = $2 WHERE id = $1", integration_id, write[0])
                await _insert_audit(conn, write[1])
                await self._notify(conn, "integration", integration_id)
            return result
        return await self.db.run(run)

    async def _same_key(self, conn: asyncpg.Connection) -> None:
        """Tokens are sealed only with the key the database was last rotated to: a node that
        missed a rotation (its serving lock's connection was lost meanwhile) must not write
        tokens that no node can open. FOR SHARE: a rotation waits for this transaction."""
        stored = await conn.fetchval("SELECT value FROM meta WHERE key = $1 FOR SHARE", CHECK_META)
        if stored is not None and stored != self.box.fingerprint:
            raise StorageError("the secret key was rotated since this node started, and the stored tokens are sealed "
                               "with the new key: restart this node with the new key")

    async def _delete(self, table: str, object_id: str, audit: AuditRow | None) -> None:
        async def delete(conn: asyncpg.Connection) -> None:
            await conn.execute(f"DELETE FROM {table} WHERE id = $1", object_id)
            if table == "sources":
                await conn.execute("DELETE FROM refusals WHERE source_id = $1", object_id)
                await conn.execute("DELETE FROM refusal_examples WHERE source_id = $1", object_id)
                await conn.execute("DELETE FROM source_activity WHERE source_id = $1", object_id)
            await _insert_audit(conn, audit)
            await self._notify(conn, "source" if table == "sources" else "integration", object_id)
        await self.db.run(delete)

    async def _alert_destinations(self) -> list[tuple[str, bytes]]:
        return [tuple(r) for r in await self.db.run(lambda c: c.fetch("SELECT id, body FROM alert_destinations"))]

    async def _reseal(self, rows: list[tuple[bytes, str]], meta: dict[str, str],
                      destinations: list[tuple[bytes, str]]) -> None:
        async def rewrite(conn: asyncpg.Connection) -> None:
            await conn.executemany("UPDATE integrations SET body = $1 WHERE id = $2", rows)
            await conn.executemany("UPDATE alert_destinations SET body = $1 WHERE id = $2", destinations)
            await conn.executemany(_UPSERT_META, list(meta.items()))
            await conn.execute("DELETE FROM admin_sessions")
        await self.db.run(rewrite)

    # --- meta ---------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        return await self.db.run(lambda c: c.fetchval("SELECT value FROM meta WHERE key = $1", key), single=True)

    async def set_meta(self, key: str, value: str) -> None:
        await self.db.run(lambda c: c.execute(_UPSERT_META, key, value))

    async def init_meta(self, key: str, value: str) -> str:
        async def init(conn: asyncpg.Connection) -> str:
            await conn.execute("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", key, value)
            return await conn.fetchval("SELECT value FROM meta WHERE key = $1", key)
        return await self.db.run(init)

    async def delete_meta(self, key: str) -> None:
        await self.db.run(lambda c: c.execute("DELETE FROM meta WHERE key = $1", key))

    # --- identity memory ------------------------------------------------------------------

    async def _read_identity(self, anonymous_id: str, not_before: float) -> tuple[StoredIdentity, float] | None:
        row = await self.db.run(lambda c: c.fetchrow(
            "SELECT user_id, identity, updated_at FROM identities WHERE anonymous_id = $1 AND updated_at >= $2",
            anonymous_id, not_before), single=True)
        return (StoredIdentity(row[0], identity_decoder.decode(row[1]).identity), row[2]) if row else None

    async def _write_identity(self, anonymous_id: str, user_id: str | None, body: bytes, at: float) -> None:
        await self.db.run(lambda c: c.execute(
            "WITH saved AS (INSERT INTO identities (anonymous_id, user_id, identity, updated_at) "
            "  VALUES ($1, $2, $3, $4) ON CONFLICT (anonymous_id) DO UPDATE SET user_id = excluded.user_id, "
            "  identity = excluded.identity, updated_at = excluded.updated_at) "
            "SELECT pg_notify($5, $6)",  # one statement: the other nodes forget their cached copy
            anonymous_id, user_id, body, at, CHANNEL,
            self.channel.seal("identity", f"{anonymous_id}:{self.node}")), single=True)

    async def _prune_identities(self, before: float, limit: int) -> list[str]:
        rows = await self.db.run(lambda c: c.fetch(
            "DELETE FROM identities WHERE anonymous_id IN (SELECT anonymous_id FROM identities WHERE updated_at < $1 "
            "LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING anonymous_id", before, limit), single=True)
        return [row[0] for row in rows]

    # --- admin sessions -----------------------------------------------------------------

    async def get_session(self, key: str) -> AdminSession | None:
        row = await self.db.run(lambda c: c.fetchrow(
            "SELECT key, csrf, created_at, expires_at, client FROM admin_sessions WHERE key = $1 AND expires_at > $2",
            key, time.time()), single=True)
        return AdminSession(*row) if row else None

    async def put_session(self, session: AdminSession) -> None:
        async def put(conn: asyncpg.Connection) -> None:
            await conn.execute("DELETE FROM admin_sessions WHERE expires_at <= $1", time.time())
            await conn.execute("INSERT INTO admin_sessions (key, csrf, created_at, expires_at, client) "
                               "VALUES ($1, $2, $3, $4, $5)", *msgspec.structs.astuple(session))
        await self.db.run(put)

    async def delete_sessions(self, key: str | None) -> int:
        async def delete(conn: asyncpg.Connection) -> int:
            if key is None:
                status = await conn.execute("DELETE FROM admin_sessions")
            else:
                status = await conn.execute("DELETE FROM admin_sessions WHERE key = $1", key)
            return int(status.split()[-1])
        return await self.db.run(delete)

    # --- source activity ----------------------------------------------------------------

    async def record_activity(self, refused: dict[tuple[str, str], int], examples: list[tuple[str, Refusal]],
                              last_events: dict[str, float]) -> None:
        async def add(conn: asyncpg.Connection) -> None:
            await conn.executemany("INSERT INTO refusals (source_id, reason, count) VALUES ($1, $2, $3) ON CONFLICT "
                                   "(source_id, reason) DO UPDATE SET count = refusals.count + excluded.count",
                                   [(source, reason, n) for (source, reason), n in refused.items()])
            await conn.executemany("INSERT INTO refusal_examples (source_id, at, reason, detail) VALUES ($1, $2, $3, $4)",
                                   [(source, r.at, r.reason, r.detail) for source, r in examples])
            for source in {source for source, _ in examples}:
                await conn.execute("DELETE FROM refusal_examples WHERE source_id = $1 AND id <= (SELECT id FROM "
                                   "refusal_examples WHERE source_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
                                   source, REFUSAL_EXAMPLES_KEPT)
            await conn.executemany("INSERT INTO source_activity (source_id, last_event_at) VALUES ($1, $2) ON CONFLICT "
                                   "(source_id) DO UPDATE SET last_event_at = greatest(source_activity.last_event_at, "
                                   "excluded.last_event_at)", list(last_events.items()))
        await self.db.run(add)

    async def activity(self, source_ids: list[str]) -> dict[str, SourceActivity]:
        async def read(conn: asyncpg.Connection) -> dict[str, SourceActivity]:
            return source_activity(
                source_ids,
                await conn.fetch("SELECT source_id, reason, count FROM refusals WHERE source_id = ANY($1)", source_ids),
                await conn.fetch("SELECT source_id, at, reason, detail FROM refusal_examples WHERE source_id = ANY($1) "
                                 "ORDER BY id DESC", source_ids),
                await conn.fetch("SELECT source_id, last_event_at FROM source_activity WHERE source_id = ANY($1)",
                                 source_ids))
        return await self.db.run(read)

    # --- audit and debugger logs ------------------------------------------------------------

    async def _write_audit(self, row: AuditRow) -> None:
        await self.db.run(_insert_audit, row)

    async def audit_log(self, before_id: int | None, limit: int) -> list[AuditEntry]:
        rows = await self.db.run(lambda c: c.fetch(
            "SELECT id, at, action, object_type, object_id, old, new FROM audit_log WHERE id < $1 "
            "ORDER BY id DESC LIMIT $2", before_id or 2**62, limit))
        return [audit_entry(*row) for row in rows]

    async def _prune(self, kind: str, before: float, limit: int) -> int:
        return _rows(await self.db.run(lambda c: c.execute(_PRUNE[kind], before, limit)))

    # --- erasure and suppression ------------------------------------------------------------

    async def _read_suppressions(self, now: float) -> list[tuple[str, float]]:
        rows = await self.db.run(lambda c: c.fetch("SELECT key, until FROM suppressions WHERE until > $1", now))
        return [tuple(row) for row in rows]

    async def _write_suppressions(self, rows: list[tuple[str, float]]) -> None:
        async def write(conn: asyncpg.Connection) -> None:
            await conn.executemany("INSERT INTO suppressions (key, until) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE "
                                   "SET until = greatest(suppressions.until, excluded.until)", rows)
            await self._notify(conn, "suppression", "all")
        await self.db.run(write)

    async def _erase_identities(self, match, after, limit: int):
        async def scan(conn: asyncpg.Connection):
            rows = await conn.fetch("SELECT anonymous_id, user_id, identity FROM identities WHERE anonymous_id > $1 "
                                    "ORDER BY anonymous_id LIMIT $2", after or "", limit)
            gone = [tuple(row) for row in rows if match(row[0], row[1], row[2])]
            if gone:
                await conn.execute("DELETE FROM identities WHERE anonymous_id = ANY($1)", [row[0] for row in gone])
                for row in gone:  # every node forgets its cached copy
                    await self._notify(conn, "identity", row[0])
            return gone, (rows[-1][0] if len(rows) == limit else None)
        return await self.db.run(scan)

    async def _erase_debug(self, match, after, limit: int):
        async def scan(conn: asyncpg.Connection):
            rows = await conn.fetch("SELECT id, record FROM debug_log WHERE id > $1 ORDER BY id LIMIT $2", after or 0,
                                    limit)
            gone = [row[0] for row in rows if match(row[1])]
            if gone:
                await conn.execute("DELETE FROM debug_log WHERE id = ANY($1)", gone)
            return len(gone), (rows[-1][0] if len(rows) == limit else None)
        return await self.db.run(scan)

    async def _write_debug(self, rows: list[tuple], keep: int | None) -> None:
        async def write(conn: asyncpg.Connection) -> None:
            await conn.executemany("INSERT INTO debug_log (at, source_id, topic, event_id, status, record) "
                                   "VALUES ($1, $2, $3, $4, $5, $6)", rows)
            if keep:
                await conn.execute("DELETE FROM debug_log WHERE id <= (SELECT max(id) FROM debug_log) - $1", keep)
        await self.db.run(write)

    async def debug_records(self, source_id, integration_id, status, before_id, limit) -> list[DebugRecord]:
        where, args = ["id < $1"], [before_id or 2**62]
        for column, value in (("source_id", source_id), ("topic", integration_id), ("status", status)):
            if value:
                args.append(value)
                where.append(f"{column} = ${len(args)}")
        args.append(limit)
        rows = await self.db.run(lambda c: c.fetch(
            f"SELECT id, at, source_id, topic, event_id, status, record FROM debug_log "
            f"WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ${len(args)}", *args))
        return [debug_record(*row) for row in rows]


_PRUNE = {  # the oldest records first; see the SQLite store
    "debug": "DELETE FROM debug_log WHERE id IN (SELECT id FROM debug_log ORDER BY id LIMIT $2) AND at < $1",
    "audit": "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log ORDER BY id LIMIT $2) AND at < $1",
    "alerts": "DELETE FROM alert_history WHERE id IN (SELECT id FROM alert_history ORDER BY id LIMIT $2) AND at < $1",
    "volume": "DELETE FROM event_volume WHERE ctid = ANY(ARRAY(SELECT ctid FROM event_volume WHERE bucket < $1 "
              "LIMIT $2))",
    "suppressions": "DELETE FROM suppressions WHERE ctid = ANY(ARRAY(SELECT ctid FROM suppressions WHERE until < $1 "
                    "LIMIT $2))",
}


def _rows(status: str) -> int:
    return int(status.split()[-1])


async def _insert_audit(conn: asyncpg.Connection, row: AuditRow | None) -> None:
    if row is not None:
        await conn.execute("INSERT INTO audit_log (at, action, object_type, object_id, old, new) "
                           "VALUES ($1, $2, $3, $4, $5, $6)", time.time(), *row)
