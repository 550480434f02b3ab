"""`signal-edge copy --from ./signal-edge.db --to postgresql://...`: move a deployment, losing
nothing: configuration, secrets (still encrypted: the same key opens them), the admin token's
hash, identities, queued events (a row per event; leases released), dead letters, counters,
the audit and debugger logs, UI sessions, refusals, suppressions, alert destinations, incidents
and history, event counts. `--to` defaults to SIGNAL_DATABASE_URL. The SQLite file must not be served meanwhile (its
lock is taken), the target must be empty, and the counts are checked at the end.

All or nothing: a marker goes into the target's meta before its first row and leaves it only
after the counts agree. A copy that was interrupted (killed, a lost connection, a full disk)
leaves the marker, and every command refuses the database until it is made afresh and copied
again (collector/services.py)."""

from __future__ import annotations

import sqlite3
import sys
import time

import asyncpg

from collector.settings import Settings
from delivery.postgres.db import PgDatabase, shown
from delivery.sqlite.db import Database
from delivery.store import StorageUnusable

CHUNK = 5000  # rows read and written at a time
COPIED_NODE = "copied-from-sqlite"  # the counters' node: the figures the SQLite file had

# (table, its columns in both schemas): copied as they are. The queue and the counters are copied by
# their own functions (their layouts differ); tests/test_copy.py checks that every table of the
# SQLite schema is one or the other, so a new table cannot be forgotten here.
PLAIN = (
    ("meta", "key, value"),
    ("sources", "id, pipeline_key, body"),
    ("integrations", "id, source_id, body"),
    ("identities", "anonymous_id, user_id, identity, updated_at"),
    ("dead_letters", "id, topic, event_id, payload, created_at, dead_at, attempts, reason"),
    ("debug_log", "id, at, source_id, topic, event_id, status, record"),
    ("audit_log", "id, at, action, object_type, object_id, old, new"),
    ("admin_sessions", "key, csrf, created_at, expires_at, client"),
    ("refusals", "source_id, reason, count"),
    ("refusal_examples", "id, source_id, at, reason, detail"),
    ("source_activity", "source_id, last_event_at"),
    ("suppressions", "key, until"),
    ("alert_destinations", "id, body"),
    ("alert_incidents", "key, body"),
    ("alert_history", "id, at, body"),
    ("event_volume", "topic, event, bucket, count"),
)
OWN_FUNCTIONS = ("queue", "counters")
SEQUENCES = ("dead_letters", "debug_log", "audit_log", "queue", "refusal_examples", "alert_history")
UNFINISHED = "copy_unfinished"  # in the target's meta while a copy runs; see refuse_unfinished()


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def copy_deployment(settings: Settings, target_url: str) -> int:
    source = Database(settings.db, exclusive=True)  # refuses while a server runs on the file
    source.start()
    target = PgDatabase(target_url, pool_size=2)
    try:
        await target.start()
        await refuse_unfinished(target)
        if await target.run(lambda c: c.fetchval(
                "SELECT (SELECT count(*) FROM sources) + (SELECT count(*) FROM queue) + (SELECT count(*) FROM meta)")):
            raise StorageUnusable(f"{shown(target_url)} already holds a deployment; copy into an empty database")
        started = time.monotonic()
        await target.run(lambda c: c.execute("INSERT INTO meta (key, value) VALUES ($1, $2)", UNFINISHED,
                                             f"from {settings.db}, started at {time.time():.0f}"))
        copied = {}
        for table, columns in PLAIN:
            copied[table] = await _copy_table(source, target, table, columns)
        copied["queue"] = await _copy_queue(source, target)
        await _copy_counters(source, target)
        await target.run(_reset_sequences)
        await _check(source, target, copied)
        await target.run(lambda c: c.execute("DELETE FROM meta WHERE key = $1", UNFINISHED))  # done: nodes may start
    finally:
        source.close()
        await target.close()
    say(f"copied {settings.db} to {shown(target_url)} in {time.monotonic() - started:.1f}s: "
        + ", ".join(f"{n} {table}" for table, n in copied.items()))
    say("The stored tokens stay encrypted with the same secret key: give every node the key file "
        f"({settings.key_file}) or SIGNAL_SECRET_KEY, then start them with SIGNAL_DATABASE_URL.")
    return 0


async def refuse_unfinished(db: PgDatabase) -> None:
    """StorageUnusable, in one line that says what to do, when `db` holds a copy that did not finish."""
    if await db.run(lambda c: c.fetchval("SELECT 1 FROM meta WHERE key = $1", UNFINISHED), single=True):
        raise StorageUnusable(f"{shown(db.url)} holds an unfinished `signal-edge copy` (it was interrupted): drop and "
                              "create that database again (dropdb, createdb), then run the copy again")


async def _copy_table(source: Database, target: PgDatabase, table: str, columns: str) -> int:
    names = [c.strip() for c in columns.split(",")]
    count, offset = 0, 0
    while True:
        rows = await source.run(lambda c, offset: c.execute(
            f"SELECT {columns} FROM {table} ORDER BY rowid LIMIT ? OFFSET ?", (CHUNK, offset)).fetchall(), offset)
        if not rows:
            return count
        await target.run(lambda c, rows: c.copy_records_to_table(table, records=rows, columns=names), rows)
        count += len(rows)
        offset += len(rows)
        if len(rows) == CHUNK:
            say(f"  {table}: {count} rows")


async def _copy_queue(source: Database, target: PgDatabase) -> int:
    """Every event of every row, a row of its own; what was leased is waiting again."""
    columns = ["topic", "priority", "created_at", "available_at", "attempts", "last_error", "payload"]
    copied, after = 0, 0
    total = await source.run(lambda c: c.execute("SELECT coalesce(sum(events), 0) FROM queue").fetchone()[0])
    now = time.time()
    while True:
        rows = await source.run(lambda c, after: c.execute(
            "SELECT id, topic, priority, created_at, available_at, attempts, last_error, leased, events, payload "
            "FROM queue WHERE id > ? ORDER BY id LIMIT ?", (after, CHUNK // 10 or 1)).fetchall(), after)
        if not rows:
            return copied
        records = []
        for _, topic, priority, created_at, available_at, attempts, last_error, leased, events, payload in rows:
            parts = [payload] if events == 1 else payload.split(b"\n")
            ready = min(available_at, now) if leased else available_at
            records += [(topic, priority, created_at, ready, attempts, last_error, part) for part in parts]
        await target.run(lambda c, records: c.copy_records_to_table("queue", records=records, columns=columns), records)
        copied += len(records)
        after = rows[-1][0]
        say(f"  queue: {copied} of {total} events")


async def _copy_counters(source: Database, target: PgDatabase) -> None:
    rows = await source.run(lambda c: c.execute(
        "SELECT topic, accepted, filtered, delivered, dead_lettered, "
        "(SELECT coalesce(sum(events), 0) FROM queue WHERE queue.topic = counters.topic), skipped_disabled, "
        "last_error, last_error_at FROM counters").fetchall())

    async def write(conn: asyncpg.Connection) -> None:
        await conn.executemany(
            "INSERT INTO counters (topic, node, accepted, filtered, delivered, dead_lettered, queued, in_flight, "
            "skipped_disabled) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8)",
            [(r[0], COPIED_NODE, *r[1:7]) for r in rows])
        await conn.executemany("INSERT INTO topic_errors (topic, last_error, last_error_at) VALUES ($1, $2, $3)",
                               [(r[0], r[7], r[8]) for r in rows if r[7] is not None])
    await target.run(write)


async def _reset_sequences(conn: asyncpg.Connection) -> None:
    for table in SEQUENCES:
        await conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                           f"coalesce((SELECT max(id) FROM {table}), 0) + 1, false)")


async def _check(source: Database, target: PgDatabase, copied: dict[str, int]) -> None:
    """The counts in both databases agree, or the copy is reported as failed."""
    def counts(conn: sqlite3.Connection) -> dict[str, int]:
        found = {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table, _ in PLAIN}
        found["queue"] = conn.execute("SELECT coalesce(sum(events), 0) FROM queue").fetchone()[0]
        return found

    expected = await source.run(counts)

    async def landed(conn: asyncpg.Connection) -> dict[str, int]:
        found = {table: await conn.fetchval(f"SELECT count(*) FROM {table}") for table in expected}
        found["meta"] -= 1  # the copy's own marker
        return found

    found = await target.run(landed)
    wrong = {t: (expected[t], found[t]) for t in expected if expected[t] != found[t] or copied.get(t) != found[t]}
    if wrong:
        raise StorageUnusable("the copy is incomplete (table: in SQLite, in PostgreSQL): "
                              + ", ".join(f"{t}: {a}, {b}" for t, (a, b) in wrong.items()))
