"""The PostgreSQL queue's statements that several of its methods share (event_queue.py): item
ids, the queue's clock in a statement, appends, dead letters and this node's counters."""

from __future__ import annotations

from collections import defaultdict

import asyncpg

from delivery.erasure import ERASED
from delivery.events import queued_event_id
from delivery.queue import QueueItem, storable

SEP = b"\n"
TOKEN_BITS = 31
TOKEN_MASK = (1 << TOKEN_BITS) - 1
# The queue's clock in a statement: the database's (one value for the whole statement, and
# usable by an index, unlike clock_timestamp()), or the injected clock's time given as $1.
NOW = "coalesce($1::float8, extract(epoch FROM statement_timestamp()))"


def item_id(row_id: int, token: int) -> int:
    return row_id << TOKEN_BITS | token


def unpack(ids: list[int]) -> tuple[list[int], list[int]]:
    return [i >> TOKEN_BITS for i in ids], [i & TOKEN_MASK for i in ids]


def row_count(status: str) -> int:
    """The row count of a command's status ("DELETE 3", "UPDATE 2")."""
    return int(status.split()[-1])


async def add_counts(conn: asyncpg.Connection, topic: str, node: str, **deltas: int) -> None:
    """Add `deltas` to this node's counters of `topic`."""
    columns = [k for k, v in deltas.items() if v]
    if not columns:
        return
    await conn.execute(
        f"INSERT INTO counters (topic, node, {', '.join(columns)}) VALUES ($1, $2, "
        f"{', '.join(f'${i + 3}' for i in range(len(columns)))}) ON CONFLICT (topic, node) DO UPDATE SET "
        + ", ".join(f"{c} = counters.{c} + excluded.{c}" for c in columns),
        topic, node, *(deltas[c] for c in columns))


async def append_items(conn: asyncpg.Connection, items: list[QueueItem], node: str, now: float | None,
                  statement_timeout: float) -> None:
    """One statement: the events, and this node's counters (a data-modifying CTE runs whether or
    not it is referenced). Per commit this is most of the cost, and with several workers each
    commit carries fewer requests. The events are ready from the database's now, not from when
    this node says it received them."""
    topics, priorities, times, payloads = [], [], [], []
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # topic -> [accepted, skipped]
    for item in items:
        if item.skipped:
            counts[item.topic][1] += item.events
            continue
        counts[item.topic][0] += item.events
        # One event of JSON that spans lines stays whole; otherwise a line per event.
        parts = [item.payload] if item.events == 1 else item.payload.split(SEP)
        topics += [item.topic] * len(parts)
        priorities += [item.priority] * len(parts)
        times += [item.created_at] * len(parts)
        payloads += parts
    await conn.execute(
        "WITH queued AS (INSERT INTO queue (topic, priority, created_at, available_at, payload) "
        f"  SELECT t, p, c, {NOW}, b FROM unnest($2::text[], $3::int2[], $4::float8[], $5::bytea[]) AS u(t, p, c, b)) "
        "INSERT INTO counters (topic, node, accepted, queued, skipped_disabled) "
        "SELECT t, $6, a, a, s FROM unnest($7::text[], $8::int8[], $9::int8[]) AS n(t, a, s) "
        "ON CONFLICT (topic, node) DO UPDATE SET accepted = counters.accepted + excluded.accepted, "
        "queued = counters.queued + excluded.queued, "
        "skipped_disabled = counters.skipped_disabled + excluded.skipped_disabled",
        now, topics, priorities, times, payloads, node, list(counts), [c[0] for c in counts.values()],
        [c[1] for c in counts.values()], timeout=statement_timeout)


async def dead_letter(conn: asyncpg.Connection, topic: str, dead: list[tuple[int, str]], now: float | None,
                       plain: bool) -> int:
    row_ids, tokens = unpack([item_id for item_id, _ in dead])
    reasons = [storable(reason) if plain else reason for _, reason in dead]
    rows = await conn.fetch(
        "DELETE FROM queue q USING unnest($1::bigint[], $2::bigint[], $3::text[]) AS t(id, token, reason) "
        "WHERE q.id = t.id AND q.lease_token = t.token RETURNING q.payload, q.created_at, q.attempts, t.reason",
        row_ids, tokens, reasons)
    await insert_dead(conn, topic, [(r["payload"], r["created_at"], r["attempts"] + 1, r["reason"]) for r in rows],
                       now, plain)
    return len(rows)


async def insert_dead(conn: asyncpg.Connection, topic: str, rows: list[tuple[bytes, float, int, str]],
                       now: float | None, plain: bool = False) -> None:
    """`plain`: without the event id (one that cannot be stored, say)."""
    if rows:
        await conn.executemany(
            "INSERT INTO dead_letters (topic, event_id, payload, created_at, dead_at, attempts, reason) "
            f"VALUES ($2, $3, $4, $5, {NOW}, $6, $7)",
            [(now, topic, None if plain else queued_event_id(payload), payload, created_at, attempts, reason)
             for payload, created_at, attempts, reason in rows])


async def erase_queued(conn: asyncpg.Connection, topic: str, node: str, matches, after: int,
                       batch: int) -> tuple[int, int, int | None]:
    """(events erased, of which not leased, the id to go on after) for one batch of queued rows.
    A leased event becomes ERASED: delivery filters it, and its lease settles as usual."""
    rows = await conn.fetch("SELECT id, payload, lease_owner FROM queue WHERE topic = $1 AND id > $2 "
                            "ORDER BY id LIMIT $3", topic, after, batch)
    hits = [row for row in rows if matches(row["payload"])]
    idle = [row["id"] for row in hits if row["lease_owner"] is None]
    leased = [row["id"] for row in hits if row["lease_owner"] is not None]
    if idle:
        await conn.execute("DELETE FROM queue WHERE id = ANY($1)", idle)
        await add_counts(conn, topic, node, queued=-len(idle), filtered=len(idle))
    if leased:
        await conn.execute("UPDATE queue SET payload = $2 WHERE id = ANY($1)", leased, ERASED)
    return len(hits), len(idle), (rows[-1]["id"] if len(rows) == batch else None)


async def erase_dead(conn: asyncpg.Connection, topic: str, node: str, matches, after: int,
                     batch: int) -> tuple[int, int | None]:
    """(dead letters erased, the id to go on after) for one batch of dead letters."""
    rows = await conn.fetch("SELECT id, payload FROM dead_letters WHERE topic = $1 AND id > $2 ORDER BY id "
                            "LIMIT $3", topic, after, batch)
    gone = [row["id"] for row in rows if matches(row["payload"])]
    if gone:
        await conn.execute("DELETE FROM dead_letters WHERE id = ANY($1)", gone)
        await add_counts(conn, topic, node, dead_lettered=-len(gone), filtered=len(gone))
    return len(gone), (rows[-1]["id"] if len(rows) == batch else None)
