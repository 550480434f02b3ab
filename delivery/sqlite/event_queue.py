"""EventQueue on SQLite. A leased row is hidden by pushing its `available_at` to the lease
expiry, so "ready" is always `available_at <= now` and one index serves every query.

The events appended in one commit for one topic and priority share a row: `events` counts them
and `payload` holds them as JSON Lines. A row per commit instead of per event is most of the
queue's write cost at ingestion and of its delete cost at delivery. A leased event's id packs
its row id, its index in the row and the row's size at lease time (`_item_id`). A lease that has
room for only part of a row splits the row, and so does a settlement that gives a row's events
different fates; a row's events otherwise share attempts and retry time.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Callable

from delivery.erasure import ERASED
from delivery.events import queued_event_id
from delivery.queue import (DeadLetter, Leased, QueueItem, Readiness, Settlement, TopicStats, Waiting, settle_apart,
                            storable)
from delivery.store import StorageError
from delivery.ratelimit import Accounts, Budget, MemoryPacer
from delivery.sqlite.db import Database

MAX_EVENTS_PER_ROW = 1000  # fits the 10 bits an item id has for an index and for a size
SEP = b"\n"
_IN_LIST = 500  # ids per `IN (...)` query


_DEAD_LETTER = "INSERT INTO dead_letters (topic, event_id, payload, created_at, dead_at, attempts, reason) "


class SqliteEventQueue:
    def __init__(self, db: Database, clock: Callable[[], float] | None = None) -> None:
        self.db = db
        self.clock = clock or time.time  # one process: its own clock is the queue's
        self._depth = 0
        self._append = functools.partial(_append, self.clock)  # one function: appends of a turn share a call
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
        return await self.db.run(_ready, topic, self.clock(), batch_size)

    async def lease(self, topic: str, limit: int, lease_seconds: float) -> list[Leased]:
        now = self.clock()
        return await self.db.run(_lease, topic, limit, now, now + lease_seconds)

    async def extend(self, topic: str, ids: list[int], lease_seconds: float) -> None:
        rows = sorted({_unpack(item_id)[0] for item_id in ids})
        until = self.clock() + lease_seconds

        def renew(conn: sqlite3.Connection) -> None:
            for chunk in _chunks(rows):
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
                                      lambda item_id: _unpack(item_id)[0])  # a row is settled whole
        self._depth -= gone

    def _apply(self, settlement: Settlement, plain: bool, topic: str):
        return self.db.run(_settle, topic, settlement, self.clock(), plain)

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
        return await self.db.run(_waiting, topics, before, limit)

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
            ids = [_item_id(row_id, i, events)
                   for row_id, events in conn.execute("SELECT id, events FROM queue WHERE topic=?", (topic,))
                   for i in range(events)]
            return _settle(conn, topic, Settlement(dead=[(i, reason) for i in ids]), now)

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
        erased, after = 0, 0
        while after is not None:
            gone, left, after = await self.db.run(_erase_queued, topic, matches, after, batch)
            erased += gone
            self._depth -= left
        after = 0
        while after is not None:
            gone, after = await self.db.run(_erase_dead, topic, matches, after, batch * 20)
            erased += gone
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
                         (SEP.join(ERASED if hit else part for part, hit in zip(parts, hits)), row_id))
            continue
        left += sum(hits)
        kept = [part for part, hit in zip(parts, hits) if not hit]
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


def _rows(items: list[QueueItem], now: float) -> list[tuple]:
    """The items of one commit with the same topic and priority share rows of up to
    MAX_EVENTS_PER_ROW events (created_at: the earliest of them): under load one row holds
    the events of every request of a commit, so SQLite inserts a row per commit, not per
    request. A single event whose JSON spans lines gets a row of its own. An item's line
    count is taken on trust (counting a payload's newlines cost more than the insert)."""
    rows: list[tuple] = []
    open_rows: dict[tuple[str, int], _Pending] = {}
    for item in items:
        key = (item.topic, item.priority)
        pending = open_rows.get(key)
        # find(), not `in`: bytes.__contains__ first tries the operand as an int and formats
        # the TypeError it then swallows (1.8k instructions, callgrind)
        if item.events == 1 and item.payload.find(SEP) >= 0:
            if pending is not None:  # what came before it goes before it
                open_rows.pop(key).into(rows, key, now)
            rows.append((item.topic, item.priority, item.payload, item.created_at, now, 1))
            continue
        if pending is not None and pending.events + item.events > MAX_EVENTS_PER_ROW:
            pending.into(rows, key, now)
            pending = None
        if pending is None:
            open_rows[key] = _Pending(item)
        else:
            pending.add(item)
    for key, pending in open_rows.items():
        pending.into(rows, key, now)
    return rows


class _Pending:
    """A row being gathered by _rows."""

    __slots__ = ("payloads", "events", "created_at")

    def __init__(self, item: QueueItem) -> None:
        self.payloads, self.events, self.created_at = [item.payload], item.events, item.created_at

    def add(self, item: QueueItem) -> None:
        self.payloads.append(item.payload)
        self.events += item.events
        self.created_at = min(self.created_at, item.created_at)

    def into(self, rows: list[tuple], key: tuple[str, int], now: float) -> None:
        """Rows (topic, priority, payload, created_at, available_at, events), ready from `now`."""
        topic, priority = key
        at = self.created_at
        if self.events <= MAX_EVENTS_PER_ROW:
            rows.append((topic, priority, SEP.join(self.payloads), at, now, self.events))
            return
        lines = SEP.join(self.payloads).split(SEP)  # one item of more events than a row holds
        for start in range(0, len(lines), MAX_EVENTS_PER_ROW):
            part = lines[start:start + MAX_EVENTS_PER_ROW]
            rows.append((topic, priority, SEP.join(part), at, now, len(part)))


def _append(clock: Callable[[], float], conn: sqlite3.Connection, items: list[QueueItem]) -> None:
    queued, skipped = _per_topic(items)
    if queued:
        conn.executemany(
            "INSERT INTO queue (topic, priority, payload, created_at, available_at, events) VALUES (?, ?, ?, ?, ?, ?)",
            _rows([item for item in items if not item.skipped] if skipped else items, clock()),
        )
    conn.executemany(
        "INSERT INTO counters (topic, accepted, queued, skipped_disabled) VALUES (?, ?, ?, ?) ON CONFLICT(topic) "
        "DO UPDATE SET accepted = accepted + excluded.accepted, queued = queued + excluded.queued, "
        "skipped_disabled = skipped_disabled + excluded.skipped_disabled",
        [(topic, n, n, 0) for topic, n in queued.items()] + [(topic, 0, 0, n) for topic, n in skipped.items()],
    )


def _per_topic(items: list[QueueItem]) -> tuple[Counter[str], Counter[str]]:
    """Events per topic: those queued, and those only counted as skipped."""
    queued: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    for item in items:
        (skipped if item.skipped else queued)[item.topic] += item.events
    return queued, skipped


def _ready(conn: sqlite3.Connection, topic: str, now: float, batch_size: int) -> Readiness:
    priority = conn.execute(
        "SELECT 1 FROM queue WHERE topic=? AND priority=1 AND available_at<=? LIMIT 1", (topic, now)
    ).fetchone() is not None
    oldest = conn.execute(
        "SELECT min(available_at) FROM queue WHERE topic=? AND priority=0", (topic,)
    ).fetchone()[0]
    ready_oldest = oldest if oldest is not None and oldest <= now else None
    full = ready_oldest is not None and conn.execute(
        "SELECT coalesce(sum(events), 0) FROM "
        "(SELECT events FROM queue WHERE topic=? AND priority=0 AND available_at<=? LIMIT ?)",
        (topic, now, batch_size),
    ).fetchone()[0] >= batch_size
    # One seek per priority: without `priority=?` SQLite read every index entry of the topic.
    later = [conn.execute("SELECT min(available_at) FROM queue WHERE topic=? AND priority=? AND available_at>?",
                          (topic, level, now)).fetchone()[0] for level in (0, 1)]
    next_at = min((at for at in later if at is not None), default=None)
    return Readiness(priority, full, None if ready_oldest is None else now - ready_oldest,
                     None if next_at is None else next_at - now)


# Columns copied when part of a row becomes a row of its own.
_COPY = ("INSERT INTO queue (topic, priority, created_at, attempts, last_error, payload, events, available_at, leased) "
         "SELECT topic, priority, created_at, attempts + ?, coalesce(?, last_error), ?, ?, coalesce(?, available_at), ? "
         "FROM queue WHERE id=?")


_BITS = 10  # for an index in the row, and for the row's size (both < 1024)
_LOW = (1 << _BITS) - 1


def _item_id(row_id: int, index: int, events: int) -> int:
    return row_id << 2 * _BITS | index << _BITS | events


def _unpack(item_id: int) -> tuple[int, int, int]:
    """(row id, index in the row, the row's size at lease time)"""
    return item_id >> 2 * _BITS, item_id >> _BITS & _LOW, item_id & _LOW


def _waiting(conn: sqlite3.Connection, topics: list[str], before: int | None, limit: int) -> list[Waiting]:
    """A row's events are positioned row id << _BITS | index, so a page may end inside a row."""
    if not topics:
        return []
    before = (1 << 62) if before is None else before
    out: list[Waiting] = []
    rows = conn.execute(
        f"SELECT id, topic, payload, created_at, attempts, leased, last_error, events FROM queue WHERE topic IN "
        f"({','.join('?' * len(topics))}) AND id <= ? ORDER BY id DESC", (*topics, before >> _BITS))
    for row_id, topic, payload, created_at, attempts, leased, last_error, events in rows:
        parts = [payload] if events == 1 else payload.split(SEP)
        for index in reversed(range(len(parts))):
            position = row_id << _BITS | index
            if position < before:
                out.append(Waiting(position, topic, parts[index], created_at, attempts, bool(leased), last_error))
                if len(out) == limit:
                    return out
    return out


def _lease(conn: sqlite3.Connection, topic: str, limit: int, now: float, until: float) -> list[Leased]:
    out: list[Leased] = []
    taken: list[tuple[float, int]] = []
    fresh = 0  # events not leased before (the others' earlier lease ran out)
    for priority in (1, 0):  # priority items first, then the oldest of the rest
        if len(out) >= limit:
            break
        for row_id, attempts, created_at, leased, events, payload in _oldest(conn, topic, priority, now, limit - len(out)):
            room = limit - len(out)
            taken.append((until, row_id))
            if events == 1:
                out.append(Leased(_item_id(row_id, 0, 1), topic, payload, attempts, created_at))
                fresh += not leased
                continue
            if not leased:
                fresh += min(events, room)
            parts = payload.split(SEP)
            if events > room:  # the rest stays waiting as a row of its own
                conn.execute(_COPY, (0, None, SEP.join(parts[room:]), events - room, None, leased, row_id))
                parts = parts[:room]
                conn.execute("UPDATE queue SET payload=?, events=? WHERE id=?", (SEP.join(parts), room, row_id))
            out += [Leased(_item_id(row_id, i, len(parts)), topic, part, attempts, created_at)
                    for i, part in enumerate(parts)]
    conn.executemany("UPDATE queue SET leased=1, available_at=? WHERE id=?", taken)
    if fresh:
        conn.execute("UPDATE counters SET queued = queued - ?, in_flight = in_flight + ? WHERE topic=?",
                     (fresh, fresh, topic))
    return out


def _oldest(conn: sqlite3.Connection, topic: str, priority: int, now: float, wanted: int) -> list[tuple]:
    """The oldest ready rows that hold `wanted` events, with their payloads. Counted first
    without them: a fetchall() of `LIMIT wanted` rows read up to `wanted` rows of up to
    MAX_EVENTS_PER_ROW events each for a batch that needed two (and a cursor read lazily
    still reads one row ahead)."""
    ready = "FROM queue WHERE topic=? AND priority=? AND available_at<=? ORDER BY available_at, id LIMIT ?"
    rows = 0
    for (events,) in conn.execute("SELECT events " + ready, (topic, priority, now, wanted)):
        rows += 1
        wanted -= events
        if wanted <= 0:
            break
    return conn.execute("SELECT id, attempts, created_at, leased, events, payload " + ready,
                        (topic, priority, now, rows)).fetchall()


_DELIVERED, _FILTERED, _LEASED = ("delivered",), ("filtered",), ("leased",)


class _Row:
    """What a settlement says of one row's events, and the row's size when they were leased."""

    __slots__ = ("events", "fates")

    def __init__(self, events: int) -> None:
        self.events = events
        self.fates: dict[int, tuple] = {}

    def whole_fate(self, events: int) -> tuple | None:
        """The fate of every event of a row of `events` when they share one, else None."""
        if events == 1:
            return self.fates.get(0, _LEASED)
        fates = {self.fates.get(index, _LEASED) for index in range(events)}
        return fates.pop() if len(fates) == 1 else None


def _by_fate(s: Settlement, now: float, plain: bool) -> dict[tuple, list[int]]:
    """fate -> the item ids that share it; a fate is a hashable tuple, with a time to be ready
    (`now` + the delay) for a retry or a release, and for a dead letter whether it is `plain`."""
    fates: dict[tuple, list[int]] = {_DELIVERED: s.delivered, _FILTERED: s.filtered}
    for item_id, reason in s.dead:
        fates.setdefault(("dead", storable(reason) if plain else reason, plain), []).append(item_id)
    for item_id, delay, error in s.retry:
        fates.setdefault(("retry", now + delay, storable(error) if plain else error), []).append(item_id)
    for item_id, delay in s.release:
        fates.setdefault(("release", now + delay), []).append(item_id)
    return fates


def _settle(conn: sqlite3.Connection, topic: str, s: Settlement, now: float, plain: bool = False) -> int:
    """Only rows still leased are settled, and counters move by what actually changed, so
    settling the same event twice (after an expired lease) cannot count it twice. Returns how
    many events left the queue.

    Rows whose events share one fate (nearly all) are settled whole, one statement per fate,
    guarded by `leased=1 AND events=<size at lease>`; the rest (different fates, or a row that
    changed since) are looked up and split."""
    moved: Counter[str] = Counter()
    rows: dict[int, _Row] = {}  # rows of several events, and rows a whole-row statement missed
    for fate, ids in _by_fate(s, now, plain).items():
        unpacked = [_unpack(item_id) for item_id in ids]
        singles = [row_id for row_id, _, events in unpacked if events == 1]
        if singles and _settle_whole(conn, topic, fate, 1, singles, now, moved) < len(singles):
            for row_id in singles:  # some changed since: the look-up below sorts them out
                rows.setdefault(row_id, _Row(1)).fates[0] = fate
        for row_id, index, events in unpacked:
            if events != 1:
                rows.setdefault(row_id, _Row(events)).fates[index] = fate
    whole: dict[tuple, list[int]] = defaultdict(list)
    for row_id, row in rows.items():
        fate = row.whole_fate(row.events) if row.events > 1 else None
        if fate is not None and fate is not _LEASED:
            whole[fate, row.events].append(row_id)
    for (fate, events), row_ids in whole.items():
        if _settle_whole(conn, topic, fate, events, row_ids, now, moved) == len(row_ids):
            for row_id in row_ids:
                del rows[row_id]
    if rows:
        _settle_rest(conn, topic, rows, now, moved)

    back = moved["back"]
    left = moved["filtered"] + moved["delivered"] + moved["dead"]
    last_error = storable(s.error()) if plain else s.error()
    conn.execute(
        "UPDATE counters SET filtered = filtered + ?, delivered = delivered + ?, dead_lettered = dead_lettered + ?, "
        "in_flight = in_flight - ?, queued = queued + ?, "
        "last_error = coalesce(?, last_error), last_error_at = coalesce(?, last_error_at) WHERE topic=?",
        (moved["filtered"], moved["delivered"], moved["dead"], left + back, back, last_error,
         now if last_error else None, topic),
    )
    return left


_WHOLE = {
    "delivered": "DELETE FROM queue WHERE id=? AND leased=1 AND events=?",
    "filtered": "DELETE FROM queue WHERE id=? AND leased=1 AND events=?",
    "retry": "UPDATE queue SET leased=0, attempts=attempts+1, available_at=?, last_error=? "
             "WHERE id=? AND leased=1 AND events=?",
    "release": "UPDATE queue SET leased=0, available_at=? WHERE id=? AND leased=1 AND events=?",
}


def _settle_whole(conn, topic: str, fate: tuple, events: int, row_ids: list[int], now: float,
                  moved: Counter) -> int:
    """Rows of `events` events that all share `fate`; returns how many rows were settled."""
    kind, *args = fate
    if kind == "dead":
        if events > 1:
            return 0  # each event needs its own dead letter: done with the rest
        event_id = "NULL" if args[1] else "json_extract(CAST(payload AS TEXT), '$[0]')"  # plain: not read
        conn.executemany(
            _DEAD_LETTER + f"SELECT topic, {event_id}, payload, created_at, ?, "
            "attempts + 1, ? FROM queue WHERE id=? AND leased=1 AND events=1",
            [(now, args[0], row_id) for row_id in row_ids],
        )
        done = conn.executemany("DELETE FROM queue WHERE id=? AND leased=1 AND events=1",
                                [(row_id,) for row_id in row_ids]).rowcount
    else:
        done = conn.executemany(_WHOLE[kind], [(*args, row_id, events) for row_id in row_ids]).rowcount
    moved["back" if kind in ("retry", "release") else kind] += done * events
    return done


def _settle_rest(conn, topic: str, rows: dict[int, _Row], now: float, moved: Counter) -> None:
    """Rows looked up one by one (the rare path): each group of events that share a fate
    goes its own way, and the row is replaced by what is left of it."""
    row_ids = list(rows)
    for at in range(0, len(row_ids), _IN_LIST):
        chunk = row_ids[at:at + _IN_LIST]
        found = conn.execute(
            # By rowid only: with `topic=?` here SQLite would scan the topic's index instead.
            f"SELECT id, events FROM queue WHERE id IN ({','.join('?' * len(chunk))}) AND leased=1",
            chunk,
        ).fetchall()
        for row_id, events in found:
            row = rows[row_id]
            if row.whole_fate(events) is _LEASED:  # not settled this time: stays in flight
                continue
            payload = conn.execute("SELECT payload FROM queue WHERE id=?", (row_id,)).fetchone()[0]
            parts = [payload] if events == 1 else payload.split(SEP)
            groups: dict[tuple, list[bytes]] = {}
            for index, part in enumerate(parts):
                groups.setdefault(row.fates.get(index, _LEASED), []).append(part)
            for fate, group in groups.items():
                _settle_part(conn, topic, row_id, fate, group, now, moved)
            conn.execute("DELETE FROM queue WHERE id=?", (row_id,))


def _settle_part(conn, topic: str, row_id: int, fate: tuple, parts: list[bytes], now: float, moved: Counter) -> None:
    """Some of a row's events, all with one fate (the row itself is deleted afterwards)."""
    kind = fate[0]
    if kind in ("delivered", "filtered"):
        moved[kind] += len(parts)
    elif kind == "dead":
        _dead_letter(conn, topic, row_id, parts, fate[1], now, fate[2])
        moved["dead"] += len(parts)
    elif kind == "leased":  # not settled this time: a row of their own, still in flight
        conn.execute(_COPY, (0, None, SEP.join(parts), len(parts), None, 1, row_id))
    else:  # retry or release: a row of their own, waiting again
        attempts, error = (1, fate[2]) if kind == "retry" else (0, None)
        conn.execute(_COPY, (attempts, error, SEP.join(parts), len(parts), fate[1], 0, row_id))
        moved["back"] += len(parts)


def _dead_letter(conn, topic: str, row_id: int, parts: list[bytes], reason: str, now: float, plain: bool) -> None:
    conn.executemany(
        _DEAD_LETTER + "SELECT topic, ?, ?, created_at, ?, attempts + 1, ? FROM queue WHERE id=?",
        [(None if plain else queued_event_id(part), part, now, reason, row_id) for part in parts],
    )


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


def _chunks(values: list) -> list[list]:
    return [values[at:at + _IN_LIST] for at in range(0, len(values), _IN_LIST)]


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
