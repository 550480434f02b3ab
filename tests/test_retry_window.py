"""Retries until Pinterest's 7-day window closes (issue 26), in time warped by the injected clock:
an outage of three days loses nothing, and an event at the end of its window is dead-lettered as
too old, never sent. The edge, the queue and delivery run in this process against the fake
Pinterest; only delivery's clock (and the queue's) jumps ahead, hours at a time."""

from __future__ import annotations

import asyncio
import json
import time

from delivery.pinterest.sandbox import Fault
from delivery.retry import MARGIN, MAX_AGE, TOO_OLD, RetryPolicy
from delivery.service import DeliveryService, DeliverySettings
from delivery.sqlite.event_queue import SqliteEventQueue
from tests.support import edge_in_process, until

HOUR = 3600.0


class Warp:
    """A clock that runs with the real one, plus whatever the test adds."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def time(self) -> float:
        return time.time() + self.ahead


def track(message_id: str, **fields) -> dict:
    return {"type": "track", "event": "Signed Up", "messageId": message_id, **fields}


def test_a_three_day_outage_loses_nothing_and_an_event_at_the_window_s_end_is_not_sent(tmp_path, fake_pinterest):
    fake = fake_pinterest.sandbox
    ids = [f"outage-{i}" for i in range(5)]
    # Within the margin: Pinterest would still take it for half an hour, but a request could reach it late.
    closing = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - MAX_AGE + MARGIN / 2))

    async def main():
        async with edge_in_process(tmp_path) as (services, source, client):
            fake.add_fault(Fault(502, count=0))  # Pinterest is down until the test says otherwise
            batch = [track(i) for i in ids] + [track("closing-1", timestamp=closing)]
            answer = await client.post("/v1/batch", content=json.dumps({"pipeline_key": source.pipeline_key,
                                                                        "batch": batch}))
            assert answer.json()["accepted"] == 6, answer.text
            warp = Warp()
            queue = SqliteEventQueue(services.db, clock=warp.time)  # the queue's clock warps with delivery's
            await queue.open()
            delivery = DeliveryService(services.store, queue, DeliverySettings(
                api_base=fake_pinterest.url, flush_interval=0.05, idle_poll=0.05, request_timeout=5,
                retry=RetryPolicy()), clock=warp)
            await delivery.start()
            try:
                # Three days in steps of two hours, each once the failed events wait for their retry.
                while warp.ahead < 3 * 24 * HOUR:
                    await until(lambda: _waiting_for_retry(queue), timeout=10)
                    warp.ahead += 2 * HOUR
                    delivery.notify("int_inproc")
                failed_requests = len(fake.request_log())
                fake.clear_faults()
                policy = RetryPolicy()
                warp.ahead += policy.delays[-1] * (1 + policy.jitter)  # the longest wait of the backoff, jitter included
                delivery.notify("int_inproc")
                await until(lambda: _settled(queue), timeout=20)
                return failed_requests, await queue.stats("int_inproc"), await queue.dead_letters("int_inproc", 0, 10)
            finally:
                await delivery.stop(1.0)

    failed_requests, stats, dead = asyncio.run(main())
    assert failed_requests > 8  # more attempts than the seed's cap, all within the window
    assert (stats.delivered, stats.dead_lettered) == (5, 1)
    received = [e["event_id"] for e in fake.events(include_test=False)]
    assert sorted(set(received)) == sorted(ids)
    assert not any("closing-1" in r.event_ids for r in fake.request_log())  # never sent, not even failing
    assert [(d.event_id, d.reason) for d in dead] == [("closing-1", TOO_OLD)]


async def _waiting_for_retry(queue: SqliteEventQueue) -> bool:
    """Nothing in flight or ready: what is queued waits for its retry time (or nothing is queued)."""
    stats, ready = await queue.stats("int_inproc"), await queue.ready("int_inproc", 1000)
    return stats.in_flight == 0 and not ready.priority and ready.waited is None


async def _settled(queue: SqliteEventQueue) -> bool:
    stats = await queue.stats("int_inproc")
    return stats.queued == 0 and stats.in_flight == 0
