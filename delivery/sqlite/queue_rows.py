"""How the SQLite queue keeps events: the events appended in one commit for one topic and
priority share a row (`events` counts them, `payload` holds them as JSON Lines), a leased
event's id packs its row id, its index in the row and the row's size at lease time, and the
reads that find ready rows and lease them (splitting a row when a lease has room for only part
of it). See event_queue.py for why rows are shared."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable

from delivery.queue import Leased, QueueItem, Readiness, Waiting

MAX_EVENTS_PER_ROW = 1000  # fits the 10 bits an item id has for an index and for a size
SEP = b"\n"
IN_LIST = 500  # ids per `IN (...)` query
# Columns copied when part of a row becomes a row of its own.
COPY = ("INSERT INTO queue (topic, priority, created_at, attempts, last_error, payload, events, available_at, "
        "leased) SELECT topic, priority, created_at, attempts + ?, coalesce(?, last_error), ?, ?, "
        "coalesce(?, available_at), ? FROM queue WHERE id=?")


BITS = 10  # for an index in the row, and for the row's size (both < 1024)
LOW = (1 << BITS) - 1


def item_id(row_id: int, index: int, events: int) -> int:
    return row_id << 2 * BITS | index << BITS | events


def unpack(item_id: int) -> tuple[int, int, int]:
    """(row id, index in the row, the row's size at lease time)"""
    return item_id >> 2 * BITS, item_id >> BITS & LOW, item_id & LOW


def pack(items: list[QueueItem], now: float) -> list[tuple]:
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
    """A row being gathered by pack."""

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


def append(clock: Callable[[], float], conn: sqlite3.Connection, items: list[QueueItem]) -> None:
    queued, skipped = _per_topic(items)
    if queued:
        conn.executemany(
            "INSERT INTO queue (topic, priority, payload, created_at, available_at, events) VALUES (?, ?, ?, ?, ?, ?)",
            pack([item for item in items if not item.skipped] if skipped else items, clock()),
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


def ready(conn: sqlite3.Connection, topic: str, now: float, batch_size: int) -> Readiness:
    priority = conn.execute(
        "SELECT 1 FROM queue WHERE topic=? AND priority=1 AND available_at<=? LIMIT 1", (topic, now)
    ).fetchone() is not None
    oldest = conn.execute(
        "SELECT min(available_at) FROM queue WHERE topic=? AND priority=0", (topic,)
    ).fetchone()[0]
    ready_oldest = oldest if oldest is not None and oldest <= now else None
    full = ready_oldest is not None and _full(conn, topic, now, batch_size)
    # One seek per priority: without `priority=?` SQLite read every index entry of the topic.
    later = [conn.execute("SELECT min(available_at) FROM queue WHERE topic=? AND priority=? AND available_at>?",
                          (topic, level, now)).fetchone()[0] for level in (0, 1)]
    next_at = min((at for at in later if at is not None), default=None)
    return Readiness(priority, full, None if ready_oldest is None else now - ready_oldest,
                     None if next_at is None else next_at - now)


def _full(conn: sqlite3.Connection, topic: str, now: float, batch_size: int) -> bool:
    """At least `batch_size` events ready. Every row holds an event or more, so `batch_size`
    ready rows settle it from the index alone; only fewer rows have their events summed (a
    backlog's 1000 rows read from the table took 3 ms of the writer's thread, p99 12 ms, while
    ingestion's commits waited behind it)."""
    rows = conn.execute("SELECT count(*) FROM (SELECT 1 FROM queue WHERE topic=? AND priority=0 AND available_at<=? "
                        "LIMIT ?)", (topic, now, batch_size)).fetchone()[0]
    return rows >= batch_size or conn.execute(
        "SELECT coalesce(sum(events), 0) FROM (SELECT events FROM queue WHERE topic=? AND priority=0 "
        "AND available_at<=? LIMIT ?)", (topic, now, rows)).fetchone()[0] >= batch_size


def waiting(conn: sqlite3.Connection, topics: list[str], before: int | None, limit: int) -> list[Waiting]:
    """A row's events are positioned row id << BITS | index, so a page may end inside a row."""
    if not topics:
        return []
    before = (1 << 62) if before is None else before
    out: list[Waiting] = []
    rows = conn.execute(
        f"SELECT id, topic, payload, created_at, attempts, leased, last_error, events FROM queue WHERE topic IN "
        f"({','.join('?' * len(topics))}) AND id <= ? ORDER BY id DESC", (*topics, before >> BITS))
    for row_id, topic, payload, created_at, attempts, leased, last_error, events in rows:
        parts = [payload] if events == 1 else payload.split(SEP)
        for index in reversed(range(len(parts))):
            position = row_id << BITS | index
            if position < before:
                out.append(Waiting(position, topic, parts[index], created_at, attempts, bool(leased), last_error))
                if len(out) == limit:
                    return out
    return out


def lease(conn: sqlite3.Connection, topic: str, limit: int, now: float, until: float) -> list[Leased]:
    out: list[Leased] = []
    taken: list[tuple[float, int]] = []
    fresh = 0  # events not leased before (the others' earlier lease ran out)
    for priority in (1, 0):  # priority items first, then the oldest of the rest
        if len(out) >= limit:
            break
        oldest = _oldest(conn, topic, priority, now, limit - len(out))
        for row_id, attempts, created_at, leased, events, payload in oldest:
            room = limit - len(out)
            taken.append((until, row_id))
            if events == 1:
                out.append(Leased(item_id(row_id, 0, 1), topic, payload, attempts, created_at))
                fresh += not leased
                continue
            if not leased:
                fresh += min(events, room)
            parts = payload.split(SEP)
            if events > room:  # the rest stays waiting as a row of its own
                conn.execute(COPY, (0, None, SEP.join(parts[room:]), events - room, None, leased, row_id))
                parts = parts[:room]
                conn.execute("UPDATE queue SET payload=?, events=? WHERE id=?", (SEP.join(parts), room, row_id))
            out += [Leased(item_id(row_id, i, len(parts)), topic, part, attempts, created_at)
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


def chunks(values: list) -> list[list]:
    return [values[at:at + IN_LIST] for at in range(0, len(values), IN_LIST)]


