"""ConfigStore on SQLite, with the in-memory snapshot the hot path reads from."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import OrderedDict
from typing import Any

import msgspec

from delivery.config import SECRET_KEYS, Health, Integration, Source
from delivery.secrets import SecretBox, open_integration, seal_integration
from delivery.sqlite.db import Database
from delivery.store import AdminSession, AuditEntry, ChangeListener, DebugRecord, StoredIdentity

log = logging.getLogger("signal_edge.store")
IDENTITY_CACHE_SIZE = 50_000
DEBUG_LOG_KEEP = 20_000
_MISSING = object()

_source_decoder = msgspec.json.Decoder(Source)
_integration_decoder = msgspec.json.Decoder(Integration)
_identity_decoder = msgspec.json.Decoder(StoredIdentity)
_debug_decoder = msgspec.json.Decoder(DebugRecord)
_encode = msgspec.json.encode


class SqliteConfigStore:
    MISSING = _MISSING  # what cached_identity() answers when it does not know

    def __init__(self, db: Database) -> None:
        self.db = db
        self.box: SecretBox | None = None
        self._sources: dict[str, Source] = {}
        self._by_key: dict[str, Source] = {}
        self._integrations: dict[str, Integration] = {}
        self._identities: OrderedDict[str, Any] = OrderedDict()
        self._listeners: list[ChangeListener] = []
        self._debug_writes = 0

    async def open(self, box: SecretBox) -> None:
        """Load the snapshot; `box` decrypts stored secrets."""
        self.box = box
        sources, integrations = await self.db.run(
            lambda c: (
                c.execute("SELECT body FROM sources").fetchall(),
                c.execute("SELECT body FROM integrations").fetchall(),
            )
        )
        for (body,) in sources:
            source = _source_decoder.decode(body)
            self._remember_source(source)
        for (body,) in integrations:
            integration = open_integration(_integration_decoder.decode(body), box)
            self._integrations[integration.id] = integration

    # --- snapshot reads ---------------------------------------------------------------

    def source(self, source_id: str) -> Source | None:
        return self._sources.get(source_id)

    def source_by_key(self, pipeline_key: str) -> Source | None:
        return self._by_key.get(pipeline_key)

    def sources(self) -> list[Source]:
        return sorted(self._sources.values(), key=lambda s: (s.created_at, s.id))

    def integration(self, integration_id: str) -> Integration | None:
        return self._integrations.get(integration_id)

    def integrations(self, source_id: str | None = None) -> list[Integration]:
        found = [i for i in self._integrations.values() if source_id is None or i.source_id == source_id]
        return sorted(found, key=lambda i: (i.created_at, i.id))

    def subscribe(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def _changed(self, object_type: str, object_id: str) -> None:
        for listener in self._listeners:
            try:
                listener(object_type, object_id)
            except Exception:  # a listener's bug must not fail the write that succeeded
                log.exception("config change listener failed")

    def _remember_source(self, source: Source) -> None:
        old = self._sources.get(source.id)
        if old is not None:
            self._by_key.pop(old.pipeline_key, None)
        self._sources[source.id] = source
        self._by_key[source.pipeline_key] = source

    # --- writes -----------------------------------------------------------------------

    async def put_source(self, source: Source, audit_action: str | None) -> None:
        old = self._sources.get(source.id)
        await self.db.run(_put_source, source, _audit_row(audit_action, "source", source.id, old, source))
        self._remember_source(source)
        self._changed("source", source.id)

    async def delete_source(self, source_id: str) -> None:
        old = self._sources.get(source_id)
        await self.db.run(_delete, "sources", source_id, _audit_row("delete", "source", source_id, old, None))
        if old is not None:
            self._by_key.pop(old.pipeline_key, None)
        self._sources.pop(source_id, None)
        self._changed("source", source_id)

    async def put_integration(self, integration: Integration, audit_action: str | None, notify: bool = True) -> None:
        old = self._integrations.get(integration.id)
        await self.db.run(
            _put_integration, integration.id, integration.source_id, _encode(seal_integration(integration, self.box)),
            _audit_row(audit_action, "integration", integration.id, old, integration),
        )
        self._integrations[integration.id] = integration
        if notify:
            self._changed("integration", integration.id)

    async def delete_integration(self, integration_id: str) -> None:
        old = self._integrations.get(integration_id)
        await self.db.run(
            _delete, "integrations", integration_id, _audit_row("delete", "integration", integration_id, old, None)
        )
        self._integrations.pop(integration_id, None)
        self._changed("integration", integration_id)

    async def set_health(self, integration_id: str, health: Health) -> None:
        current = self._integrations.get(integration_id)
        if current is None or current.health == health:
            return
        # Health is runtime state, not configuration: no change notification.
        await self.put_integration(msgspec.structs.replace(current, health=health), None, notify=False)

    async def reseal(self, box: SecretBox, meta: dict[str, str]) -> int:
        """Encrypt every stored secret again with `box` and set `meta`, in one transaction (the
        secret key is being rotated); returns how many integrations were rewritten."""
        rows = [(_encode(seal_integration(i, box)), i.id) for i in self._integrations.values()]

        def rewrite(conn: sqlite3.Connection) -> int:
            conn.executemany("UPDATE integrations SET body=? WHERE id=?", rows)
            conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                             "value=excluded.value", list(meta.items()))
            conn.execute("DELETE FROM admin_sessions")  # their cookies were signed with the old key
            return len(rows)

        count = await self.db.run(rewrite)
        self.box = box
        return count

    # --- meta ---------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        row = await self.db.run(lambda c: c.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone())
        return row[0] if row else None

    async def delete_meta(self, key: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA secure_delete=ON")  # the old value must not linger in a free page
            conn.execute("DELETE FROM meta WHERE key=?", (key,))
            conn.execute("PRAGMA secure_delete=OFF")  # the queue's deletes need not zero their pages
        await self.db.run(delete)

    async def set_meta(self, key: str, value: str) -> None:
        await self.db.run(
            lambda c: c.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, value),
            )
        )

    # --- identity memory (hashes only), with an LRU in front ---------------------------

    async def identity(self, anonymous_id: str) -> StoredIdentity | None:
        cached = self._identities.get(anonymous_id, _MISSING)
        if cached is not _MISSING:
            self._identities.move_to_end(anonymous_id)
            return cached
        row = await self.db.run(
            lambda c: c.execute(
                "SELECT user_id, identity FROM identities WHERE anonymous_id=?", (anonymous_id,)
            ).fetchone()
        )
        found = StoredIdentity(row[0], _identity_decoder.decode(row[1]).identity) if row else None
        self._cache_identity(anonymous_id, found)
        return found

    def cached_identity(self, anonymous_id: str) -> Any:
        """The cached identity, None when known absent, or `MISSING` (ask `identity()`)."""
        return self._identities.get(anonymous_id, _MISSING)

    async def save_identity(self, anonymous_id: str, stored: StoredIdentity) -> None:
        await self.db.run(
            lambda c: c.execute(
                "INSERT INTO identities (anonymous_id, user_id, identity, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(anonymous_id) DO UPDATE SET user_id=excluded.user_id, identity=excluded.identity, "
                "updated_at=excluded.updated_at",
                (anonymous_id, stored.user_id, _encode(stored), time.time()),
            )
        )
        self._cache_identity(anonymous_id, stored)

    def _cache_identity(self, anonymous_id: str, value: StoredIdentity | None) -> None:
        self._identities[anonymous_id] = value
        self._identities.move_to_end(anonymous_id)
        while len(self._identities) > IDENTITY_CACHE_SIZE:
            self._identities.popitem(last=False)

    # --- admin sessions -----------------------------------------------------------------

    async def get_session(self, key: str) -> AdminSession | None:
        row = await self.db.run(lambda c: c.execute(
            "SELECT key, csrf, created_at, expires_at, client FROM admin_sessions WHERE key=? AND expires_at>?",
            (key, time.time())).fetchone())
        return AdminSession(*row) if row else None

    async def put_session(self, session: AdminSession) -> None:
        def put(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM admin_sessions WHERE expires_at<=?", (time.time(),))
            conn.execute("INSERT INTO admin_sessions (key, csrf, created_at, expires_at, client) VALUES (?, ?, ?, ?, ?)",
                         msgspec.structs.astuple(session))
        await self.db.run(put)

    async def delete_sessions(self, key: str | None) -> int:
        if key is None:
            return await self.db.run(lambda c: c.execute("DELETE FROM admin_sessions").rowcount)
        return await self.db.run(lambda c: c.execute("DELETE FROM admin_sessions WHERE key=?", (key,)).rowcount)

    # --- audit log ----------------------------------------------------------------------

    async def audit(self, action: str, object_type: str, object_id: str, old: dict | None, new: dict | None) -> None:
        await self.db.run(_insert_audit, (action, object_type, object_id, old, new))

    async def audit_log(self, before_id: int | None, limit: int) -> list[AuditEntry]:
        rows = await self.db.run(
            lambda c: c.execute(
                "SELECT id, at, action, object_type, object_id, old, new FROM audit_log WHERE id < ? "
                "ORDER BY id DESC LIMIT ?", (before_id or 2**62, limit),
            ).fetchall()
        )
        return [
            AuditEntry(r[0], r[1], r[2], r[3], r[4], msgspec.json.decode(r[5]) if r[5] else None,
                       msgspec.json.decode(r[6]) if r[6] else None)
            for r in rows
        ]

    # --- debugger log -------------------------------------------------------------------

    async def add_debug(self, records: list[DebugRecord]) -> None:
        if not records:
            return
        self._debug_writes += len(records)
        prune = self._debug_writes >= DEBUG_LOG_KEEP // 4
        if prune:
            self._debug_writes = 0
        await self.db.run(_insert_debug, records, prune)

    async def debug_records(self, source_id, integration_id, status, before_id, limit) -> list[DebugRecord]:
        where, args = ["id < ?"], [before_id or 2**62]
        for column, value in (("source_id", source_id), ("topic", integration_id), ("status", status)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        rows = await self.db.run(
            lambda c: c.execute(
                f"SELECT id, at, source_id, topic, event_id, status, record FROM debug_log "
                f"WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
        )
        return [debug_record(*row) for row in rows]


def debug_record(row_id: int, at: float, source_id: str, topic: str | None, event_id: str, status: str,
                 record: bytes) -> DebugRecord:
    """A stored debugger record; one that cannot be read (nested too deep by an older version,
    say) is shown as such, and never fails the listing it is in."""
    try:
        return msgspec.structs.replace(_debug_decoder.decode(record), id=row_id)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return DebugRecord(at, source_id or "", event_id or "", "", status, topic, id=row_id,
                           message="this stored record cannot be shown (it is not readable JSON)")


def _redacted(obj: Any) -> dict | None:
    """An object as the audit log keeps it: secrets replaced by a marker."""
    if obj is None:
        return None
    data = msgspec.to_builtins(obj)
    config = data.get("config")
    if isinstance(config, dict):
        for key in SECRET_KEYS:
            if config.get(key):
                config[key] = "[redacted]"
    data.pop("health", None)
    return data


def _audit_row(action: str | None, object_type: str, object_id: str, old: Any, new: Any) -> tuple | None:
    if action is None:
        return None
    return (action, object_type, object_id, _redacted(old), _redacted(new))


def _insert_audit(conn: sqlite3.Connection, row: tuple | None) -> None:
    if row is None:
        return
    action, object_type, object_id, old, new = row
    conn.execute(
        "INSERT INTO audit_log (at, action, object_type, object_id, old, new) VALUES (?, ?, ?, ?, ?, ?)",
        (time.time(), action, object_type, object_id,
         _encode(old) if old is not None else None, _encode(new) if new is not None else None),
    )


def _put_source(conn: sqlite3.Connection, source: Source, audit: tuple | None) -> None:
    conn.execute(
        "INSERT INTO sources (id, pipeline_key, body) VALUES (?, ?, ?) "
        "ON CONFLICT(id) DO UPDATE SET pipeline_key=excluded.pipeline_key, body=excluded.body",
        (source.id, source.pipeline_key, _encode(source)),
    )
    _insert_audit(conn, audit)


def _put_integration(conn: sqlite3.Connection, integration_id: str, source_id: str, body: bytes, audit) -> None:
    conn.execute(
        "INSERT INTO integrations (id, source_id, body) VALUES (?, ?, ?) "
        "ON CONFLICT(id) DO UPDATE SET source_id=excluded.source_id, body=excluded.body",
        (integration_id, source_id, body),
    )
    _insert_audit(conn, audit)


def _delete(conn: sqlite3.Connection, table: str, object_id: str, audit) -> None:
    conn.execute(f"DELETE FROM {table} WHERE id=?", (object_id,))
    _insert_audit(conn, audit)


def _insert_debug(conn: sqlite3.Connection, records: list[DebugRecord], prune: bool) -> None:
    conn.executemany(
        "INSERT INTO debug_log (at, source_id, topic, event_id, status, record) VALUES (?, ?, ?, ?, ?, ?)",
        [(r.at, r.source_id, r.integration_id, r.event_id, r.status, _encode(r)) for r in records],
    )
    if prune:
        conn.execute("DELETE FROM debug_log WHERE id <= (SELECT max(id) FROM debug_log) - ?", (DEBUG_LOG_KEEP,))
