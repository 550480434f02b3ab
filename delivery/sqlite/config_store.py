"""ConfigStore on SQLite: the SQL behind the shared snapshot (delivery/snapshot.py)."""

from __future__ import annotations

import sqlite3
import time

import msgspec

from delivery.config import Integration, Source
from delivery.snapshot import (
    REFUSAL_EXAMPLES_KEPT,
    AuditRow,
    SnapshotStore,
    audit_entry,
    debug_record,
    encode,
    identity_decoder,
    source_activity,
)
from delivery.sqlite.db import Database
from delivery.store import AdminSession, AuditEntry, DebugRecord, Refusal, SourceActivity, StoredIdentity

_UPSERT_META = "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value"


class SqliteConfigStore(SnapshotStore):
    def __init__(self, db: Database) -> None:
        super().__init__()
        self.db = db

    async def _load(self) -> tuple[list[bytes], list[bytes]]:
        return await self.db.run(lambda c: (
            [body for (body,) in c.execute("SELECT body FROM sources")],
            [body for (body,) in c.execute("SELECT body FROM integrations")],
        ))

    async def _write_source(self, source: Source, audit: AuditRow | None) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO sources (id, pipeline_key, body) VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE "
                         "SET pipeline_key=excluded.pipeline_key, body=excluded.body",
                         (source.id, source.pipeline_key, encode(source)))
            _insert_audit(conn, audit)
        await self.db.run(write)

    async def _write_integration(self, integration: Integration, body: bytes, audit: AuditRow | None) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO integrations (id, source_id, body) VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE "
                         "SET source_id=excluded.source_id, body=excluded.body",
                         (integration.id, integration.source_id, body))
            _insert_audit(conn, audit)
        await self.db.run(write)

    async def _rewrite_integration(self, integration_id: str, rewrite) -> Integration | None:
        def run(conn: sqlite3.Connection) -> Integration | None:  # one IMMEDIATE transaction: nobody writes between
            row = conn.execute("SELECT body FROM integrations WHERE id=?", (integration_id,)).fetchone()
            if row is None:
                return None
            write, result = rewrite(row[0])
            if write is not None:
                conn.execute("UPDATE integrations SET body=? WHERE id=?", (write[0], integration_id))
                _insert_audit(conn, write[1])
            return result
        return await self.db.run(run)

    async def _delete(self, table: str, object_id: str, audit: AuditRow | None) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            conn.execute(f"DELETE FROM {table} WHERE id=?", (object_id,))
            if table == "sources":
                conn.execute("DELETE FROM refusals WHERE source_id=?", (object_id,))
                conn.execute("DELETE FROM refusal_examples WHERE source_id=?", (object_id,))
                conn.execute("DELETE FROM source_activity WHERE source_id=?", (object_id,))
            _insert_audit(conn, audit)
        await self.db.run(delete)

    async def _alert_destinations(self) -> list[tuple[str, bytes]]:
        return await self.db.run(lambda c: c.execute("SELECT id, body FROM alert_destinations").fetchall())

    async def _reseal(self, rows: list[tuple[bytes, str]], meta: dict[str, str],
                      destinations: list[tuple[bytes, str]]) -> None:
        def rewrite(conn: sqlite3.Connection) -> None:
            conn.executemany("UPDATE integrations SET body=? WHERE id=?", rows)
            conn.executemany("UPDATE alert_destinations SET body=? WHERE id=?", destinations)
            conn.executemany(_UPSERT_META, list(meta.items()))
            conn.execute("DELETE FROM admin_sessions")
        await self.db.run(rewrite)

    # --- meta ---------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        row = await self.db.run(lambda c: c.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone())
        return row[0] if row else None

    async def set_meta(self, key: str, value: str) -> None:
        await self.db.run(lambda c: c.execute(_UPSERT_META, (key, value)))

    async def init_meta(self, key: str, value: str) -> str:
        """Store `value` unless `key` has one; returns what is stored (another node may have won)."""
        def init(conn: sqlite3.Connection) -> str:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING", (key, value))
            return conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()[0]
        return await self.db.run(init)

    async def delete_meta(self, key: str) -> None:
        # secure_delete is on (delivery/sqlite/db.py): the old value does not linger in a free page
        await self.db.run(lambda c: c.execute("DELETE FROM meta WHERE key=?", (key,)))

    # --- identity memory ------------------------------------------------------------------

    async def _read_identity(self, anonymous_id: str, not_before: float) -> tuple[StoredIdentity, float] | None:
        row = await self.db.run(lambda c: c.execute(
            "SELECT user_id, identity, updated_at FROM identities WHERE anonymous_id=? AND updated_at>=?",
            (anonymous_id, not_before)).fetchone())
        return (StoredIdentity(row[0], identity_decoder.decode(row[1]).identity), row[2]) if row else None

    async def _write_identity(self, anonymous_id: str, user_id: str | None, body: bytes, at: float) -> None:
        await self.db.run(lambda c: c.execute(
            "INSERT INTO identities (anonymous_id, user_id, identity, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(anonymous_id) DO UPDATE SET user_id=excluded.user_id, identity=excluded.identity, "
            "updated_at=excluded.updated_at", (anonymous_id, user_id, body, at)))

    async def _prune_identities(self, before: float, limit: int) -> list[str]:
        return await self.db.run(lambda c: [row[0] for row in c.execute(
            "DELETE FROM identities WHERE anonymous_id IN (SELECT anonymous_id FROM identities WHERE updated_at<? "
            "LIMIT ?) RETURNING anonymous_id", (before, limit))])

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

    # --- source activity ----------------------------------------------------------------

    async def record_activity(self, refused: dict[tuple[str, str], int], examples: list[tuple[str, Refusal]],
                              last_events: dict[str, float]) -> None:
        def add(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT INTO refusals (source_id, reason, count) VALUES (?, ?, ?) ON CONFLICT(source_id, "
                             "reason) DO UPDATE SET count = count + excluded.count",
                             [(source, reason, n) for (source, reason), n in refused.items()])
            conn.executemany("INSERT INTO refusal_examples (source_id, at, reason, detail) VALUES (?, ?, ?, ?)",
                             [(source, r.at, r.reason, r.detail) for source, r in examples])
            for source in {source for source, _ in examples}:
                conn.execute("DELETE FROM refusal_examples WHERE source_id = ? AND id <= (SELECT id FROM "
                             "refusal_examples WHERE source_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                             (source, source, REFUSAL_EXAMPLES_KEPT))
            conn.executemany("INSERT INTO source_activity (source_id, last_event_at) VALUES (?, ?) ON CONFLICT"
                             "(source_id) DO UPDATE SET last_event_at = max(last_event_at, excluded.last_event_at)",
                             list(last_events.items()))
        await self.db.run(add)

    async def activity(self, source_ids: list[str]) -> dict[str, SourceActivity]:
        def read(conn: sqlite3.Connection) -> dict[str, SourceActivity]:
            marks = ",".join("?" * len(source_ids))
            return source_activity(
                source_ids,
                conn.execute(f"SELECT source_id, reason, count FROM refusals WHERE source_id IN ({marks})", source_ids),
                conn.execute(f"SELECT source_id, at, reason, detail FROM refusal_examples WHERE source_id IN ({marks}) "
                             "ORDER BY id DESC", source_ids),
                conn.execute(f"SELECT source_id, last_event_at FROM source_activity WHERE source_id IN ({marks})",
                             source_ids))
        return await self.db.run(read)

    # --- audit and debugger logs ------------------------------------------------------------

    async def _write_audit(self, row: AuditRow) -> None:
        await self.db.run(_insert_audit, row)

    async def audit_log(self, before_id: int | None, limit: int) -> list[AuditEntry]:
        rows = await self.db.run(lambda c: c.execute(
            "SELECT id, at, action, object_type, object_id, old, new FROM audit_log WHERE id < ? "
            "ORDER BY id DESC LIMIT ?", (before_id or 2**62, limit)).fetchall())
        return [audit_entry(*row) for row in rows]

    async def _prune(self, kind: str, before: float, limit: int) -> int:
        return await self.db.run(lambda c: c.execute(_PRUNE[kind], (before, limit)).rowcount)

    # --- erasure and suppression ------------------------------------------------------------

    async def _read_suppressions(self, now: float) -> list[tuple[str, float]]:
        return await self.db.run(lambda c: c.execute("SELECT key, until FROM suppressions WHERE until > ?",
                                                     (now,)).fetchall())

    async def _write_suppressions(self, rows: list[tuple[str, float]]) -> None:
        await self.db.run(lambda c: c.executemany(
            "INSERT INTO suppressions (key, until) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
            "until = max(until, excluded.until)", rows))

    async def _erase_identities(self, match, after, limit: int):
        def scan(conn: sqlite3.Connection):
            rows = conn.execute("SELECT rowid, anonymous_id, user_id, identity FROM identities WHERE rowid > ? "
                                "ORDER BY rowid LIMIT ?", (after or 0, limit)).fetchall()
            gone = [row for row in rows if match(row[1], row[2], row[3])]
            conn.executemany("DELETE FROM identities WHERE rowid = ?", [(row[0],) for row in gone])
            return [row[1:] for row in gone], (rows[-1][0] if len(rows) == limit else None)
        return await self.db.run(scan)

    async def _erase_debug(self, match, after, limit: int):
        def scan(conn: sqlite3.Connection):
            rows = conn.execute("SELECT id, record FROM debug_log WHERE id > ? ORDER BY id LIMIT ?",
                                (after or 0, limit)).fetchall()
            gone = [(row_id,) for row_id, record in rows if match(record)]
            conn.executemany("DELETE FROM debug_log WHERE id = ?", gone)
            return len(gone), (rows[-1][0] if len(rows) == limit else None)
        return await self.db.run(scan)

    async def _write_debug(self, rows: list[tuple], keep: int | None) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT INTO debug_log (at, source_id, topic, event_id, status, record) "
                             "VALUES (?, ?, ?, ?, ?, ?)", rows)
            if keep:
                conn.execute("DELETE FROM debug_log WHERE id <= (SELECT max(id) FROM debug_log) - ?", (keep,))
        await self.db.run(write)

    async def debug_records(self, source_id, integration_id, status, before_id, limit) -> list[DebugRecord]:
        where, args = ["id < ?"], [before_id or 2**62]
        for column, value in (("source_id", source_id), ("topic", integration_id), ("status", status)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        rows = await self.db.run(lambda c: c.execute(
            f"SELECT id, at, source_id, topic, event_id, status, record FROM debug_log "
            f"WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall())
        return [debug_record(*row) for row in rows]


# Retention: the oldest records first. Tables whose rows come in time order are read in id order,
# `limit` rows a statement whatever their size (a look for expired rows never scans the table).
_PRUNE = {
    "debug": "DELETE FROM debug_log WHERE id IN (SELECT id FROM debug_log ORDER BY id LIMIT ?2) AND at < ?1",
    "audit": "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log ORDER BY id LIMIT ?2) AND at < ?1",
    "alerts": "DELETE FROM alert_history WHERE id IN (SELECT id FROM alert_history ORDER BY id LIMIT ?2) AND at < ?1",
    "volume": "DELETE FROM event_volume WHERE rowid IN (SELECT rowid FROM event_volume WHERE bucket < ?1 LIMIT ?2)",
    "suppressions": "DELETE FROM suppressions WHERE rowid IN (SELECT rowid FROM suppressions WHERE until < ?1 LIMIT ?2)",
}


def _insert_audit(conn: sqlite3.Connection, row: AuditRow | None) -> None:
    if row is not None:
        conn.execute("INSERT INTO audit_log (at, action, object_type, object_id, old, new) VALUES (?, ?, ?, ?, ?, ?)",
                     (time.time(), *row))
