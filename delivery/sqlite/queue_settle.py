"""Settling leased events of the SQLite queue (delivery/sqlite/queue_rows.py: how they are
stored). Rows whose events share one fate, nearly all of them, are settled whole; the others are
split, each group of events that share a fate going its own way."""

from __future__ import annotations

import sqlite3
from collections import Counter, defaultdict

from delivery.events import queued_event_id
from delivery.queue import Settlement, storable
from delivery.sqlite.queue_rows import COPY, IN_LIST, SEP, unpack

DEAD_LETTER = "INSERT INTO dead_letters (topic, event_id, payload, created_at, dead_at, attempts, reason) "
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


def settle(conn: sqlite3.Connection, topic: str, s: Settlement, now: float, plain: bool = False) -> int:
    """Only rows still leased are settled, and counters move by what actually changed, so
    settling the same event twice (after an expired lease) cannot count it twice. Returns how
    many events left the queue.

    Rows whose events share one fate (nearly all) are settled whole, one statement per fate,
    guarded by `leased=1 AND events=<size at lease>`; the rest (different fates, or a row that
    changed since) are looked up and split."""
    moved: Counter[str] = Counter()
    rows: dict[int, _Row] = {}  # rows of several events, and rows a whole-row statement missed
    for fate, ids in _by_fate(s, now, plain).items():
        unpacked = [unpack(item_id) for item_id in ids]
        singles = [row_id for row_id, _, events in unpacked if events == 1]
        if singles and _settle_whole(conn, topic, fate, 1, singles, now, moved) < len(singles):
            for row_id in singles:  # some changed since: the look-up below sorts them out
                rows.setdefault(row_id, _Row(1)).fates[0] = fate
        for row_id, index, events in unpacked:
            if events != 1:
                rows.setdefault(row_id, _Row(events)).fates[index] = fate
    whole: dict[tuple, list[int]] = defaultdict(list)
    for row_id, row in rows.items():
        shared = row.whole_fate(row.events) if row.events > 1 else None
        if shared is not None and shared is not _LEASED:
            whole[shared, row.events].append(row_id)
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
            DEAD_LETTER + f"SELECT topic, {event_id}, payload, created_at, ?, "
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
    for at in range(0, len(row_ids), IN_LIST):
        chunk = row_ids[at:at + IN_LIST]
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
        conn.execute(COPY, (0, None, SEP.join(parts), len(parts), None, 1, row_id))
    else:  # retry or release: a row of their own, waiting again
        attempts, error = (1, fate[2]) if kind == "retry" else (0, None)
        conn.execute(COPY, (attempts, error, SEP.join(parts), len(parts), fate[1], 0, row_id))
        moved["back"] += len(parts)


def _dead_letter(conn, topic: str, row_id: int, parts: list[bytes], reason: str, now: float, plain: bool) -> None:
    conn.executemany(
        DEAD_LETTER + "SELECT topic, ?, ?, created_at, ?, attempts + 1, ? FROM queue WHERE id=?",
        [(None if plain else queued_event_id(part), part, now, reason, row_id) for part in parts],
    )


