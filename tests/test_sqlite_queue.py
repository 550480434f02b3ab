"""What is particular to the SQLite backend: rows that hold the events of a commit, the writer
thread, migrations of old files, and the cost of a lease on a deep backlog. The queue's contract
is tests/test_queue.py, run against every backend."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest

from delivery.events import event_decoder
from delivery.queue import QueueItem, Settlement
from delivery.sqlite.db import Database
from delivery.sqlite.event_queue import SqliteEventQueue
from delivery.sqlite.migrations import MIGRATIONS
from delivery.store import StorageUnusable


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def db(tmp_path):
    database = Database(str(tmp_path / "q.db"))
    database.start()
    yield database
    database.close()


def items(n, topic="int_a", priority=0, at=1000.0):
    return [QueueItem(topic, f'["m{i}"]'.encode(), at + i * 0.001, priority) for i in range(n)]


def test_schema_is_versioned_and_wal(db, tmp_path):
    conn = sqlite3.connect(tmp_path / "q.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "future.db"
    sqlite3.connect(path).execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    database = Database(str(path))
    with pytest.raises(StorageUnusable, match="newer than this signal-edge"):
        database.start()


def lines(n):
    return [f'["t{i}"]'.encode() for i in range(n)]


def together(n, topic="int_a", at=1000.0, priority=0):
    """n events of one request: one item, its payload n JSON lines."""
    return [QueueItem(topic, b"\n".join(lines(n)), at, priority, n)]


def row_count(db):
    return run(db.run(lambda c: c.execute("SELECT count(*) FROM queue").fetchone()[0]))


def test_events_appended_in_one_commit_share_a_row(db):
    async def main():
        q = SqliteEventQueue(db)
        await q.open()
        pretty = QueueItem("int_a", b'[\n "nl"\n]', 1000.0, 0)  # a newline: a row of its own
        await q.append(together(5) + [pretty, QueueItem("int_a", b'["x"]', 1001.0, 0)])
        assert q.depth() == 7
        stats = await q.stats("int_a")
        assert (stats.accepted, stats.queued) == (7, 7)
        leased = await q.lease("int_a", 10, 60)
        assert [i.payload for i in leased] == lines(5) + [pretty.payload, b'["x"]']
        assert len({i.id for i in leased}) == 7
        assert await db.run(lambda c: c.execute("SELECT count(*) FROM queue").fetchone()[0]) == 3
        # Concurrent requests (appends in one turn of the loop) share one commit and one row per
        # topic and priority; the row is as old as its oldest event.
        await asyncio.gather(q.append(together(2, at=3000.0)), q.append(together(3, at=2999.0)),
                             q.append(together(1, at=3001.0, priority=1)))
        rows = await db.run(lambda c: c.execute(
            "SELECT priority, events, created_at FROM queue WHERE id > 3 ORDER BY id").fetchall())
        assert rows == [(0, 5, 2999.0), (1, 1, 3001.0)]
    run(main())


def test_an_item_of_many_events_spans_rows_of_at_most_a_thousand(db):
    async def main():
        q = SqliteEventQueue(db)
        await q.open()
        await q.append(together(2500))
        assert q.depth() == 2500
        assert await db.run(lambda c: c.execute("SELECT count(*), max(events) FROM queue").fetchone()) == (3, 1000)
        leased = await q.lease("int_a", 5000, 60)
        assert [i.payload for i in leased] == lines(2500)
        await q.settle("int_a", Settlement(delivered=[i.id for i in leased]))
        assert (await q.stats("int_a")).delivered == 2500
    run(main())
    assert row_count(db) == 0


def test_a_lease_splits_a_row_it_cannot_take_whole(db):
    async def main():
        q = SqliteEventQueue(db)
        await q.open()
        await q.append(together(5))
        first = await q.lease("int_a", 3, 60)
        assert [i.payload for i in first] == lines(5)[:3]
        stats = await q.stats("int_a")
        assert (stats.queued, stats.in_flight) == (2, 3)
        rest = await q.lease("int_a", 10, 60)
        assert [i.payload for i in rest] == lines(5)[3:]
        await q.settle("int_a", Settlement(delivered=[i.id for i in first + rest]))
        stats = await q.stats("int_a")
        assert (stats.delivered, stats.queued, stats.in_flight) == (5, 0, 0)
        assert q.depth() == 0
    run(main())
    assert row_count(db) == 0


def test_a_failing_job_does_not_undo_its_neighbours(db):
    async def main():
        q = SqliteEventQueue(db)
        await q.open()

        def broken(conn):
            conn.execute("INSERT INTO queue (topic, payload, created_at, available_at) VALUES ('x', 'y', 1, 1)")
            raise ValueError("boom")

        results = await asyncio.gather(q.append(items(2)), db.run(broken), q.append(items(2, topic="int_b")),
                                       return_exceptions=True)
        assert isinstance(results[1], ValueError)
        count = await db.run(lambda c: c.execute("SELECT count(*), sum(events) FROM queue").fetchone())
        assert count == (2, 4)  # the broken job's insert was rolled back, the others committed
    run(main())


def old_file(path, version):
    """A connection to a new file at schema `version`, to fill in as that version would have."""
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:version]:
        conn.executescript(script)
    conn.execute(f"PRAGMA user_version={version}")
    return conn


def upgraded(path, check):
    """Opens the file (which migrates it) and runs `await check(queue)` on it."""
    database = Database(str(path))
    database.start()
    try:
        run(check(SqliteEventQueue(database)))
    finally:
        database.close()


def test_migration_2_counts_what_a_version_1_file_already_queued(tmp_path):
    conn = old_file(tmp_path / "v1.db", 1)
    conn.executemany("INSERT INTO queue (topic, payload, created_at, available_at, leased) VALUES (?, ?, 1, 1, ?)",
                     [("int_a", b"{}", 0), ("int_a", b"{}", 1), ("int_b", b"{}", 0)])
    conn.execute("INSERT INTO counters (topic, accepted) VALUES ('int_a', 2)")
    conn.commit()
    conn.close()

    async def check(q):
        a, b = await q.stats("int_a"), await q.stats("int_b")
        assert (a.accepted, a.queued, a.in_flight) == (2, 1, 1)
        assert (b.queued, b.in_flight) == (1, 0)
    upgraded(tmp_path / "v1.db", check)


def test_migration_4_rewrites_queued_events_as_arrays(tmp_path):
    """Events queued and dead-lettered as JSON objects (versions 1-3) still deliver and show."""
    conn = old_file(tmp_path / "v3.db", 3)

    def old(i):  # what version 3 queued: an EdgeEvent as a JSON object, defaults left out
        return json.dumps({"message_id": f"old-{i}", "type": "track", "source_id": "src_a", "received_at": 1.0,
                           "event_time": 1.0, "name": "Lead Generated", "ip": "203.0.113.7",
                           "identity": {"em": ["a" * 64]}}).encode()

    conn.execute("INSERT INTO queue (topic, payload, created_at, available_at, events) VALUES ('int_a', ?, 1, 1, 2)",
                 (old(0) + b"\n" + old(1),))
    conn.execute("INSERT INTO queue (topic, payload, created_at, available_at) VALUES ('int_a', ?, 1, 1)", (old(2),))
    conn.execute("INSERT INTO queue (topic, payload, created_at, available_at) VALUES ('int_a', X'6e6f74206a736f6e', 1, 1)")
    conn.execute("INSERT INTO dead_letters (topic, event_id, payload, created_at, dead_at, attempts, reason) "
                 "VALUES ('int_a', 'old-3', ?, 1, 2, 8, 'gave up')", (old(3),))
    conn.commit()
    conn.close()

    async def check(q):
        leased = await q.lease("int_a", 10, 60)
        assert leased[3].payload == b"not json"  # left as it was: delivery dead-letters it
        events = [event_decoder.decode(item.payload) for item in leased[:3]]
        assert [(e.message_id, e.ip, e.identity.em) for e in events] == [
            (f"old-{i}", "203.0.113.7", ["a" * 64]) for i in range(3)]
        [dead] = await q.dead_letters("int_a", 0, 10)
        assert event_decoder.decode(dead.payload).message_id == "old-3"
    upgraded(tmp_path / "v3.db", check)


def test_migration_5_moves_the_payload_last_and_keeps_every_row(tmp_path, caplog):
    conn = old_file(tmp_path / "v4.db", 3)  # 4 rewrites rows in code: nothing to rewrite in a new file
    conn.execute("PRAGMA user_version=4")
    conn.execute("INSERT INTO queue (topic, payload, created_at, available_at, attempts, last_error, events) "
                 "VALUES ('int_a', ?, 5, 10, 2, 'HTTP 503', 2)", (b'["a"]\n["b"]',))
    conn.execute("INSERT INTO queue (topic, priority, payload, created_at, available_at, leased) "
                 "VALUES ('int_a', 1, ?, 6, 20, 1)", (b'["c"]',))
    conn.execute("INSERT INTO counters (topic, accepted, queued, in_flight) VALUES ('int_a', 3, 2, 1)")
    conn.commit()
    conn.close()

    async def check(q):
        rows = await q.db.run(lambda c: c.execute(
            "SELECT id, topic, priority, created_at, available_at, attempts, leased, events, last_error, payload "
            "FROM queue ORDER BY id").fetchall())
        assert rows == [(1, "int_a", 0, 5.0, 10.0, 2, 0, 2, "HTTP 503", b'["a"]\n["b"]'),
                        (2, "int_a", 1, 6.0, 20.0, 0, 1, 1, None, b'["c"]')]
        columns = await q.db.run(lambda c: [row[1] for row in c.execute("PRAGMA table_info(queue)")])
        assert columns[-1] == "payload"
        assert await q.recover() == 1  # the row leased before the upgrade
        leased = await q.lease("int_a", 10, 60)
        assert [(i.payload, i.attempts, i.created_at) for i in leased] == [
            (b'["c"]', 0, 6.0), (b'["a"]', 2, 5.0), (b'["b"]', 2, 5.0)]  # priority first
        plan = await q.db.run(lambda c: c.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM queue WHERE topic='x' AND priority=0 AND available_at<=1").fetchall())
        assert "queue_ready" in str(plan)
    upgraded(tmp_path / "v4.db", check)
    assert "rewriting the queue's 2 rows (3 events)" in caplog.text


def _bytes_read(thread_id: int) -> int:
    """What a thread has passed to read() and pread(): SQLite's page reads that missed its cache."""
    for line in open(f"/proc/self/task/{thread_id}/io"):
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar")


def test_a_lease_reads_the_rows_it_takes_not_the_backlog(tmp_path):
    """A backlog of 40 rows of 100 events (3.6 MB): looking for ready work and leasing 150
    events read about the two rows leased. They used to read every row a query could
    return: a column stored after the payload is reached through the payload's overflow
    pages, and the lease query fetched `LIMIT 150` rows of 100 events."""
    path = tmp_path / "backlog.db"
    line = b'["' + b"x" * 900 + b'"]'
    row = QueueItem("int_a", b"\n".join([line] * 100), 1000.0, events=100)

    async def fill(q):
        for _ in range(40):
            await q.append([row])
    upgraded(path, fill)

    database = Database(str(path))  # a new connection: its page cache starts empty
    database.start()
    try:
        async def measure():
            q = SqliteEventQueue(database)
            await q.open()
            before = _bytes_read(database._thread.native_id)
            readiness = await q.ready("int_a", 1000)
            after_ready = _bytes_read(database._thread.native_id)
            leased = await q.lease("int_a", 150, 60)
            after_lease = _bytes_read(database._thread.native_id)
            return readiness, leased, after_ready - before, after_lease - after_ready

        readiness, leased, ready_read, lease_read = run(measure())
    finally:
        database.close()
    assert readiness.full and len(leased) == 150 and leased[-1].payload == line
    assert ready_read < len(row.payload)  # less than one row's events
    assert lease_read < 3 * len(row.payload)  # the two rows it took, and the rest split off the second


def test_a_readiness_check_costs_the_same_with_a_deep_backlog(db):
    """The worker asks before every batch: it must seek, not scan the topic's rows."""
    async def steps(q, rows):
        await db.run(lambda c: c.executemany(  # a row per event, as at low traffic
            "INSERT INTO queue (topic, priority, created_at, available_at, payload) VALUES ('int_a', ?, 900, 900, ?)",
            [(i % 2, b'["m"]') for i in range(rows)]))
        counted = [0]

        def count():
            counted[0] += 1
        await db.run(lambda c: c.set_progress_handler(count, 1))  # called for every SQLite VM instruction
        readiness = await q.ready("int_a", 10)
        await db.run(lambda c: c.set_progress_handler(None, 1))
        assert readiness.priority and readiness.full and readiness.waited == 2000.0 - 900.0
        return counted[0]

    async def main():
        q = SqliteEventQueue(db, clock=lambda: 2000.0)
        await q.open()
        shallow = await steps(q, 20)
        deep = await steps(q, 20_000)
        assert deep < 2 * shallow, (shallow, deep)
    run(main())
