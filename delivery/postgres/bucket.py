"""The rate buckets of the PostgreSQL backend, shared by every node (event_queue.py's `rate_limiter`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from delivery.postgres.db import PgDatabase
from delivery.ratelimit import Accounts, Budget, Pacer, account_bucket

log = logging.getLogger("signal_edge.queue")


class SharedBucket(Pacer):
    """One integration's token bucket and its ad account's, for the whole cluster: rows of
    rate_buckets (the account's keyed `account:<id>`), taken together by one call of the
    database's function (migration 6) with the database's clock (or the queue's, in a test), so
    Pinterest's limit per ad
    account holds however many nodes and integrations send to it, and no node holds a row
    between round trips. A 429's pause, the halved rate and its recovery (by the clock: see
    delivery/ratelimit.py) are the account row's, so a restart forgets none of them and every
    node recovers on one schedule; each node takes with its configured rates, so a changed
    limit applies at its next take."""

    def __init__(self, db: PgDatabase, topic: str, budget: Budget, accounts: Accounts,
                 now: Callable[[], float | None]) -> None:
        super().__init__(budget, accounts.turns(budget.account))
        self.db, self.topic, self._now = db, topic, now
        self._tasks: set[asyncio.Task] = set()

    async def take(self) -> tuple[float, float]:
        b = self.budget
        rate, burst = account_bucket(b.account_per_minute)
        row = await self.db.run(lambda c: c.fetchrow(
            "SELECT own_wait, account_wait FROM signal_edge_take_call($1, $2, $3, $4, $5, $6, $7, $8)",
            self.topic, float(b.rate), float(max(1, b.burst)), "account:" + b.account, rate, float(burst),
            float(b.recovery), self._now()), single=True)
        return row[0], row[1]

    def throttled(self, retry_after: float) -> None:
        """Pause the account's bucket and halve its rate (unless a pause already runs: the other
        requests in flight then report the same overload). One statement, in the background."""
        rate, _ = account_bucket(self.budget.account_per_minute)
        task = asyncio.ensure_future(self.db.run(lambda c: c.execute(
            "UPDATE rate_buckets b SET "
            "  rate = CASE WHEN c.t < b.paused_until THEN b.rate ELSE greatest(1, least($3, b.rate * "
            "    power(2, least(64, greatest(0, c.t - b.slowed_at) / $4))) / 2) END, "
            "  slowed_at = CASE WHEN c.t < b.paused_until THEN b.slowed_at ELSE c.t END, "
            "  paused_until = greatest(b.paused_until, c.t + $2), tokens = 0, "
            "  updated = greatest(b.paused_until, c.t + $2) "
            "FROM (SELECT coalesce($5::float8, extract(epoch FROM clock_timestamp())) AS t) c WHERE b.topic = $1",
            "account:" + self.budget.account, float(retry_after), rate, float(self.budget.recovery), self._now()),
            single=True))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("integration %s: a 429's pause could not be recorded for the cluster: %s", self.topic,
                        task.exception())
