"""EventQueue on PostgreSQL, shared by every node.

A row holds one event. A lease takes rows with `FOR UPDATE SKIP LOCKED`, so nodes never wait
for each other's batches, and marks them with this node and a token of this lease; the rows'
`available_at` becomes the lease's expiry, renewed by `extend` while the request is in flight.
A lease that runs out (its node died) makes its rows ready for any node again; a settlement
only touches rows that still carry its own token, so an expired lease settled late counts
nothing twice. Counters are kept per node (see migrations.py); a topic's figures are sums.

Appends made while a commit is running are gathered into the next one (one transaction for
every request of that moment), as the SQLite backend's writer thread does.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import defaultdict

import asyncpg

from delivery.erasure import ERASED
from delivery.events import queued_event_id
from delivery.postgres.db import PgDatabase
from delivery.queue import DeadLetter, Leased, QueueItem, Readiness, Settlement, TopicStats, Waiting

log = logging.getLogger("signal_edge.queue")
SEP = b"\n"
DEPTH_EVERY = 1.0  # seconds between reads of the cluster's queue depth
COMMIT_WINDOW = 0.002  # under load, an append commit starts at most this often
_TOKEN_BITS = 31
_TOKEN_MASK = (1 << _TOKEN_BITS) - 1


def _item_id(row_id: int, token: int) -> int:
    return row_id << _TOKEN_BITS | token


def _unpack(ids: list[int]) -> tuple[list[int], list[int]]:
    return [i >> _TOKEN_BITS for i in ids], [i & _TOKEN_MASK for i in ids]


class PgEventQueue:
    def __init__(self, db: PgDatabase, node: str) -> None:
        self.db = db
        self.node = node
        self._depth = 0
        self._pending: list[tuple[list[QueueItem], asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None
        self._last_commit = 0.0
        self._appender = db.dedicated()
        self._refresher: asyncio.Task | None = None

    async def open(self) -> None:
        await self._read_depth()
        self._refresher = asyncio.create_task(self._refresh_depth(), name="queue-depth")

    async def close(self) -> None:
        if self._refresher:
            self._refresher.cancel()
        await self._appender.close()

    def depth(self) -> int:
        """The whole cluster's queued and in-flight events, as read within the last second."""
        return self._depth

    async def _read_depth(self) -> None:
        self._depth = await self.db.run(lambda c: c.fetchval(
            "SELECT coalesce(sum(queued + in_flight), 0)::bigint FROM counters"), single=True)

    async def _refresh_depth(self) -> None:
        while True:
            await asyncio.sleep(DEPTH_EVERY)
            try:
                await self._read_depth()
            except Exception:  # the database is down: the last figure stands until it is back
                pass

    # --- append: group commit ------------------------------------------------------------

    async def append(self, items: list[QueueItem]) -> None:
        if not items:
            return
        future = asyncio.get_running_loop().create_future()
        self._pending.append((items, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await future
        self._depth += sum(item.events for item in items if not item.skipped)

    async def _flush(self) -> None:
        while self._pending:
            # Busy: wait out the commit window (PostgreSQL's commit_delay, in the client), so that
            # one commit carries every request of the window. Idle: nothing waits.
            wait = self._last_commit + COMMIT_WINDOW - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_commit = time.monotonic()
            batch, self._pending = self._pending, []
            try:
                await self._appender.run(_append, [item for items, _ in batch for item in items], self.node)
                outcome = None
            except BaseException as exc:
                outcome = exc
            for _, future in batch:
                if not future.done():
                    future.set_result(None) if outcome is None else future.set_exception(outcome)
            if isinstance(outcome, asyncio.CancelledError):
                raise outcome

    # --- delivery ----------------------------------------------------------------------

    async def recover(self, now: float) -> int:
        """Leases belong to their node and run out by themselves: a starting node takes over
        only those already expired (they are ready like any row). Returns how many there are."""
        return await self.db.run(lambda c: c.fetchval(
            "SELECT count(*) FROM queue WHERE lease_owner IS NOT NULL AND available_at <= $1", now))

    async def ready(self, topic: str, now: float, batch_size: int) -> Readiness:
        row = await self.db.run(lambda c: c.fetchrow(
            "SELECT EXISTS (SELECT 1 FROM queue WHERE topic = $1 AND priority = 1 AND available_at <= $2), "
            "(SELECT min(available_at) FROM queue WHERE topic = $1 AND priority = 0), "
            "(SELECT count(*) FROM (SELECT 1 FROM queue WHERE topic = $1 AND priority = 0 AND available_at <= $2 "
            " LIMIT $3) ready), "
            "(SELECT min(available_at) FROM queue WHERE topic = $1 AND priority = 0 AND available_at > $2), "
            "(SELECT min(available_at) FROM queue WHERE topic = $1 AND priority = 1 AND available_at > $2)",
            topic, now, batch_size), single=True)
        priority, oldest, ready_count, later0, later1 = row
        ready_oldest = oldest if oldest is not None and oldest <= now else None
        later = [at for at in (later0, later1) if at is not None]
        return Readiness(priority, ready_oldest is not None and ready_count >= batch_size, ready_oldest,
                         min(later) if later else None)

    async def lease(self, topic: str, limit: int, now: float, lease_seconds: float) -> list[Leased]:
        token = secrets.randbits(_TOKEN_BITS)

        async def take(conn: asyncpg.Connection) -> list[Leased]:
            rows = await conn.fetch(
                "WITH picked AS (SELECT id, lease_owner AS was, priority, available_at AS ready_at FROM queue "
                "  WHERE topic = $1 AND available_at <= $2 ORDER BY priority DESC, available_at, id LIMIT $3 "
                "  FOR UPDATE SKIP LOCKED) "
                "UPDATE queue q SET available_at = $4, lease_owner = $5, lease_token = $6 FROM picked "
                "WHERE q.id = picked.id "
                "RETURNING q.id, q.payload, q.attempts, q.created_at, picked.was, picked.priority, picked.ready_at",
                topic, now, limit, now + lease_seconds, self.node, token)
            fresh = sum(1 for row in rows if row["was"] is None)
            if fresh:
                await _count(conn, topic, self.node, queued=-fresh, in_flight=fresh)
            return rows

        rows = await self.db.run(take)
        rows = sorted(rows, key=lambda r: (-r["priority"], r["ready_at"], r["id"]))  # RETURNING keeps no order
        return [Leased(_item_id(r["id"], token), topic, r["payload"], r["attempts"], r["created_at"]) for r in rows]

    async def extend(self, topic: str, ids: list[int], until: float) -> None:
        """Renew the lease of `ids` (a request is still in flight), where it is still this lease."""
        row_ids, tokens = _unpack(ids)
        await self.db.run(lambda c: c.execute(
            "UPDATE queue q SET available_at = $3 FROM unnest($1::bigint[], $2::bigint[]) AS t(id, token) "
            "WHERE q.id = t.id AND q.lease_token = t.token", row_ids, tokens, until))

    async def settle(self, topic: str, settlement: Settlement, now: float) -> None:
        gone = await self.db.run(self._settle, topic, settlement, now)
        self._depth -= gone

    async def _settle(self, conn: asyncpg.Connection, topic: str, s: Settlement, now: float) -> int:
        moved: dict[str, int] = defaultdict(int)
        for kind, ids in (("delivered", s.delivered), ("filtered", s.filtered)):
            if ids:
                row_ids, tokens = _unpack(ids)
                moved[kind] += _rows(await conn.execute(
                    "DELETE FROM queue q USING unnest($1::bigint[], $2::bigint[]) AS t(id, token) "
                    "WHERE q.id = t.id AND q.lease_token = t.token", row_ids, tokens))
        if s.dead:
            moved["dead"] += await _dead_letter(conn, topic, s.dead, now)
        for kind, entries in (("retry", s.retry), ("release", s.release)):
            if not entries:
                continue
            row_ids, tokens = _unpack([entry[0] for entry in entries])
            at = [entry[1] for entry in entries]
            if kind == "retry":
                status = await conn.execute(
                    "UPDATE queue q SET lease_owner = NULL, lease_token = NULL, attempts = q.attempts + 1, "
                    "available_at = t.at, last_error = t.error "
                    "FROM unnest($1::bigint[], $2::bigint[], $3::float8[], $4::text[]) AS t(id, token, at, error) "
                    "WHERE q.id = t.id AND q.lease_token = t.token", row_ids, tokens, at, [e[2] for e in entries])
            else:
                status = await conn.execute(
                    "UPDATE queue q SET lease_owner = NULL, lease_token = NULL, available_at = t.at "
                    "FROM unnest($1::bigint[], $2::bigint[], $3::float8[]) AS t(id, token, at) "
                    "WHERE q.id = t.id AND q.lease_token = t.token", row_ids, tokens, at)
            moved["back"] += _rows(status)
        left = moved["delivered"] + moved["filtered"] + moved["dead"]
        await _count(conn, topic, self.node, filtered=moved["filtered"], delivered=moved["delivered"],
                     dead_lettered=moved["dead"], in_flight=-(left + moved["back"]), queued=moved["back"])
        last_error = s.last_error or (s.retry[-1][2] if s.retry else None) or (s.dead[-1][1] if s.dead else None)
        if last_error:
            await conn.execute(
                "INSERT INTO topic_errors (topic, last_error, last_error_at) VALUES ($1, $2, $3) ON CONFLICT (topic) "
                "DO UPDATE SET last_error = excluded.last_error, last_error_at = excluded.last_error_at",
                topic, last_error, now)
        return left

    async def reschedule(self, topic: str, at: float) -> int:
        return _rows(await self.db.run(lambda c: c.execute(
            "UPDATE queue SET available_at = $2 WHERE topic = $1 AND lease_owner IS NULL AND available_at > $2",
            topic, at)))

    async def discard(self, topic: str, reason: str, now: float) -> int:
        async def move(conn: asyncpg.Connection) -> int:
            rows = await conn.fetch(
                "DELETE FROM queue WHERE topic = $1 RETURNING payload, created_at, attempts, lease_owner", topic)
            await _insert_dead(conn, topic, [(r["payload"], r["created_at"], r["attempts"], reason) for r in rows],
                               now)
            leased = sum(1 for r in rows if r["lease_owner"] is not None)
            await _count(conn, topic, self.node, dead_lettered=len(rows), queued=-(len(rows) - leased),
                         in_flight=-leased)
            return len(rows)

        count = await self.db.run(move)
        self._depth -= count
        return count

    # --- dead letters and accounting ------------------------------------------------------

    async def dead_letters(self, topic: str, after_id: int, limit: int) -> list[DeadLetter]:
        rows = await self.db.run(lambda c: c.fetch(
            "SELECT id, topic, event_id, payload, created_at, dead_at, attempts, reason FROM dead_letters "
            "WHERE topic = $1 AND id > $2 ORDER BY id LIMIT $3", topic, after_id, limit), single=True)
        return [DeadLetter(*row) for row in rows]

    async def waiting(self, topics: list[str], before: int | None, limit: int) -> list[Waiting]:
        rows = await self.db.run(lambda c: c.fetch(
            "SELECT id, topic, payload, created_at, attempts, lease_owner IS NOT NULL, last_error FROM queue "
            "WHERE topic = ANY($1) AND id < $2 ORDER BY id DESC LIMIT $3", topics, before or 2**63 - 1, limit),
            single=True)
        return [Waiting(*row) for row in rows]

    async def replay(self, topic: str, ids: list[int] | None, now: float, into: str | None = None,
                     since: float = 0.0) -> int:
        into = into or topic

        async def back(conn: asyncpg.Connection) -> int:
            where, args = "topic = $1 AND created_at >= $2", [topic, since]
            if ids is not None:
                where += " AND id = ANY($3::bigint[])"
                args.append(ids)
            rows = await conn.fetch(f"DELETE FROM dead_letters WHERE {where} RETURNING id, payload, created_at", *args)
            rows = sorted(rows, key=lambda r: r["id"])
            await conn.executemany("INSERT INTO queue (topic, priority, created_at, available_at, payload) "
                                   "VALUES ($1, 1, $2, $3, $4)", [(into, r["created_at"], now, r["payload"]) for r in rows])
            count = len(rows)
            moved = count if into != topic else 0  # into another topic the events move with their accounting
            await _count(conn, topic, self.node, dead_lettered=-count, accepted=-moved, queued=count - moved)
            if moved:
                await _count(conn, into, self.node, accepted=moved, queued=moved)
            return count

        if ids is not None and not ids:
            return 0
        count = await self.db.run(back)
        self._depth += count
        return count

    async def dead_letter_topics(self) -> dict[str, int]:
        rows = await self.db.run(lambda c: c.fetch(
            "SELECT topic, sum(dead_lettered)::bigint FROM counters GROUP BY topic HAVING sum(dead_lettered) > 0"))
        return dict(rows)

    async def stats(self, topic: str, this_node: bool = False) -> TopicStats:
        row = await self.db.run(lambda c: c.fetchrow(
            "SELECT coalesce(sum(accepted), 0)::bigint, coalesce(sum(filtered), 0)::bigint, "
            "coalesce(sum(delivered), 0)::bigint, coalesce(sum(dead_lettered), 0)::bigint, "
            "coalesce(sum(queued), 0)::bigint, coalesce(sum(in_flight), 0)::bigint, "
            "(SELECT last_error FROM topic_errors WHERE topic = $1), "
            "(SELECT last_error_at FROM topic_errors WHERE topic = $1), coalesce(sum(skipped_disabled), 0)::bigint "
            "FROM counters WHERE topic = $1 AND ($2::text IS NULL OR node = $2)",
            topic, self.node if this_node else None), single=True)
        return TopicStats(*row)

    def rate_limiter(self, topic: str, rate: float, burst: int) -> "SharedBucket":
        return SharedBucket(self.db, topic, rate, burst)

    # --- erasure and retention (issue 27) ------------------------------------------------------

    async def erase(self, topic: str, matches, batch: int = 1000) -> int:
        """Delete the events of `topic`, queued or dead-lettered, for which `matches(event bytes)`
        is true, `batch` rows a statement. An event leased by a request in flight becomes ERASED
        (delivery filters it; its lease settles as usual). Erased events count as filtered."""
        async def queued(conn: asyncpg.Connection, after: int):
            rows = await conn.fetch("SELECT id, payload, lease_owner FROM queue WHERE topic = $1 AND id > $2 "
                                    "ORDER BY id LIMIT $3", topic, after, batch)
            hits = [row for row in rows if matches(row["payload"])]
            idle = [row["id"] for row in hits if row["lease_owner"] is None]
            leased = [row["id"] for row in hits if row["lease_owner"] is not None]
            if idle:
                await conn.execute("DELETE FROM queue WHERE id = ANY($1)", idle)
                await _count(conn, topic, self.node, queued=-len(idle), filtered=len(idle))
            if leased:
                await conn.execute("UPDATE queue SET payload = $2 WHERE id = ANY($1)", leased, ERASED)
            return len(hits), len(idle), (rows[-1]["id"] if len(rows) == batch else None)

        async def dead(conn: asyncpg.Connection, after: int):
            rows = await conn.fetch("SELECT id, payload FROM dead_letters WHERE topic = $1 AND id > $2 ORDER BY id "
                                    "LIMIT $3", topic, after, batch)
            gone = [row["id"] for row in rows if matches(row["payload"])]
            if gone:
                await conn.execute("DELETE FROM dead_letters WHERE id = ANY($1)", gone)
                await _count(conn, topic, self.node, dead_lettered=-len(gone), filtered=len(gone))
            return len(gone), (rows[-1]["id"] if len(rows) == batch else None)

        erased, after = 0, 0
        while after is not None:
            gone, left, after = await self.db.run(queued, after)
            erased += gone
            self._depth -= left
        after = 0
        while after is not None:
            gone, after = await self.db.run(dead, after)
            erased += gone
        return erased

    async def prune_dead_letters(self, before: float, limit: int = 1000) -> int:
        """Delete up to `limit` dead letters that died before `before`, the oldest first."""
        async def prune(conn: asyncpg.Connection) -> int:
            rows = await conn.fetch("DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters ORDER BY id "
                                    "LIMIT $1) AND dead_at < $2 RETURNING topic", limit, before)
            for topic in {row["topic"] for row in rows}:
                await _count(conn, topic, self.node, dead_lettered=-sum(1 for r in rows if r["topic"] == topic))
            return len(rows)
        return await self.db.run(prune)


def _rows(status: str) -> int:
    """The row count of a command's status ("DELETE 3", "UPDATE 2")."""
    return int(status.split()[-1])


async def _count(conn: asyncpg.Connection, topic: str, node: str, **deltas: int) -> None:
    """Add `deltas` to this node's counters of `topic`."""
    columns = [k for k, v in deltas.items() if v]
    if not columns:
        return
    await conn.execute(
        f"INSERT INTO counters (topic, node, {', '.join(columns)}) VALUES ($1, $2, "
        f"{', '.join(f'${i + 3}' for i in range(len(columns)))}) ON CONFLICT (topic, node) DO UPDATE SET "
        + ", ".join(f"{c} = counters.{c} + excluded.{c}" for c in columns),
        topic, node, *(deltas[c] for c in columns))


async def _append(conn: asyncpg.Connection, items: list[QueueItem], node: str) -> None:
    """One statement: the events, and this node's counters (a data-modifying CTE runs whether or
    not it is referenced). Per commit this is most of the cost, and with several workers each
    commit carries fewer requests."""
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
        "  SELECT t, p, c, c, b FROM unnest($1::text[], $2::int2[], $3::float8[], $4::bytea[]) AS u(t, p, c, b)) "
        "INSERT INTO counters (topic, node, accepted, queued, skipped_disabled) "
        "SELECT t, $5, a, a, s FROM unnest($6::text[], $7::int8[], $8::int8[]) AS n(t, a, s) "
        "ON CONFLICT (topic, node) DO UPDATE SET accepted = counters.accepted + excluded.accepted, "
        "queued = counters.queued + excluded.queued, "
        "skipped_disabled = counters.skipped_disabled + excluded.skipped_disabled",
        topics, priorities, times, payloads, node, list(counts), [c[0] for c in counts.values()],
        [c[1] for c in counts.values()])


async def _dead_letter(conn: asyncpg.Connection, topic: str, dead: list[tuple[int, str]], now: float) -> int:
    row_ids, tokens = _unpack([item_id for item_id, _ in dead])
    reasons = [reason for _, reason in dead]
    rows = await conn.fetch(
        "DELETE FROM queue q USING unnest($1::bigint[], $2::bigint[], $3::text[]) AS t(id, token, reason) "
        "WHERE q.id = t.id AND q.lease_token = t.token RETURNING q.payload, q.created_at, q.attempts, t.reason",
        row_ids, tokens, reasons)
    await _insert_dead(conn, topic, [(r["payload"], r["created_at"], r["attempts"] + 1, r["reason"]) for r in rows],
                       now)
    return len(rows)


async def _insert_dead(conn: asyncpg.Connection, topic: str, rows: list[tuple[bytes, float, int, str]],
                       now: float) -> None:
    if rows:
        await conn.executemany(
            "INSERT INTO dead_letters (topic, event_id, payload, created_at, dead_at, attempts, reason) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [(topic, queued_event_id(payload), payload, created_at, now, attempts, reason)
             for payload, created_at, attempts, reason in rows])


class SharedBucket:
    """One integration's token bucket for the whole cluster: a row of rate_buckets, taken under
    a row lock with the database's clock, so Pinterest's limit holds however many nodes send.
    A 429's pause and the halved rate are shared too."""

    def __init__(self, db: PgDatabase, topic: str, rate: float, burst: int) -> None:
        self.db, self.topic = db, topic
        self.configured_rate, self.burst = rate, max(1, burst)
        self._lock = asyncio.Lock()
        self._slowed = False  # this node saw the rate halved: it may win it back
        self._tasks: set[asyncio.Task] = set()

    def reconfigure(self, rate: float, burst: int) -> None:
        self.configured_rate, self.burst = rate, max(1, burst)

    async def acquire(self) -> None:
        async with self._lock:  # this node's waiters in order; the row orders the nodes
            while (wait := await self.db.run(self._take)) > 0:
                await asyncio.sleep(min(wait, 1.0))

    async def _take(self, conn: asyncpg.Connection) -> float:
        row = await conn.fetchrow(
            "SELECT tokens, updated, rate, paused_until, extract(epoch FROM clock_timestamp())::float8 AS now "
            "FROM rate_buckets WHERE topic = $1 FOR UPDATE", self.topic)
        if row is None:
            await conn.execute(
                "INSERT INTO rate_buckets (topic, tokens, updated, rate) VALUES "
                "($1, $2, extract(epoch FROM clock_timestamp()), $3) ON CONFLICT (topic) DO NOTHING",
                self.topic, float(self.burst - 1), self.configured_rate)
            return 0.0
        now, rate = row["now"], min(row["rate"], self.configured_rate)
        tokens = min(float(self.burst), row["tokens"] + max(0.0, now - row["updated"]) * rate)
        wait = 0.0
        if now < row["paused_until"]:
            wait = row["paused_until"] - now
        elif tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / rate
        await conn.execute("UPDATE rate_buckets SET tokens = $2, updated = $3, rate = $4 WHERE topic = $1",
                           self.topic, tokens, now, rate)
        return wait

    def throttled(self, retry_after: float) -> None:
        self._slowed = True
        self._spawn(self.db.run(lambda c: c.execute(
            "UPDATE rate_buckets SET paused_until = greatest(paused_until, extract(epoch FROM clock_timestamp()) + $2), "
            "rate = greatest(1, rate / 2), tokens = 0, updated = extract(epoch FROM clock_timestamp()) "
            "WHERE topic = $1", self.topic, retry_after)))

    def succeeded(self) -> None:
        if self._slowed:
            self._spawn(self.db.run(lambda c: c.fetchval(
                "UPDATE rate_buckets SET rate = least($2, rate * 1.1) WHERE topic = $1 RETURNING rate = $2",
                self.topic, self.configured_rate)), recovered=True)

    def _spawn(self, coro, recovered: bool = False) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            if t.cancelled() or t.exception() is not None:  # retrieved: a storage fault is retried next time
                return
            if recovered and t.result():
                self._slowed = False

        task.add_done_callback(done)
