"""EventQueue on SQLite. A leased row is hidden by pushing its `available_at` to the lease
expiry, so "ready" is always `available_at <= now` and one index serves every query.

The events appended in one commit for one topic and priority share a row: `events` counts them
and `payload` holds them as JSON Lines. A row per commit instead of per event is most of the
queue's write cost at ingestion and of its delete cost at delivery. A leased event's id packs
its row id, its index in the row and the row's size at lease time (`item_id`). A lease that has
room for only part of a row splits the row, and so does a settlement that gives a row's events
different fates; a row's events otherwise share attempts and retry time.

Why its SQL is not the PostgreSQL queue's (the config store's is written once: delivery/sql/):
the storage models differ, for measured reasons. Here one process holds the file and every
lease and settlement runs on its writer thread, so a row may hold many events without anyone
waiting on it; sharing rows took in-process ingestion from 175.6k to 161.1k instructions per
one-event request (callgrind, commit 2cd3427), and rows of 10 events drain at 35.6k events/s
against 32.4k for rows of 1 (README, Benchmarks). The statements are plain SQLite (rowid
look-ups, `IN` lists of up to IN_LIST ids) with no clock but the injected one.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections import Counter
from collections.abc import Callable

from delivery.erasure import ERASED
from delivery.queue import (
    DeadLetter,
    Leased,
    QueueItem,
    Readiness,
    Settlement,
    TopicStats,
    Waiting,
    erase_in_batches,
    settle_apart,
)
from delivery.ratelimit import Accounts, Budget, MemoryPacer
from delivery.sqlite import queue_rows, queue_settle
from delivery.sqlite.db import Database
from delivery.sqlite.queue_rows import SEP
from delivery.store import StorageError

# Events a lease takes while the disk's own free bytes are under the reserve: what one lease and its
# settlement write to the WAL then stays far below it (1000 events of 1 KB filled an 8 MB reserve).
TIGHT_LEASE = 100


class SqliteEventQueue:
    def __init__(self, db: Database, clock: Callable[[], float] | None = None) -> None:
        self.db = db
        self.clock = clock or time.time  # one process: its own clock is the queue's
        self._depth = 0
        self._append = functools.partial(queue_rows.append, self.clock)  # one function: appends of a turn share a call
        self._accounts = Accounts(clock or time.monotonic)  # one process: each ad account's bucket is here

    async def open(self) -> None:
        self._depth = await self.db.run(
            lambda c: c.execute("SELECT coalesce(sum(events), 0) FROM queue").fetchone()[0])

    def depth(self) -> int:
        return self._depth

    async def append(self, items: list[QueueItem]) -> None:
        if not items:
            return
        await self.db.run_merged(self._append, items)
        self._depth += sum(item.events for item in items if not item.skipped)

    def disk_low(self) -> bool:
        return self.db.disk_low

    async def recover(self) -> int:
        def release(conn: sqlite3.Connection) -> int:
            count = conn.execute("SELECT coalesce(sum(events), 0) FROM queue WHERE leased=1").fetchone()[0]
            conn.execute("UPDATE queue SET leased=0, available_at=? WHERE leased=1", (self.clock(),))
            _recount(conn)
            return count

        return await self.db.run(release)

    async def ready(self, topic: str, batch_size: int) -> Readiness:
        return await self.db.run(queue_rows.ready, topic, self.clock(), batch_size)

    async def lease(self, topic: str, limit: int, lease_seconds: float) -> list[Leased]:
        now = self.clock()
        if self.db.disk_tight:  # each lease and settle writes its rows to the WAL, on the disk itself
            limit = min(limit, TIGHT_LEASE)
        return await self.db.run(queue_rows.lease, topic, limit, now, now + lease_seconds)

    async def extend(self, topic: str, ids: list[int], lease_seconds: float) -> None:
        rows = sorted({queue_rows.unpack(item_id)[0] for item_id in ids})
        until = self.clock() + lease_seconds

        def renew(conn: sqlite3.Connection) -> None:
            for chunk in queue_rows.chunks(rows):
                conn.execute(f"UPDATE queue SET available_at=? WHERE leased=1 AND id IN ({','.join('?' * len(chunk))})",
                             (until, *chunk))
        await self.db.run(renew)

    def rate_limiter(self, topic: str, budget: Budget) -> MemoryPacer:
        return MemoryPacer(budget, self._accounts)

    async def close(self) -> None:
        pass

    async def settle(self, topic: str, settlement: Settlement) -> None:
        try:
            gone = await self._apply(settlement, False, topic)
        except StorageError:
            raise
        except Exception:  # an item's data: the others still go their way
            gone = await settle_apart(lambda part, plain: self._apply(part, plain, topic), settlement,
                                      lambda item_id: queue_rows.unpack(item_id)[0])  # a row is settled whole
        self._depth -= gone

    def _apply(self, settlement: Settlement, plain: bool, topic: str):
        return self.db.run(queue_settle.settle, topic, settlement, self.clock(), plain)

    async def reschedule(self, topic: str) -> int:
        at = self.clock()
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

    async def replay(self, topic: str, ids: list[int] | None, into: str | None = None, since: float = 0.0) -> int:
        count = await self.db.run(_replay, topic, ids, self.clock(), into or topic, since)
        self._depth += count
        return count

    async def waiting(self, topics: list[str], before: int | None, limit: int) -> list[Waiting]:
        return await self.db.run(queue_rows.waiting, topics, before, limit)

    async def dead_letter_topics(self) -> dict[str, int]:
        return dict(await self.db.run(lambda c: c.execute(
            "SELECT topic, dead_lettered FROM counters WHERE dead_lettered > 0").fetchall()))

    async def stats(self, topic: str, this_node: bool = False) -> TopicStats:
        return await self.db.run(_stats, topic)  # one node: its figures are the topic's

    async def discard(self, topic: str, reason: str) -> int:
        now = self.clock()

        def move(conn: sqlite3.Connection) -> int:
            conn.execute("UPDATE queue SET leased=1 WHERE topic=?", (topic,))
            _recount(conn, topic)
            ids = [queue_rows.item_id(row_id, i, events)
                   for row_id, events in conn.execute("SELECT id, events FROM queue WHERE topic=?", (topic,))
                   for i in range(events)]
            return queue_settle.settle(conn, topic, Settlement(dead=[(i, reason) for i in ids]), now)

        count = await self.db.run(move)
        self._depth -= count
        return count

    # --- erasure and retention (issue 27) ------------------------------------------------------

    async def erase(self, topic: str, matches, batch: int = 50) -> int:
        """Delete the events of `topic`, queued or dead-lettered, for which `matches(event bytes)`
        is true, `batch` rows a statement (their content is overwritten: secure_delete). A row of
        several events is rewritten without them. A row leased by a request in flight keeps its
        size (the lease's item ids count on it): the events become ERASED, which delivery filters.
        Erased events are counted as filtered. Returns how many were erased."""
        erased, left = await erase_in_batches(
            lambda after: self.db.run(_erase_queued, topic, matches, after, batch),
            lambda after: self.db.run(_erase_dead, topic, matches, after, batch * 20))
        self._depth -= left
        return erased

    async def prune_dead_letters(self, before: float, limit: int = 1000) -> int:
        """Delete up to `limit` dead letters that died before `before`, the oldest first."""
        return await self.db.run(_prune_dead, before, limit)


def _erase_queued(conn: sqlite3.Connection, topic: str, matches, after: int, batch: int):
    rows = conn.execute("SELECT id, events, leased, payload FROM queue WHERE topic=? AND id>? ORDER BY id LIMIT ?",
                        (topic, after, batch)).fetchall()
    erased = left = 0  # erased; of them, those that left the queue now (not in flight)
    for row_id, events, leased, payload in rows:
        parts = [payload] if events == 1 else payload.split(SEP)
        hits = [matches(part) for part in parts]
        if not any(hits):
            continue
        erased += sum(hits)
        if leased:
            conn.execute("UPDATE queue SET payload=? WHERE id=?",
                         (SEP.join(ERASED if hit else part for part, hit in zip(parts, hits, strict=True)), row_id))
            continue
        left += sum(hits)
        kept = [part for part, hit in zip(parts, hits, strict=True) if not hit]
        if kept:
            conn.execute("UPDATE queue SET payload=?, events=? WHERE id=?", (SEP.join(kept), len(kept), row_id))
        else:
            conn.execute("DELETE FROM queue WHERE id=?", (row_id,))
    if left:
        conn.execute("UPDATE counters SET queued = queued - ?, filtered = filtered + ? WHERE topic=?",
                     (left, left, topic))
    return erased, left, (rows[-1][0] if len(rows) == batch else None)


def _erase_dead(conn: sqlite3.Connection, topic: str, matches, after: int, batch: int):
    rows = conn.execute("SELECT id, payload FROM dead_letters WHERE topic=? AND id>? ORDER BY id LIMIT ?",
                        (topic, after, batch)).fetchall()
    gone = [(row_id,) for row_id, payload in rows if matches(payload)]
    if gone:
        conn.executemany("DELETE FROM dead_letters WHERE id=?", gone)
        conn.execute("UPDATE counters SET dead_lettered = dead_lettered - ?, filtered = filtered + ? WHERE topic=?",
                     (len(gone), len(gone), topic))
    return len(gone), (rows[-1][0] if len(rows) == batch else None)


def _prune_dead(conn: sqlite3.Connection, before: float, limit: int) -> int:
    """Dead letters die in id order, so the oldest `limit` rows are the only candidates."""
    rows = conn.execute("DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters ORDER BY id LIMIT ?) "
                        "AND dead_at < ? RETURNING topic", (limit, before)).fetchall()
    for topic, count in Counter(topic for (topic,) in rows).items():
        conn.execute("UPDATE counters SET dead_lettered = dead_lettered - ? WHERE topic=?", (count, topic))
    return len(rows)


def _replay(conn: sqlite3.Connection, topic: str, ids: list[int] | None, now: float, into: str, since: float) -> int:
    where, args = "topic=? AND created_at>=?", [topic, since]
    if ids is not None:
        if not ids:
            return 0
        where += f" AND id IN ({','.join('?' * len(ids))})"
        args += ids
    conn.execute(
        f"INSERT INTO queue (topic, priority, payload, created_at, available_at) "
        f"SELECT ?, 1, payload, created_at, ? FROM dead_letters WHERE {where} ORDER BY id",
        [into, now, *args],
    )
    count = conn.execute(f"DELETE FROM dead_letters WHERE {where}", args).rowcount
    # Into another topic, the events move with their accounting: accepted there, no longer here.
    moved = count if into != topic else 0
    conn.execute("UPDATE counters SET dead_lettered = dead_lettered - ?, accepted = accepted - ?, "
                 "queued = queued + ? WHERE topic=?", (count, moved, count - moved, topic))
    if moved:
        conn.execute("INSERT INTO counters (topic, accepted, queued) VALUES (?, ?, ?) ON CONFLICT(topic) DO UPDATE "
                     "SET accepted = accepted + excluded.accepted, queued = queued + excluded.queued",
                     (into, moved, moved))
    return count


def _recount(conn: sqlite3.Connection, topic: str | None = None) -> None:
    """queued and in_flight from the rows themselves (start-up and admin operations only)."""
    where = "WHERE topic=?" if topic else ""
    conn.execute(
        "UPDATE counters SET "
        "queued = (SELECT coalesce(sum(events), 0) FROM queue WHERE queue.topic = counters.topic AND leased = 0), "
        f"in_flight = (SELECT coalesce(sum(events), 0) FROM queue WHERE queue.topic = counters.topic AND leased = 1) "
        f"{where}",
        (topic,) if topic else (),
    )


def _stats(conn: sqlite3.Connection, topic: str) -> TopicStats:
    row = conn.execute(
        "SELECT accepted, filtered, delivered, dead_lettered, queued, in_flight, last_error, last_error_at, "
        "skipped_disabled FROM counters WHERE topic=?", (topic,),
    ).fetchone()
    return TopicStats(*row) if row else TopicStats()
