"""EventQueue on PostgreSQL, shared by every node.

A row holds one event. A lease takes rows with `FOR UPDATE SKIP LOCKED`, so nodes never wait
for each other's batches, and marks them with this node and a token of this lease; the rows'
`available_at` becomes the lease's expiry, renewed by `extend` while the request is in flight.
A lease that runs out (its node died) makes its rows ready for any node again; a settlement
only touches rows that still carry its own token, so an expired lease settled late counts
nothing twice. Counters are kept per node (see migrations.py); a topic's figures are sums.

Why its SQL is not the SQLite queue's (the config store's is written once: delivery/sql/): the
storage models differ. Nodes lease side by side, and `SKIP LOCKED` skips whole rows, so a row
is the unit two nodes can split a backlog by: the SQLite queue's rows of up to 1000 events
would hand one node a commit's whole backlog while the others wait. So a row holds one
event, leases carry a node and a token, counters are per node and time is the database's; none
of it has a use in one process. Two nodes drain 21.3k events/s against 19.6k for one (README,
Benchmarks: bench/cluster.py).

One clock: every time that decides something (an item ready, a lease run out, a retry due, a
bucket's tokens) is the database's, taken in the statement itself (`NOW`). A node whose own
clock is wrong by minutes still agrees with the others on whose lease has run out; it logs the
difference it sees. A test may inject a clock of its own instead (`clock`).

No lock that another node could wait for is held across a round trip: the lease and the rate
bucket are single statements (the buckets a function, migration 6), and a settlement touches
only this lease's rows and this node's counters (the topic's last error is written apart).

Appends made while a commit is running are gathered into the next one (one transaction for
every request of that moment), as the SQLite backend's writer thread does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import defaultdict
from collections.abc import Callable

import asyncpg

from delivery.postgres.bucket import SharedBucket
from delivery.postgres.db import ANSWER_WITHIN, PgDatabase
from delivery.postgres.queue_rows import (
    NOW,
    TOKEN_BITS,
    add_counts,
    append_items,
    dead_letter,
    erase_dead,
    erase_queued,
    insert_dead,
    item_id,
    row_count,
    unpack,
)
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
    storable,
)
from delivery.ratelimit import Accounts, Budget
from delivery.store import StorageError

log = logging.getLogger("signal_edge.queue")
DEPTH_EVERY = 1.0  # seconds between reads of the cluster's queue depth (and of the database's clock)
COMMIT_WINDOW = 0.002  # under load, an append commit starts at most this often
MIN_BUDGET = 0.05  # a commit with less time than this left is not tried: its requests get their 503
SKEW_WARNING = 2.0  # seconds between this node's clock and the database's worth a warning
SKEW_REPEAT = 600.0  # seconds before the same warning is logged again
class PgEventQueue:
    def __init__(self, db: PgDatabase, node: str, clock: Callable[[], float] | None = None) -> None:
        self.db = db
        self.node = node
        self.clock = clock  # None: the database's clock decides
        self.skew: float | None = None  # this node's clock minus the database's, last seen
        self._skew_said: tuple[float, float] | None = None  # (skew, when) last logged
        self._depth = 0
        self._pending: list[tuple[list[QueueItem], asyncio.Future, float]] = []
        self._flusher: asyncio.Task | None = None
        self._last_commit = 0.0
        self._appender = db.dedicated()
        self._refresher: asyncio.Task | None = None
        self._accounts = Accounts()  # this node's waiters per ad account

    def _now(self) -> float | None:
        """$1 of every statement that reads the clock (see NOW)."""
        return self.clock() if self.clock else None

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

    def disk_low(self) -> bool:
        return False  # the database server's disk: PostgreSQL refuses writes itself (503)

    async def _read_depth(self) -> None:
        before = time.time()
        depth, db_now = await self.db.run(lambda c: c.fetchrow(
            "SELECT coalesce(sum(queued + in_flight), 0)::bigint, extract(epoch FROM clock_timestamp())::float8 "
            "FROM counters"), single=True)
        after = time.time()
        self._depth = depth
        self._saw_clock((before + after) / 2 - db_now, after - before)

    def _saw_clock(self, skew: float, round_trip: float) -> None:
        """Log how far this node's clock is from the database's, when it matters: at start, when
        it changes by a second, and every SKEW_REPEAT seconds while it lasts."""
        self.skew = skew
        if abs(skew) <= SKEW_WARNING + round_trip / 2:
            if self._skew_said is not None:
                log.info("this node's clock agrees with PostgreSQL's again (%+.1f s)", skew)
                self._skew_said = None
            return
        said = self._skew_said
        now = time.monotonic()
        if said is None or abs(said[0] - skew) >= 1.0 or now - said[1] >= SKEW_REPEAT:
            log.warning("this node's clock is %.1f s %s PostgreSQL's: leases and retries follow the database's clock, "
                        "but the times of events and logs on this node are off; synchronise its clock (NTP)",
                        abs(skew), "ahead of" if skew > 0 else "behind")
            self._skew_said = (skew, now)

    async def _refresh_depth(self) -> None:
        while True:
            await asyncio.sleep(DEPTH_EVERY)
            with contextlib.suppress(Exception):  # the database is down: the last figure stands until it is back
                await self._read_depth()

    # --- append: group commit ------------------------------------------------------------

    async def append(self, items: list[QueueItem]) -> None:
        if not items:
            return
        future = asyncio.get_running_loop().create_future()
        self._pending.append((items, future, time.monotonic()))
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
            # A request waits ANSWER_WITHIN at most: the commit gets what is left of the oldest
            # one's wait (one that waited behind a commit that hung gets little or nothing).
            budget = ANSWER_WITHIN - (self._last_commit - batch[0][2])
            try:
                if budget < MIN_BUDGET:
                    raise self.db.no_answer(ANSWER_WITHIN)
                await self._appender.run(append_items, [item for items, _, _ in batch for item in items], self.node,
                                         self._now(), budget, wait=budget)
                outcome = None
            except BaseException as exc:
                outcome = exc
            for _, future, _ in batch:
                if not future.done():
                    future.set_result(None) if outcome is None else future.set_exception(outcome)
            if isinstance(outcome, asyncio.CancelledError):
                raise outcome
            outcome = None  # not kept: it refers to this frame through its traceback

    # --- delivery ----------------------------------------------------------------------

    async def recover(self) -> int:
        """Leases belong to their node and run out by themselves: a starting node takes over
        only those already expired (they are ready like any row). Returns how many there are."""
        return await self.db.run(lambda c: c.fetchval(
            f"SELECT count(*) FROM queue WHERE lease_owner IS NOT NULL AND available_at <= {NOW}", self._now()))

    async def ready(self, topic: str, batch_size: int) -> Readiness:
        row = await self.db.run(lambda c: c.fetchrow(
            f"SELECT {NOW}, "
            f"EXISTS (SELECT 1 FROM queue WHERE topic = $2 AND priority = 1 AND available_at <= {NOW}), "
            "(SELECT min(available_at) FROM queue WHERE topic = $2 AND priority = 0), "
            f"(SELECT count(*) FROM (SELECT 1 FROM queue WHERE topic = $2 AND priority = 0 AND available_at <= {NOW} "
            " LIMIT $3) ready), "
            f"(SELECT min(available_at) FROM queue WHERE topic = $2 AND priority = 0 AND available_at > {NOW}), "
            f"(SELECT min(available_at) FROM queue WHERE topic = $2 AND priority = 1 AND available_at > {NOW})",
            self._now(), topic, batch_size), single=True)
        now, priority, oldest, ready_count, later0, later1 = row
        waited = now - oldest if oldest is not None and oldest <= now else None
        later = [at for at in (later0, later1) if at is not None]
        return Readiness(priority, waited is not None and ready_count >= batch_size, waited,
                         min(later) - now if later else None)

    async def lease(self, topic: str, limit: int, lease_seconds: float) -> list[Leased]:
        """One statement: the rows, their lease and this node's counters. A node that freezes
        after sending it holds no lock: the statement commits (or not) on its own."""
        token = secrets.randbits(TOKEN_BITS)
        rows = await self.db.run(lambda c: c.fetch(
            "WITH picked AS (SELECT id, lease_owner AS was, priority, available_at AS ready_at FROM queue "
            f"  WHERE topic = $2 AND available_at <= {NOW} ORDER BY priority DESC, available_at, id LIMIT $3 "
            "  FOR UPDATE SKIP LOCKED), "
            f"leased AS (UPDATE queue q SET available_at = {NOW} + $4, lease_owner = $5, lease_token = $6 "
            "  FROM picked WHERE q.id = picked.id "
            "  RETURNING q.id, q.payload, q.attempts, q.created_at, picked.was, picked.priority, picked.ready_at), "
            "counted AS (INSERT INTO counters (topic, node, queued, in_flight) "
            "  SELECT $2, $5, -count(*), count(*) FROM leased WHERE was IS NULL HAVING count(*) > 0 "
            "  ON CONFLICT (topic, node) DO UPDATE SET queued = counters.queued + excluded.queued, "
            "  in_flight = counters.in_flight + excluded.in_flight) "
            "SELECT id, payload, attempts, created_at, priority, ready_at FROM leased",
            self._now(), topic, limit, lease_seconds, self.node, token), single=True)
        rows = sorted(rows, key=lambda r: (-r["priority"], r["ready_at"], r["id"]))  # RETURNING keeps no order
        return [Leased(item_id(r["id"], token), topic, r["payload"], r["attempts"], r["created_at"]) for r in rows]

    async def extend(self, topic: str, ids: list[int], lease_seconds: float) -> None:
        """Renew the lease of `ids` (a request is still in flight), where it is still this lease."""
        row_ids, tokens = unpack(ids)
        await self.db.run(lambda c: c.execute(
            f"UPDATE queue q SET available_at = {NOW} + $4 FROM unnest($2::bigint[], $3::bigint[]) AS t(id, token) "
            "WHERE q.id = t.id AND q.lease_token = t.token", self._now(), row_ids, tokens, lease_seconds), single=True)

    async def settle(self, topic: str, settlement: Settlement) -> None:
        def apply(part: Settlement, plain: bool):
            return self.db.run(self._settle, topic, part, plain)

        try:
            gone = await apply(settlement, False)
        except asyncpg.PostgresError:  # not the database's fault (db.run says so): an item's data
            gone = await settle_apart(apply, settlement)
        self._depth -= gone
        if error := settlement.error():
            try:  # the topic's row is every node's: written on its own, never held across a round trip
                await self.db.run(lambda c: c.execute(
                    "INSERT INTO topic_errors (topic, last_error, last_error_at) "
                    f"VALUES ($2, $3, {NOW}) ON CONFLICT (topic) "
                    "DO UPDATE SET last_error = excluded.last_error, last_error_at = excluded.last_error_at",
                    self._now(), topic, storable(error)), single=True)
            except StorageError as exc:  # the events are settled; only the health's last error is missed
                log.warning("the last error of integration %s could not be recorded: %s", topic, exc)

    async def _settle(self, conn: asyncpg.Connection, topic: str, s: Settlement, plain: bool) -> int:
        now = self._now()
        moved: dict[str, int] = defaultdict(int)
        for kind, ids in (("delivered", s.delivered), ("filtered", s.filtered)):
            if ids:
                row_ids, tokens = unpack(ids)
                moved[kind] += row_count(await conn.execute(
                    "DELETE FROM queue q USING unnest($1::bigint[], $2::bigint[]) AS t(id, token) "
                    "WHERE q.id = t.id AND q.lease_token = t.token", row_ids, tokens))
        if s.dead:
            moved["dead"] += await dead_letter(conn, topic, s.dead, now, plain)
        for kind, entries in (("retry", s.retry), ("release", s.release)):
            if not entries:
                continue
            row_ids, tokens = unpack([entry[0] for entry in entries])
            delays = [entry[1] for entry in entries]
            if kind == "retry":
                status = await conn.execute(
                    "UPDATE queue q SET lease_owner = NULL, lease_token = NULL, attempts = q.attempts + 1, "
                    f"available_at = {NOW} + t.delay, last_error = t.error "
                    "FROM unnest($2::bigint[], $3::bigint[], $4::float8[], $5::text[]) AS t(id, token, delay, error) "
                    "WHERE q.id = t.id AND q.lease_token = t.token", now, row_ids, tokens, delays,
                    [storable(e[2]) if plain else e[2] for e in s.retry])
            else:
                status = await conn.execute(
                    f"UPDATE queue q SET lease_owner = NULL, lease_token = NULL, available_at = {NOW} + t.delay "
                    "FROM unnest($2::bigint[], $3::bigint[], $4::float8[]) AS t(id, token, delay) "
                    "WHERE q.id = t.id AND q.lease_token = t.token", now, row_ids, tokens, delays)
            moved["back"] += row_count(status)
        left = moved["delivered"] + moved["filtered"] + moved["dead"]
        await add_counts(conn, topic, self.node, filtered=moved["filtered"], delivered=moved["delivered"],
                     dead_lettered=moved["dead"], in_flight=-(left + moved["back"]), queued=moved["back"])
        return left

    async def reschedule(self, topic: str) -> int:
        return row_count(await self.db.run(lambda c: c.execute(
            f"UPDATE queue SET available_at = {NOW} WHERE topic = $2 AND lease_owner IS NULL "
            f"AND available_at > {NOW}", self._now(), topic), single=True))

    async def discard(self, topic: str, reason: str) -> int:
        async def move(conn: asyncpg.Connection) -> int:
            rows = await conn.fetch(
                "DELETE FROM queue WHERE topic = $1 RETURNING payload, created_at, attempts, lease_owner", topic)
            await insert_dead(conn, topic, [(r["payload"], r["created_at"], r["attempts"], reason) for r in rows],
                               self._now())
            leased = sum(1 for r in rows if r["lease_owner"] is not None)
            await add_counts(conn, topic, self.node, dead_lettered=len(rows), queued=-(len(rows) - leased),
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

    async def replay(self, topic: str, ids: list[int] | None, into: str | None = None, since: float = 0.0) -> int:
        into = into or topic

        async def back(conn: asyncpg.Connection) -> int:
            where, args = "topic = $1 AND created_at >= $2", [topic, since]
            if ids is not None:
                where += " AND id = ANY($3::bigint[])"
                args.append(ids)
            rows = await conn.fetch(f"DELETE FROM dead_letters WHERE {where} RETURNING id, payload, created_at", *args)
            rows = sorted(rows, key=lambda r: r["id"])
            await conn.executemany("INSERT INTO queue (topic, priority, created_at, available_at, payload) "
                                   f"VALUES ($2, 1, $3, {NOW}, $4)",
                                   [(self._now(), into, r["created_at"], r["payload"]) for r in rows])
            count = len(rows)
            moved = count if into != topic else 0  # into another topic the events move with their accounting
            await add_counts(conn, topic, self.node, dead_lettered=-count, accepted=-moved, queued=count - moved)
            if moved:
                await add_counts(conn, into, self.node, accepted=moved, queued=moved)
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

    def rate_limiter(self, topic: str, budget: Budget) -> SharedBucket:
        return SharedBucket(self.db, topic, budget, self._accounts, self._now)

    # --- erasure and retention (issue 27) ------------------------------------------------------

    async def erase(self, topic: str, matches, batch: int = 1000) -> int:
        """Delete the events of `topic`, queued or dead-lettered, for which `matches(event bytes)`
        is true, `batch` rows a statement (queue_rows.erase_*). Erased events count as filtered."""
        erased, left = await erase_in_batches(
            lambda after: self.db.run(erase_queued, topic, self.node, matches, after, batch),
            lambda after: self.db.run(erase_dead, topic, self.node, matches, after, batch))
        self._depth -= left
        return erased

    async def prune_dead_letters(self, before: float, limit: int = 1000) -> int:
        """Delete up to `limit` dead letters that died before `before`, the oldest first."""
        async def prune(conn: asyncpg.Connection) -> int:
            rows = await conn.fetch("DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters ORDER BY id "
                                    "LIMIT $1) AND dead_at < $2 RETURNING topic", limit, before)
            for topic in {row["topic"] for row in rows}:
                await add_counts(conn, topic, self.node, dead_lettered=-sum(1 for r in rows if r["topic"] == topic))
            return len(rows)
        return await self.db.run(prune)
