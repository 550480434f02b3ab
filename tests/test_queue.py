"""The EventQueue contract, one suite for every backend (SQLite and PostgreSQL): durable
append, leases, settlement and its accounting, dead letters, replay, priorities, recovery
after a dead process, lease renewal, the rate limiter and group commit.

The queue owns its clock (PostgreSQL's is the database's): most tests give it one they move
by hand (`Clock`), so that an hour can pass at once; the others run on the backend's own."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time

import anyio
import pytest

from delivery.queue import QueueItem, Settlement
from delivery.ratelimit import Budget, Turns, account_bucket
from tests.support import most_in_a_window, until


def run(coro):
    return asyncio.run(coro)


class Clock:
    """A queue clock that moves only when told."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def items(n, topic="int_a", priority=0, at=1000.0):
    return [QueueItem(topic, f'["m{i}"]'.encode(), at + i * 0.001, priority) for i in range(n)]


def lines(n):
    return [f'["t{i}"]'.encode() for i in range(n)]


def together(n, topic="int_a", at=1000.0, priority=0):
    """n events of one request: one item, its payload n JSON lines."""
    return [QueueItem(topic, b"\n".join(lines(n)), at, priority, n)]


def test_appended_items_are_durable_when_append_returns(backend):
    async def main():
        async with backend() as (_, _, q):
            await q.open()
            await q.append(items(3))
            assert q.depth() == 3
            async with backend(node="node-b") as (_, _, other):  # another connection sees them at once
                await other.open()
                assert (await other.stats("int_a")).queued == 3
                assert [i.payload for i in await other.lease("int_a", 10, 60)] == [i.payload for i in items(3)]
    run(main())


def test_lease_hides_items_and_settle_accounts_for_each(backend):
    async def main():
        clock = Clock()
        async with backend(clock=clock) as (_, _, q):
            await q.open()
            await q.append(items(5))
            clock.now = 2000.0
            first = await q.lease("int_a", 3, 60)
            assert [i.payload for i in first] == [items(5)[i].payload for i in range(3)]
            second = await q.lease("int_a", 10, 60)
            assert len(second) == 2  # leased items are not handed out twice
            assert await q.lease("int_a", 10, 60) == []
            ids = [i.id for i in first + second]
            await q.settle("int_a", Settlement(delivered=ids[:2], filtered=[ids[2]], dead=[(ids[3], "bad")],
                                               retry=[(ids[4], 100.0, "HTTP 503")]))
            stats = await q.stats("int_a")
            assert (stats.accepted, stats.delivered, stats.filtered, stats.dead_lettered, stats.queued,
                    stats.in_flight) == (5, 2, 1, 1, 1, 0)
            assert stats.last_error == "HTTP 503" and stats.last_error_at == 2000.0
            clock.now = 2050.0
            assert await q.lease("int_a", 10, 60) == []  # not before its retry delay has passed
            clock.now = 2100.0
            again = await q.lease("int_a", 10, 60)
            assert [(i.payload, i.attempts) for i in again] == [(items(5)[4].payload, 1)]
            dead = await q.dead_letters("int_a", 0, 10)
            assert [(d.event_id, d.reason, d.attempts) for d in dead] == [("m3", "bad", 1)]
            assert q.depth() == 1
    run(main())


def test_the_events_of_requests_keep_their_order(backend):
    async def main():
        async with backend() as (_, _, q):
            await q.open()
            pretty = QueueItem("int_a", b'[\n "nl"\n]', 1000.0, 0)  # one event whose JSON spans lines
            await q.append(together(5) + [pretty, QueueItem("int_a", b'["x"]', 1001.0, 0)])
            assert q.depth() == 7
            stats = await q.stats("int_a")
            assert (stats.accepted, stats.queued) == (7, 7)
            leased = await q.lease("int_a", 10, 10_000)
            assert [i.payload for i in leased] == lines(5) + [pretty.payload, b'["x"]']
            assert len({i.id for i in leased}) == 7
            await asyncio.gather(q.append(together(2, at=3000.0)), q.append(together(3, at=2999.0)),
                                 q.append(together(1, at=3001.0, priority=1)))
            later = await q.lease("int_a", 10, 60)
            assert later[0].payload == lines(1)[0]  # the priority event first
            assert sorted(i.payload for i in later[1:]) == sorted(lines(3) + lines(2))
    run(main())


def test_a_request_of_many_events_is_leased_in_order_and_in_parts(backend):
    async def main():
        async with backend() as (_, _, q):
            await q.open()
            await q.append(together(2500))
            assert q.depth() == 2500
            first = await q.lease("int_a", 1000, 60)
            stats = await q.stats("int_a")
            assert (stats.queued, stats.in_flight) == (1500, 1000)
            rest = await q.lease("int_a", 5000, 60)
            assert [i.payload for i in first + rest] == lines(2500)
            await q.settle("int_a", Settlement(delivered=[i.id for i in first + rest]))
            stats = await q.stats("int_a")
            assert (stats.delivered, stats.queued, stats.in_flight) == (2500, 0, 0)
            assert q.depth() == 0
    run(main())


def test_each_fate_counts_once_however_often_it_is_settled(backend):
    async def main():
        clock = Clock(2000.0)
        async with backend(clock=clock) as (_, _, q):
            await q.open()
            await q.append(together(6))
            leased = await q.lease("int_a", 6, 10_000)
            ids = [i.id for i in leased]
            settlement = Settlement(delivered=ids[:2], dead=[(ids[2], "Pinterest: bad")],
                                    retry=[(ids[3], 100.0, "HTTP 503")], release=[(ids[4], 50.0)])  # ids[5]: not yet
            await q.settle("int_a", settlement)
            await q.settle("int_a", settlement)  # settling again changes nothing
            stats = await q.stats("int_a")
            assert (stats.delivered, stats.dead_lettered, stats.queued, stats.in_flight) == (2, 1, 2, 1)
            assert q.depth() == 3
            dead = await q.dead_letters("int_a", 0, 10)
            assert [(d.event_id, d.reason, d.attempts) for d in dead] == [("t2", "Pinterest: bad", 1)]
            clock.now = 2050.0
            released = await q.lease("int_a", 10, 60)
            assert [(i.payload, i.attempts) for i in released] == [(lines(6)[4], 0)]
            clock.now = 2100.0
            retried = await q.lease("int_a", 10, 60)
            assert [(i.payload, i.attempts) for i in retried] == [(lines(6)[3], 1)]
            clock.now = 20_000.0
            assert await q.recover() == 3  # every lease has run out: all three go out again
            again = await q.lease("int_a", 10, 60)
            assert sorted(i.payload for i in again) == sorted(lines(6)[i] for i in (3, 4, 5))
            stats = await q.stats("int_a")
            assert (stats.queued, stats.in_flight) == (0, 3)
    run(main())


def test_discard_dead_letters_every_event(backend):
    async def main():
        async with backend() as (_, _, q):
            await q.open()
            await q.append(together(4) + together(2, at=1001.0))
            await q.lease("int_a", 2, 60)
            assert await q.discard("int_a", "integration deleted") == 6
            stats = await q.stats("int_a")
            assert (stats.dead_lettered, stats.queued, stats.in_flight) == (6, 0, 0)
            assert q.depth() == 0
            dead = await q.dead_letters("int_a", 0, 10)
            assert sorted(d.event_id for d in dead) == sorted(["t0", "t1", "t2", "t3", "t0", "t1"])
            assert await q.dead_letter_topics() == {"int_a": 6}
    run(main())


def test_priority_items_are_leased_first(backend):
    async def main():
        clock = Clock(1000.0)
        async with backend(clock=clock) as (_, _, q):
            await q.open()
            await q.append(items(3, priority=0))
            clock.now = 1001.0
            await q.append([QueueItem("int_a", b'["p"]', 1001.0, 1)])
            ready = await q.ready("int_a", 1000)  # each item is ready from when it was queued
            assert ready.priority is True and ready.waited == 1.0 and ready.next_in is None
            assert not ready.full and (await q.ready("int_a", 3)).full
            leased = await q.lease("int_a", 2, 60)
            assert [i.payload for i in leased] == [b'["p"]', items(1)[0].payload]
    run(main())


def test_a_dead_process_leases_are_taken_over(backend):
    async def main():
        clock = Clock(2000.0)
        async with backend(clock=clock) as (_, _, q):
            await q.open()
            await q.append(items(4))
            await q.lease("int_a", 4, 60)
            assert (await q.stats("int_a")).in_flight == 4
        clock.now = 2061.0
        async with backend(node="node-restarted", clock=clock) as (_, _, q):  # after its lease has run out
            await q.open()
            assert await q.recover() == 4
            assert len(await q.lease("int_a", 10, 60)) == 4
            assert (await q.stats("int_a")).in_flight == 4
    run(main())


def test_a_renewed_lease_is_not_taken_over(backend):
    async def main():
        clock = Clock(2000.0)
        async with backend(clock=clock) as (_, _, q):
            await q.open()
            await q.append(items(3))
            leased = await q.lease("int_a", 3, 60)
            clock.now = 2050.0
            await q.extend("int_a", [i.id for i in leased], 450)
            clock.now = 2100.0
            assert await q.lease("int_a", 10, 60) == []  # the first lease would have run out
            clock.now = 2500.0
            assert len(await q.lease("int_a", 10, 60)) == 3
    run(main())


def test_replay_puts_dead_letters_back_with_their_event_ids(backend):
    async def main():
        async with backend() as (_, _, q):
            await q.open()
            await q.append(items(3))
            leased = await q.lease("int_a", 3, 60)
            await q.settle("int_a", Settlement(dead=[(i.id, "Pinterest: bad") for i in leased]))
            dead = await q.dead_letters("int_a", 0, 10)
            assert await q.replay("int_a", [dead[0].id]) == 1
            assert await q.replay("int_a", None) == 2
            assert (await q.stats("int_a")).dead_lettered == 0
            again = await q.lease("int_a", 10, 60)
            assert sorted(i.payload for i in again) == sorted(i.payload for i in items(3))
    run(main())


def test_replay_leaves_dead_letters_older_than_since(backend):
    async def main():
        async with backend() as (_, _, q):
            await q.open()
            await q.append(items(2, at=1000.0))
            await q.append(items(1, at=5000.0))
            await q.discard("int_a", "Pinterest: bad")
            assert await q.replay("int_a", None, since=4000.0) == 1
            left = await q.dead_letters("int_a", 0, 10)
            assert len(left) == 2 and all(d.created_at < 4000.0 for d in left)
            assert await q.replay("int_a", [d.id for d in left], since=4000.0) == 0
            assert (await q.stats("int_a")).dead_lettered == 2
    run(main())


def test_replay_into_another_topic_moves_the_accounting_along(backend):
    async def main():
        async with backend() as (_, _, q):
            await q.open()
            await q.append(items(3))
            await q.discard("int_a", "integration deleted")
            assert await q.replay("int_a", None, into="int_b") == 3
            old, new = await q.stats("int_a"), await q.stats("int_b")
            assert (old.accepted, old.dead_lettered, old.queued) == (0, 0, 0)
            assert (new.accepted, new.queued) == (3, 3)
            assert await q.dead_letter_topics() == {}
            assert len(await q.lease("int_b", 10, 60)) == 3
    run(main())


def test_skipped_events_are_only_counted(backend):
    async def main():
        async with backend() as (_, _, q):
            await q.open()
            await q.append([QueueItem("int_off", b"", 1000.0, 0, 7, skipped=True)] + items(1))
            off = await q.stats("int_off")
            assert (off.skipped_disabled, off.accepted, off.queued) == (7, 0, 0)
            assert q.depth() == 1 and await q.lease("int_off", 10, 60) == []
    run(main())


def test_concurrent_appends_share_commits(backend):
    async def main():
        async with backend() as (db, _, q):
            await q.open()
            before = db.commits
            await asyncio.gather(*(q.append(items(1, topic=f"t{i}")) for i in range(200)))
            assert q.depth() == 200
            return db.commits - before
    assert run(main()) < 200  # group commit: many appends per transaction


def test_the_rate_limiter_holds_its_rate_after_the_burst(backend):
    """The integration's own ceiling: its burst at once, then its rate (the account's budget
    is far above it here). By the queue's clock: no real time passes."""
    async def main():
        clock = Clock()
        async with backend(clock=clock) as (_, _, q):
            limiter = q.rate_limiter("int_a", Budget("acct_1", 20.0, 5, account_per_minute=1e9))
            burst = [await limiter.take() for _ in range(5)]
            refused = await limiter.take()
            clock.now += refused[0]
            return burst, refused, await limiter.take()
    burst, refused, then = run(main())
    assert burst == [(0.0, 0.0)] * 5
    assert refused[0] == pytest.approx(1 / 20.0) and refused[1] == 0.0  # the account's is not looked at
    assert then == (0.0, 0.0)


def test_every_queued_event_is_listable_newest_first_page_by_page(backend):
    async def main():
        async with backend() as (_, _, q):
            await q.open()
            await q.append(together(5, "int_a", at=1000.0))
            await q.append(items(3, "int_b", at=2000.0))
            await q.append(together(4, "int_a", at=3000.0))
            leased = await q.lease("int_b", 1, 60)
            assert await q.waiting([], None, 10) == []
            seen, before = [], None
            while page := await q.waiting(["int_a"], before, 3):  # pages end inside a request's events
                seen += page
                before = page[-1].position
            assert [w.payload for w in seen] == lines(4)[::-1] + lines(5)[::-1]
            assert [w.created_at for w in seen] == [3000.0] * 4 + [1000.0] * 5
            both = await q.waiting(["int_a", "int_b"], None, 100)
            assert len(both) == 12 and {w.topic for w in both} == {"int_a", "int_b"}
            b = [w for w in both if w.topic == "int_b"]
            assert [w.payload for w in b] == [b'["m2"]', b'["m1"]', b'["m0"]']
            assert [w.in_flight for w in b] == [False, False, True] and leased[0].payload == b'["m0"]'
            await q.settle("int_b", Settlement(retry=[(leased[0].id, 1000.0, "429 Too Many Requests")]))
            again = [w for w in await q.waiting(["int_b"], None, 10) if w.payload == b'["m0"]'][0]
            assert (again.attempts, again.in_flight, again.last_error) == (1, False, "429 Too Many Requests")
    run(main())


def test_erase_takes_matching_events_out_of_shared_rows_in_flight_and_dead(backend):
    from delivery.erasure import ERASED

    async def main():
        clock = Clock(2000.0)
        async with backend(clock=clock) as (_, _, q):
            await q.open()
            erased = {b'["t1"]', b'["t3"]', b'["t6"]', b'["t8"]'}
            matches = erased.__contains__
            await q.append(together(5))  # t0..t4: one row of five on SQLite
            leased = await q.lease("int_a", 10, 60)
            await q.settle("int_a", Settlement(dead=[(leased[1].id, "bad")],  # t1 dead
                                               release=[(i.id, 0.0) for i in leased if i is not leased[1]]))
            await q.append([QueueItem("int_a", b"\n".join(lines(9)[5:]), 2001.0, 0, 4)])  # t5..t8
            clock.now = 3000.0
            in_flight = await q.lease("int_a", 100, 60)
            late = in_flight[-4:]  # t5..t8 stay in flight; t0, t2, t3, t4 go back
            await q.settle("int_a", Settlement(release=[(i.id, 0.0) for i in in_flight[:-4]]))
            assert await q.erase("int_a", matches) == 4  # t3 queued, t6 and t8 in flight, t1 a dead letter
            assert await q.erase("int_b", matches) == 0
            stats = await q.stats("int_a")
            assert (stats.queued, stats.in_flight, stats.dead_lettered, stats.filtered) == (3, 4, 0, 2)
            assert q.depth() == 7
            assert await q.dead_letters("int_a", 0, 10) == []
            # In flight, an erased event keeps its place (the lease's ids stay right) as ERASED...
            waiting = {w.payload for w in await q.waiting(["int_a"], None, 100)}
            assert waiting == {b'["t0"]', b'["t2"]', b'["t4"]', b'["t5"]', b'["t7"]', ERASED}
            clock.now = 3001.0
            await q.settle("int_a", Settlement(filtered=[late[1].id, late[3].id],
                                               delivered=[late[0].id, late[2].id]))
            # ... and the rest is leased without it.
            clock.now = 4000.0
            again = await q.lease("int_a", 100, 60)
            assert [i.payload for i in again] == [b'["t0"]', b'["t2"]', b'["t4"]']
            stats = await q.stats("int_a")
            assert (stats.accepted, stats.delivered, stats.filtered, stats.in_flight) == (9, 2, 4, 3)
    run(main())


def test_dead_letters_expire_oldest_first_and_leave_the_count(backend):
    async def main():
        clock = Clock(1000.0)
        async with backend(clock=clock) as (_, _, q):
            await q.open()
            await q.append(items(5) + items(2, topic="int_b"))
            for topic, at in (("int_a", 1010.0), ("int_b", 5000.0)):
                clock.now = at
                leased = await q.lease(topic, 10, 60)
                await q.settle(topic, Settlement(dead=[(i.id, "bad") for i in leased]))
            assert await q.prune_dead_letters(3000.0, limit=2) == 2  # a bounded batch
            assert await q.prune_dead_letters(3000.0, limit=10) == 3
            assert await q.prune_dead_letters(3000.0, limit=10) == 0
            assert (await q.stats("int_a")).dead_lettered == 0 and (await q.stats("int_b")).dead_lettered == 2
            assert await q.dead_letter_topics() == {"int_b": 2}
    run(main())


def test_waits_count_from_the_settlement_and_the_lease_on_the_backends_clock(backend):
    """Durations, never times, cross the interface: a retry waits its delay from when it was
    settled, a lease runs out its length after it was taken, both on the backend's own clock
    (PostgreSQL's: a node whose clock is wrong still agrees with the others)."""
    async def main():
        async with backend() as (_, _, q):
            await q.open()
            await q.append(items(2))
            first, second = await q.lease("int_a", 2, 30)
            settled = time.monotonic()
            await q.settle("int_a", Settlement(retry=[(first.id, 0.4, "HTTP 503")], release=[(second.id, 0.0)]))
            ready = await q.ready("int_a", 10)
            assert ready.waited is not None and 0 < ready.next_in <= 0.4
            assert [i.payload for i in await q.lease("int_a", 10, 30)] == [second.payload]
            again = await until(lambda: q.lease("int_a", 10, 0.3))
            assert [i.payload for i in again] == [first.payload] and time.monotonic() - settled >= 0.35
            leased = time.monotonic()
            taken_over = await until(lambda: q.lease("int_a", 10, 30))  # its 0.3 s lease runs out
            assert [i.payload for i in taken_over] == [first.payload] and time.monotonic() - leased >= 0.25
    run(main())


def test_an_item_that_cannot_be_stored_never_holds_its_batch_mates(backend):
    """An id holding NUL (PostgreSQL refuses it in text) and an event that is not JSON (SQLite's
    json_extract refuses it), dead-lettered among good events: the good ones are settled, the
    bad ones end as dead letters without the id that could not be stored, nothing stays in flight."""
    async def main():
        async with backend() as (_, _, q):
            await q.open()
            await q.append(items(4))
            await q.append([QueueItem("int_a", b'["bad\\u0000id"]', 1000.0)])
            await q.append([QueueItem("int_a", b"not json at all", 1000.0)])  # a row of its own on SQLite
            await q.append(together(4, at=1001.0))
            leased = await q.lease("int_a", 20, 60)
            assert len(leased) == 10
            by_payload = {i.payload: i.id for i in leased}
            bad, junk = by_payload.pop(b'["bad\\u0000id"]'), by_payload.pop(b"not json at all")
            good = list(by_payload.values())
            await q.settle("int_a", Settlement(delivered=good[:-1], dead=[(bad, "Pinterest: bad id"),
                                                                          (junk, "the queued event could not be read")],
                                               retry=[(good[-1], 60.0, "HTTP 503")]))
            stats = await q.stats("int_a")
            assert (stats.delivered, stats.dead_lettered, stats.queued, stats.in_flight) == (7, 2, 1, 0)
            assert q.depth() == 1
            dead = {d.payload: d for d in await q.dead_letters("int_a", 0, 10)}
            kept = dead[b'["bad\\u0000id"]'].event_id  # SQLite's json_extract stops at the NUL; PostgreSQL keeps none
            assert kept is None or "bad\x00id".startswith(kept)
            assert dead[b'["bad\\u0000id"]'].reason.startswith("Pinterest: bad id")
            assert dead[b"not json at all"].event_id is None
            assert dead[b"not json at all"].reason.startswith("the queued event could not be read")
    run(main())


def test_a_429_halves_the_rate_which_doubles_back_by_the_clock(backend):
    """No success and no process remembers a 429: the account's bucket does. Right after the
    pause its rate is half; two `recovery` periods later it is back. Another integration on the
    account (on PostgreSQL: on another node) waits as long; one on another account does not."""
    cpm = 1200.0
    rate, burst = account_bucket(cpm)

    async def drain(limiter) -> None:
        while await limiter.take() == (0.0, 0.0):
            pass

    async def main():
        clock = Clock()
        async with backend(clock=clock) as (_, _, q):
            a = q.rate_limiter("int_a", Budget("acct_1", 1e6, 10**6, cpm, recovery=10.0))
            await drain(a)  # the account's burst is spent
            a.throttled(3.0)
            while getattr(a, "_tasks", None):  # PostgreSQL writes the pause in the background
                await asyncio.sleep(0.01)
            async with backend(node="node-b", clock=clock) as (_, _, other):
                other = other if backend.kind == "postgres" else q  # one process: one SQLite queue
                b = other.rate_limiter("int_b", Budget("acct_1", 1e6, 10**6, cpm, recovery=10.0))
                elsewhere = other.rate_limiter("int_c", Budget("acct_2", 1e6, 10**6, cpm, recovery=10.0))
                paused = await b.take(), await elsewhere.take()
                clock.now += 3.0
                halved = await b.take()
                clock.now += 20.0  # two doublings: back to the configured rate
                await drain(b)
                recovered = await b.take()
        return paused, halved, recovered
    (paused, elsewhere), halved, recovered = run(main())
    assert paused[1] == pytest.approx(3.0, abs=0.01) and elsewhere == (0.0, 0.0)
    # Nothing accrued during the pause; the halved rate has recovered for its 3 s meanwhile.
    assert halved[1] == pytest.approx(1 / (rate / 2 * 2 ** (3.0 / 10.0)), rel=0.01)
    assert recovered[1] == pytest.approx(1 / rate, rel=0.01)


def test_one_budget_per_ad_account_across_integrations_and_nodes(backend):
    """Ten minutes of backlog, by the queue's clock: two integrations on one ad account (on
    PostgreSQL on two nodes), one with a ceiling of its own below the account's budget. No 60 s
    holds more calls than the budget, every minute holds at least 95 % of it, and the one with
    the lower ceiling keeps to it."""
    cpm, minutes = 240.0, 10  # scaled: the same bucket as 5,000 a minute, fewer round trips

    async def main():
        clock = Clock()
        calls: dict[str, list[float]] = {"int_a": [], "int_b": []}
        async with backend(clock=clock) as (_, _, q), backend(node="node-b", clock=clock) as (_, _, other):
            second = other if backend.kind == "postgres" else q  # one process: one SQLite queue
            limiters = {"int_a": q.rate_limiter("int_a", Budget("acct_1", 100.0, 200, cpm)),
                        "int_b": second.rate_limiter("int_b", Budget("acct_1", 1.0, 1, cpm))}
            due = {topic: clock.now for topic in limiters}
            tried = dict.fromkeys(limiters, 0)  # when each last tried: of two due at once, the other goes
            end = clock.now + minutes * 60
            for turn in itertools.count():
                topic = min(due, key=lambda t: (due[t], tried[t]))
                clock.now = max(clock.now, due[topic])
                if clock.now >= end:
                    break
                tried[topic] = turn
                own, account = await limiters[topic].take()
                if own == account == 0:
                    calls[topic].append(clock.now)
                else:
                    due[topic] = clock.now + max(own, account, 1e-6)
        return calls
    calls = run(main())
    every = sorted(calls["int_a"] + calls["int_b"])
    start = every[0]
    assert most_in_a_window(every, 60.0) <= cpm
    per_minute = [sum(start + m * 60 <= t < start + (m + 1) * 60 for t in every) for m in range(minutes)]
    assert min(per_minute) >= 0.95 * cpm, per_minute
    assert most_in_a_window(calls["int_b"], 60.0) <= 60 + 1  # its own 1/s (burst 1)
    assert len(calls["int_b"]) >= 0.5 * 60 * minutes  # and the other does not starve it


def test_priority_waiters_for_an_account_go_first():
    """This node's waiters for an ad account's budget: in order of arrival, priority ones first."""
    async def main():
        turns, order = Turns(), []

        async def wait(name: str, priority: bool) -> None:
            async with turns.turn(priority):
                order.append(name)

        async with contextlib.AsyncExitStack() as held:
            await held.enter_async_context(turns.turn())  # the budget is being waited for
            async with anyio.create_task_group() as waiters:
                for name, priority in [("page-1", False), ("checkout-1", True), ("page-2", False),
                                       ("checkout-2", True)]:
                    waiters.start_soon(wait, name, priority)
                    await anyio.sleep(0.01)  # arrive in this order
                await held.aclose()
        return order
    assert run(main()) == ["checkout-1", "checkout-2", "page-1", "page-2"]


@pytest.mark.timed
def test_a_changed_limit_applies_to_a_waiting_acquire(backend):
    async def main():
        async with backend() as (_, _, q):
            limiter = q.rate_limiter("int_a", Budget("acct_1", 2.0, 1))
            await limiter.acquire()
            started = time.monotonic()
            waiting = asyncio.ensure_future(asyncio.gather(*(limiter.acquire() for _ in range(8))))
            await asyncio.sleep(0.1)
            limiter.reconfigure(Budget("acct_1", 200.0, 1))
            await waiting
            return time.monotonic() - started
    took = run(main())
    assert took < 2.5, took  # at 2/s the eight would take four seconds
