"""EventQueue on SQLite. A leased row is hidden by pushing its `available_at` to the lease
expiry, so "ready" is always `available_at <= now` and one index serves every query."""

from __future__ import annotations

import sqlite3
from collections import Counter

from delivery.queue import DeadLetter, Leased, QueueItem, Readiness, Settlement, TopicStats
from delivery.sqlite.db import Database


class SqliteEventQueue:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._depth = 0

    async def open(self) -> None:
        self._depth = await self.db.run(lambda c: c.execute("SELECT count(*) FROM queue").fetchone()[0])

    def depth(self) -> int:
        return self._depth

    async def append(self, items: list[QueueItem]) -> None:
        if not items:
            return
        await self.db.run_merged(_append, items)
        self._depth += len(items)

    async def recover(self, now: float) -> int:
        def release(conn: sqlite3.Connection) -> int:
            count = conn.execute("UPDATE queue SET leased=0, available_at=? WHERE leased=1", (now,)).rowcount
            _recount(conn)
            return count

        return await self.db.run(release)

    async def ready(self, topic: str, now: float, batch_size: int) -> Readiness:
        return await self.db.run(_ready, topic, now, batch_size)

    async def lease(self, topic: str, limit: int, now: float, lease_seconds: float) -> list[Leased]:
        return await self.db.run(_lease, topic, limit, now, now + lease_seconds)

    async def settle(self, topic: str, settlement: Settlement, now: float) -> None:
        await self.db.run(_settle, topic, settlement, now)
        self._depth -= len(settlement.delivered) + len(settlement.filtered) + len(settlement.dead)

    async def reschedule(self, topic: str, at: float) -> int:
        return await self.db.run(
            lambda c: c.execute(
                "UPDATE queue SET available_at=? WHERE topic=? AND leased=0 AND available_at>?", (at, topic, at)
            ).rowcount
        )

    async def dead_letters(self, topic: str, after_id: int, limit: int) -> list[DeadLetter]:
        rows = await self.db.run(
            lambda c: c.execute(
                "SELECT id, topic, event_id, payload, created_at, dead_at, attempts, reason FROM dead_letters "
                "WHERE topic=? AND id>? ORDER BY id LIMIT ?", (topic, after_id, limit)
            ).fetchall()
        )
        return [DeadLetter(*row) for row in rows]

    async def replay(self, topic: str, ids: list[int] | None, now: float) -> int:
        count = await self.db.run(_replay, topic, ids, now)
        self._depth += count
        return count

    async def stats(self, topic: str) -> TopicStats:
        return await self.db.run(_stats, topic)

    async def discard(self, topic: str, reason: str, now: float) -> int:
        def move(conn: sqlite3.Connection) -> int:
            conn.execute("UPDATE queue SET leased=1 WHERE topic=?", (topic,))
            _recount(conn, topic)
            ids = [r[0] for r in conn.execute("SELECT id FROM queue WHERE topic=?", (topic,))]
            _settle(conn, topic, Settlement(dead=[(i, reason) for i in ids]), now)
            return len(ids)

        count = await self.db.run(move)
        self._depth -= count
        return count


def _append(conn: sqlite3.Connection, items: list[QueueItem]) -> None:
    conn.executemany(
        "INSERT INTO queue (topic, priority, payload, created_at, available_at) VALUES (?, ?, ?, ?, ?)",
        [(i.topic, i.priority, i.payload, i.created_at, i.created_at) for i in items],
    )
    conn.executemany(
        "INSERT INTO counters (topic, accepted, queued) VALUES (?, ?, ?) ON CONFLICT(topic) DO UPDATE SET "
        "accepted = accepted + excluded.accepted, queued = queued + excluded.queued",
        [(topic, n, n) for topic, n in Counter(i.topic for i in items).items()],
    )


def _ready(conn: sqlite3.Connection, topic: str, now: float, batch_size: int) -> Readiness:
    priority = conn.execute(
        "SELECT 1 FROM queue WHERE topic=? AND priority=1 AND available_at<=? LIMIT 1", (topic, now)
    ).fetchone() is not None
    oldest = conn.execute(
        "SELECT min(available_at) FROM queue WHERE topic=? AND priority=0", (topic,)
    ).fetchone()[0]
    ready_oldest = oldest if oldest is not None and oldest <= now else None
    full = ready_oldest is not None and conn.execute(
        "SELECT count(*) FROM (SELECT 1 FROM queue WHERE topic=? AND priority=0 AND available_at<=? LIMIT ?)",
        (topic, now, batch_size),
    ).fetchone()[0] >= batch_size
    next_at = conn.execute(
        "SELECT min(available_at) FROM queue WHERE topic=? AND available_at>?", (topic, now)
    ).fetchone()[0]
    return Readiness(priority, full, ready_oldest, next_at)


def _lease(conn: sqlite3.Connection, topic: str, limit: int, now: float, until: float) -> list[Leased]:
    rows = []
    for priority in (1, 0):  # priority items first, then the oldest of the rest
        if len(rows) >= limit:
            break
        rows += conn.execute(
            "SELECT id, topic, payload, attempts, created_at, leased FROM queue "
            "WHERE topic=? AND priority=? AND available_at<=? ORDER BY available_at, id LIMIT ?",
            (topic, priority, now, limit - len(rows)),
        ).fetchall()
    conn.executemany("UPDATE queue SET leased=1, available_at=? WHERE id=?", [(until, r[0]) for r in rows])
    fresh = sum(1 for r in rows if not r[5])  # the others were leased before and their lease ran out
    if fresh:
        conn.execute("UPDATE counters SET queued = queued - ?, in_flight = in_flight + ? WHERE topic=?",
                     (fresh, fresh, topic))
    return [Leased(*row[:5]) for row in rows]


def _settle(conn: sqlite3.Connection, topic: str, s: Settlement, now: float) -> None:
    """Only rows still leased are settled, and counters move by what actually changed, so
    settling the same row twice (after an expired lease) cannot count it twice."""
    dead = 0
    if s.dead:
        dead = conn.executemany(
            "INSERT INTO dead_letters (topic, event_id, payload, created_at, dead_at, attempts, reason) "
            "SELECT topic, json_extract(CAST(payload AS TEXT), '$.message_id'), payload, created_at, ?, attempts + 1, ? "
            "FROM queue WHERE id=? AND leased=1",
            [(now, reason, item_id) for item_id, reason in s.dead],
        ).rowcount
        conn.executemany("DELETE FROM queue WHERE id=? AND leased=1", [(i,) for i, _ in s.dead])
    delete = "DELETE FROM queue WHERE id=? AND leased=1"
    delivered = conn.executemany(delete, [(i,) for i in s.delivered]).rowcount if s.delivered else 0
    filtered = conn.executemany(delete, [(i,) for i in s.filtered]).rowcount if s.filtered else 0
    back = 0
    if s.retry:
        back += conn.executemany(
            "UPDATE queue SET leased=0, attempts=attempts+1, available_at=?, last_error=? WHERE id=? AND leased=1",
            [(at, error, item_id) for item_id, at, error in s.retry],
        ).rowcount
    if s.release:
        back += conn.executemany("UPDATE queue SET leased=0, available_at=? WHERE id=? AND leased=1",
                                 [(at, i) for i, at in s.release]).rowcount
    last_error = s.last_error or (s.retry[-1][2] if s.retry else None) or (s.dead[-1][1] if s.dead else None)
    conn.execute(
        "UPDATE counters SET filtered = filtered + ?, delivered = delivered + ?, dead_lettered = dead_lettered + ?, "
        "in_flight = in_flight - ?, queued = queued + ?, "
        "last_error = coalesce(?, last_error), last_error_at = coalesce(?, last_error_at) WHERE topic=?",
        (filtered, delivered, dead, filtered + delivered + dead + back, back, last_error,
         now if last_error else None, topic),
    )


def _replay(conn: sqlite3.Connection, topic: str, ids: list[int] | None, now: float) -> int:
    where, args = "topic=?", [topic]
    if ids is not None:
        if not ids:
            return 0
        where += f" AND id IN ({','.join('?' * len(ids))})"
        args += ids
    conn.execute(
        f"INSERT INTO queue (topic, priority, payload, created_at, available_at) "
        f"SELECT topic, 1, payload, created_at, ? FROM dead_letters WHERE {where} ORDER BY id",
        [now, *args],
    )
    count = conn.execute(f"DELETE FROM dead_letters WHERE {where}", args).rowcount
    conn.execute("UPDATE counters SET dead_lettered = dead_lettered - ?, queued = queued + ? WHERE topic=?",
                 (count, count, topic))
    return count


def _recount(conn: sqlite3.Connection, topic: str | None = None) -> None:
    """queued and in_flight from the rows themselves (start-up and admin operations only)."""
    where = "WHERE topic=?" if topic else ""
    conn.execute(
        "UPDATE counters SET "
        "queued = (SELECT count(*) FROM queue WHERE queue.topic = counters.topic AND leased = 0), "
        f"in_flight = (SELECT count(*) FROM queue WHERE queue.topic = counters.topic AND leased = 1) {where}",
        (topic,) if topic else (),
    )


def _stats(conn: sqlite3.Connection, topic: str) -> TopicStats:
    row = conn.execute(
        "SELECT accepted, filtered, delivered, dead_lettered, queued, in_flight, last_error, last_error_at "
        "FROM counters WHERE topic=?", (topic,),
    ).fetchone()
    return TopicStats(*row) if row else TopicStats()
