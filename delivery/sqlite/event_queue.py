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
        await self.db.run(_append, items)
        self._depth += len(items)

    async def recover(self, now: float) -> int:
        return await self.db.run(
            lambda c: c.execute("UPDATE queue SET leased=0, available_at=? WHERE leased=1", (now,)).rowcount
        )

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
    accepted = Counter(i.topic for i in items)
    conn.executemany(
        "INSERT INTO counters (topic, accepted) VALUES (?, ?) "
        "ON CONFLICT(topic) DO UPDATE SET accepted = accepted + excluded.accepted",
        list(accepted.items()),
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
            "SELECT id, topic, payload, attempts, created_at FROM queue "
            "WHERE topic=? AND priority=? AND available_at<=? ORDER BY available_at, id LIMIT ?",
            (topic, priority, now, limit - len(rows)),
        ).fetchall()
    conn.executemany("UPDATE queue SET leased=1, available_at=? WHERE id=?", [(until, r[0]) for r in rows])
    return [Leased(*row) for row in rows]


def _settle(conn: sqlite3.Connection, topic: str, s: Settlement, now: float) -> None:
    if s.dead:
        conn.executemany(
            "INSERT INTO dead_letters (topic, event_id, payload, created_at, dead_at, attempts, reason) "
            "SELECT topic, json_extract(CAST(payload AS TEXT), '$.message_id'), payload, created_at, ?, attempts + 1, ? "
            "FROM queue WHERE id=?",
            [(now, reason, item_id) for item_id, reason in s.dead],
        )
    gone = s.delivered + s.filtered + [item_id for item_id, _ in s.dead]
    if gone:
        conn.executemany("DELETE FROM queue WHERE id=?", [(i,) for i in gone])
    if s.retry:
        conn.executemany(
            "UPDATE queue SET leased=0, attempts=attempts+1, available_at=?, last_error=? WHERE id=?",
            [(at, error, item_id) for item_id, at, error in s.retry],
        )
    if s.release:
        conn.executemany("UPDATE queue SET leased=0, available_at=? WHERE id=?", [(at, i) for i, at in s.release])
    last_error = s.last_error or (s.retry[-1][2] if s.retry else None) or (s.dead[-1][1] if s.dead else None)
    conn.execute(
        "INSERT INTO counters (topic, filtered, delivered, dead_lettered, last_error, last_error_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(topic) DO UPDATE SET "
        "filtered = filtered + excluded.filtered, delivered = delivered + excluded.delivered, "
        "dead_lettered = dead_lettered + excluded.dead_lettered, "
        "last_error = coalesce(excluded.last_error, last_error), "
        "last_error_at = coalesce(excluded.last_error_at, last_error_at)",
        (topic, len(s.filtered), len(s.delivered), len(s.dead), last_error, now if last_error else None),
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
    conn.execute("UPDATE counters SET dead_lettered = dead_lettered - ? WHERE topic=?", (count, topic))
    return count


def _stats(conn: sqlite3.Connection, topic: str) -> TopicStats:
    row = conn.execute(
        "SELECT accepted, filtered, delivered, dead_lettered, last_error, last_error_at FROM counters WHERE topic=?",
        (topic,),
    ).fetchone()
    queued, in_flight = conn.execute(
        "SELECT count(*) - coalesce(sum(leased), 0), coalesce(sum(leased), 0) FROM queue WHERE topic=?", (topic,)
    ).fetchone()
    if row is None:
        return TopicStats(queued=queued, in_flight=in_flight)
    return TopicStats(*row[:4], queued=queued, in_flight=in_flight, last_error=row[4], last_error_at=row[5])
