"""Schema migrations, applied in order; `PRAGMA user_version` records the last one.

Append new migrations to MIGRATIONS; never edit one that has shipped.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable

import msgspec

from delivery.events import EdgeEvent, event_encoder
from delivery.store import StorageUnusable

log = logging.getLogger("signal_edge.db")


def _events_as_arrays(conn: sqlite3.Connection) -> None:
    """Version 4 queues an EdgeEvent as a JSON array (see delivery/events.py): rewrite the
    objects that versions 1-3 queued and dead-lettered."""
    legacy = msgspec.defstruct("LegacyEdgeEvent", [
        (f.name, f.type, msgspec.field(default_factory=f.default_factory)
         if f.default_factory is not msgspec.NODEFAULT else f.default)
        for f in msgspec.structs.fields(EdgeEvent)])
    decoder = msgspec.json.Decoder(legacy)

    def as_array(payload: bytes) -> bytes:
        try:
            return event_encoder.encode(EdgeEvent(*msgspec.structs.astuple(decoder.decode(payload))))
        except (msgspec.DecodeError, msgspec.ValidationError):
            return payload  # not an event of ours: delivery dead-letters it with the reason

    def rewrite(table: str, lines: bool) -> int:
        rows = conn.execute(f"SELECT id, payload, {'events' if lines else '1'} FROM {table}").fetchall()
        for row_id, payload, events in rows:
            if not isinstance(payload, bytes):
                continue  # not written by signal-edge
            parts = payload.split(b"\n") if events > 1 else [payload]
            conn.execute(f"UPDATE {table} SET payload=? WHERE id=?", (b"\n".join(map(as_array, parts)), row_id))
        return len(rows)

    queued, dead = rewrite("queue", True), rewrite("dead_letters", False)
    if queued or dead:
        log.warning("database upgraded: %d queue rows and %d dead letters rewritten in the compact event format",
                    queued, dead)


def _payload_last(conn: sqlite3.Connection) -> None:
    """Version 5 stores a queue row's payload after every other column. A row of many events
    spills into overflow pages, and SQLite reaches a column stored after the payload only by
    walking the whole chain: with `events`, `leased` and `available_at` after it, every look
    at a row read all its events. The table is rebuilt; every row keeps its id."""
    rows, events = conn.execute("SELECT count(*), coalesce(sum(events), 0) FROM queue").fetchone()
    if rows:
        log.warning("upgrading the database: rewriting the queue's %d rows (%d events); "
                    "this takes 1-2 seconds per 100 MB of queue", rows, events)
    for statement in (
        """CREATE TABLE queue_v5 (
            id INTEGER PRIMARY KEY,
            topic TEXT NOT NULL,
            priority INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            available_at REAL NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            leased INTEGER NOT NULL DEFAULT 0,
            events INTEGER NOT NULL DEFAULT 1,
            last_error TEXT,
            payload BLOB NOT NULL
        )""",
        "INSERT INTO queue_v5 (id, topic, priority, created_at, available_at, attempts, leased, events, last_error, "
        "payload) SELECT id, topic, priority, created_at, available_at, attempts, leased, events, last_error, payload "
        "FROM queue",
        "DROP TABLE queue",
        "ALTER TABLE queue_v5 RENAME TO queue",
        "CREATE INDEX queue_ready ON queue(topic, priority, available_at)",
    ):
        conn.execute(statement)


MIGRATIONS: tuple[str | Callable[[sqlite3.Connection], None], ...] = (
    # 1: configuration, identity memory, the event queue, dead letters, accounting, logs
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE sources (
        id TEXT PRIMARY KEY,
        pipeline_key TEXT NOT NULL UNIQUE,
        body BLOB NOT NULL
    );
    CREATE TABLE integrations (
        id TEXT PRIMARY KEY,
        source_id TEXT NOT NULL REFERENCES sources(id),
        body BLOB NOT NULL
    );
    CREATE TABLE identities (
        anonymous_id TEXT PRIMARY KEY,
        user_id TEXT,
        identity BLOB NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE queue (
        id INTEGER PRIMARY KEY,
        topic TEXT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        payload BLOB NOT NULL,
        created_at REAL NOT NULL,
        available_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        leased INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    );
    CREATE INDEX queue_ready ON queue(topic, priority, available_at);
    CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY,
        topic TEXT NOT NULL,
        event_id TEXT,
        payload BLOB NOT NULL,
        created_at REAL NOT NULL,
        dead_at REAL NOT NULL,
        attempts INTEGER NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE INDEX dead_letters_topic ON dead_letters(topic, id);
    CREATE TABLE counters (
        topic TEXT PRIMARY KEY,
        accepted INTEGER NOT NULL DEFAULT 0,
        filtered INTEGER NOT NULL DEFAULT 0,
        delivered INTEGER NOT NULL DEFAULT 0,
        dead_lettered INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        last_error_at REAL
    );
    CREATE TABLE debug_log (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        source_id TEXT,
        topic TEXT,
        event_id TEXT,
        status TEXT NOT NULL,
        record BLOB NOT NULL
    );
    CREATE INDEX debug_log_topic ON debug_log(topic, id);
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        action TEXT NOT NULL,
        object_type TEXT NOT NULL,
        object_id TEXT NOT NULL,
        old BLOB,
        new BLOB
    );
    """,
    # 2: queued and in-flight counts kept with the other counters (counting rows was O(queue))
    """
    ALTER TABLE counters ADD COLUMN queued INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE counters ADD COLUMN in_flight INTEGER NOT NULL DEFAULT 0;
    INSERT INTO counters (topic) SELECT DISTINCT topic FROM queue WHERE true
        ON CONFLICT(topic) DO NOTHING;
    UPDATE counters SET
        queued = (SELECT count(*) FROM queue WHERE queue.topic = counters.topic AND leased = 0),
        in_flight = (SELECT count(*) FROM queue WHERE queue.topic = counters.topic AND leased = 1);
    """,
    # 3: one row can hold the events that arrived together (see event_queue.py)
    """
    ALTER TABLE queue ADD COLUMN events INTEGER NOT NULL DEFAULT 1;
    """,
    # 4: queued events as JSON arrays
    _events_as_arrays,
    # 5: the queue's payload as its last column
    _payload_last,
    # 6: admin UI sessions, kept server-side so that a logout or a token rotation ends them; the
    # events a disabled integration skipped
    """
    ALTER TABLE counters ADD COLUMN skipped_disabled INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE admin_sessions (
        key TEXT PRIMARY KEY,
        csrf TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        client TEXT
    );
    """,
    # 7: per source: refused requests by reason, the last few examples, when an event last came (issue 19)
    """
    CREATE TABLE refusals (
        source_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        count INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (source_id, reason)
    );
    CREATE TABLE refusal_examples (
        id INTEGER PRIMARY KEY,
        source_id TEXT NOT NULL,
        at REAL NOT NULL,
        reason TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX refusal_examples_source ON refusal_examples(source_id, id);
    CREATE TABLE source_activity (source_id TEXT PRIMARY KEY, last_event_at REAL NOT NULL);
    """,
    # 8: identities expire (issue 24): the retention task finds the oldest through an index
    """
    CREATE INDEX identities_updated ON identities(updated_at);
    """,
    # 9: run as a service (issue 27): erasure's suppressions (keyed digests, never the person's
    # hashes), alert destinations, open incidents and their history, events per integration, type and time bucket
    """
    CREATE TABLE suppressions (key TEXT PRIMARY KEY, until REAL NOT NULL);
    CREATE TABLE alert_destinations (id TEXT PRIMARY KEY, body BLOB NOT NULL);
    CREATE TABLE alert_incidents (key TEXT PRIMARY KEY, body BLOB NOT NULL);
    CREATE TABLE alert_history (id INTEGER PRIMARY KEY, at REAL NOT NULL, body BLOB NOT NULL);
    CREATE TABLE event_volume (
        topic TEXT NOT NULL,
        event TEXT NOT NULL,
        bucket REAL NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (topic, event, bucket)
    );
    CREATE INDEX event_volume_bucket ON event_volume(bucket);
    """,
)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the file up to the newest schema; returns the version it is at."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > len(MIGRATIONS):
        raise StorageUnusable(
            f"database schema version {current} is newer than this signal-edge "
            f"({len(MIGRATIONS)}); upgrade signal-edge or use another --db file"
        )
    for version in range(current + 1, len(MIGRATIONS) + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            step = MIGRATIONS[version - 1]
            if callable(step):
                step(conn)
            else:
                for statement in filter(str.strip, step.split(";")):
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)
