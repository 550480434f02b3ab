"""The event queue interface: durable append, lease, settle (ack / nack / dead-letter).

Topics are integration ids. Nothing here is backend-specific: SQLite (one process) and
PostgreSQL (a cluster) implement it, and one test suite runs against both.

The queue owns its clock: when an item is ready, when a lease runs out and when a retry is
due are decided by the backend (SQLite: this process's clock; PostgreSQL: the database's, so
that a node whose clock is wrong still agrees with the others). Callers give durations, never
times: a retry `delay` counts from the settlement, a lease from the lease or its renewal.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import NamedTuple, Protocol

import msgspec

from delivery.ratelimit import Budget
from delivery.store import StorageError

log = logging.getLogger("signal_edge.queue")


class QueueItem(msgspec.Struct):
    """Events for one topic that arrived together (one request): `payload` holds `events` of
    them as JSON Lines, one JSON document per line (a single event may span lines). They are
    leased and settled one by one; a backend may store them together."""

    topic: str
    payload: bytes
    created_at: float
    priority: int = 0  # 1: flushed at once, leased first
    events: int = 1
    skipped: bool = False  # not queued, only counted: the topic's integration is disabled


class Leased(msgspec.Struct):
    id: int  # opaque: only for settling this lease
    topic: str
    payload: bytes
    attempts: int  # attempts already made before this lease
    created_at: float


class Readiness(NamedTuple):
    priority: bool  # a priority item is ready
    full: bool  # at least a full batch is ready
    waited: float | None  # seconds the oldest ready normal item has been ready
    next_in: float | None  # seconds until the next not-yet-ready item becomes ready


class Settlement(msgspec.Struct):
    """What became of leased items, applied atomically."""

    delivered: list[int] = []
    filtered: list[int] = []
    dead: list[tuple[int, str]] = []  # (id, reason)
    retry: list[tuple[int, float, str]] = []  # (id, delay in seconds, error): counts an attempt
    release: list[tuple[int, float]] = []  # (id, delay in seconds): back in the queue, no attempt counted
    last_error: str | None = None  # default: the last retry's or dead letter's reason

    def ids(self) -> set[int]:
        """Every item this settlement decides."""
        return {*self.delivered, *self.filtered, *(entry[0] for entries in (self.dead, self.retry, self.release)
                                                   for entry in entries)}

    def error(self) -> str | None:
        """What the topic's health shows as its last error."""
        return (self.last_error or (self.retry[-1][2] if self.retry else None)
                or (self.dead[-1][1] if self.dead else None))

    def halves(self, unit: Callable[[int], int]) -> tuple[Settlement, Settlement]:
        """This settlement in two, each with the items of half the units (`unit(item id)`: what
        a backend settles as one, a row of SQLite's)."""
        units = sorted({unit(i) for i in self.ids()})
        first = set(units[:len(units) // 2])
        return self._only(lambda i: unit(i) in first), self._only(lambda i: unit(i) not in first)

    def _only(self, keep: Callable[[int], bool]) -> Settlement:
        return Settlement([i for i in self.delivered if keep(i)], [i for i in self.filtered if keep(i)],
                          [e for e in self.dead if keep(e[0])], [e for e in self.retry if keep(e[0])],
                          [e for e in self.release if keep(e[0])], self.last_error)


Apply = Callable[[Settlement, bool], Awaitable[int]]  # (settlement, plain) -> events that left the queue


async def settle_apart(apply: Apply, settlement: Settlement, unit: Callable[[int], int] = lambda i: i) -> int:
    """`settlement` failed for its data (a value the database cannot store), not for the
    database: settle it in halves until the unit responsible is alone, and settle that one
    `plain` (its fates kept, but no event id read from its events and every text made storable).
    Bounded: about two tries per unit for each bad one. Returns the events that left the queue.
    A StorageError ends it: what is left is settled again when its lease runs out."""
    if len({unit(i) for i in settlement.ids()}) == 1:
        log.warning("a settlement could not be stored as it was; its %d event(s) are settled without their event "
                    "ids", len(settlement.ids()))
        return await apply(settlement, True)
    gone = 0
    for part in settlement.halves(unit):
        try:
            gone += await apply(part, False)
        except StorageError:
            raise
        except Exception:
            gone += await settle_apart(apply, part, unit)
    return gone


async def erase_in_batches(queued: Callable[[int], Awaitable[tuple[int, int, int | None]]],
                           dead: Callable[[int], Awaitable[tuple[int, int | None]]]) -> tuple[int, int]:
    """An erasure's two passes, a batch at a time from the first row: the queued events
    (`queued(after)` -> (erased, of which left the queue, the row to go on after or None)), then
    the dead letters (`dead(after)` -> (erased, the row to go on after or None)). Returns
    (events erased, events that left the queue)."""
    erased = left = 0
    after: int | None = 0
    while after is not None:
        gone, out, after = await queued(after)
        erased, left = erased + gone, left + out
    after = 0
    while after is not None:
        gone, after = await dead(after)
        erased += gone
    return erased, left


def storable(text: str | None) -> str | None:
    """`text` as any database stores it: no NUL, no lone surrogate."""
    if text is None:
        return None
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


class DeadLetter(msgspec.Struct):
    id: int
    topic: str
    event_id: str | None
    payload: bytes
    created_at: float
    dead_at: float
    attempts: int
    reason: str


class Waiting(msgspec.Struct):
    """An event still in the queue (waiting, or leased by a request in flight)."""

    position: int  # newest first; a page continues below the last position seen
    topic: str
    payload: bytes
    created_at: float
    attempts: int
    in_flight: bool
    last_error: str | None


class TopicStats(msgspec.Struct):
    accepted: int = 0
    filtered: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    queued: int = 0
    in_flight: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    skipped_disabled: int = 0  # not queued because the integration was disabled


class EventQueue(Protocol):
    async def open(self) -> None:
        """Read what the queue holds (its depth) before the first call."""

    async def append(self, items: list[QueueItem]) -> None:
        """Durable when it returns."""

    async def recover(self) -> int:
        """At start: how many leases have run out (their node died); they are ready for any
        node. SQLite (one process) releases every lease of the previous run."""

    async def ready(self, topic: str, batch_size: int) -> Readiness: ...

    async def lease(self, topic: str, limit: int, lease_seconds: float) -> list[Leased]: ...

    async def extend(self, topic: str, ids: list[int], lease_seconds: float) -> None:
        """Renew the lease of `ids` for `lease_seconds` more (a request is still in flight)."""

    async def settle(self, topic: str, settlement: Settlement) -> None:
        """Apply the settlement at once. When the data of an item cannot be stored (a NUL in an
        id on PostgreSQL, say), the others are still settled and that item is dead-lettered
        without what could not be stored: one bad event never holds its batch-mates back."""

    async def reschedule(self, topic: str) -> int:
        """Make every waiting item of `topic` ready now (after a config change)."""

    async def dead_letters(self, topic: str, after_id: int, limit: int) -> list[DeadLetter]: ...

    async def replay(self, topic: str, ids: list[int] | None, into: str | None = None, since: float = 0.0) -> int:
        """Dead letters back into the queue, ready now (all of the topic's when `ids` is None),
        of `topic` or of the topic `into` (its integration was deleted, say); only those queued
        at or after `since` (Unix seconds: older ones Pinterest would refuse)."""

    async def waiting(self, topics: list[str], before: int | None, limit: int) -> list[Waiting]:
        """Up to `limit` of the events the topics hold, newest first, below position `before`."""

    async def dead_letter_topics(self) -> dict[str, int]:
        """Topics that hold dead letters, and how many."""

    async def stats(self, topic: str, this_node: bool = False) -> TopicStats:
        """The topic's figures for the whole cluster, or this node's share of them."""

    async def discard(self, topic: str, reason: str) -> int:
        """Move every item of `topic` to the dead-letter store (its integration is deleted)."""

    async def erase(self, topic: str, matches) -> int:
        """Delete `topic`'s queued and dead-lettered events for which `matches(event bytes)` is
        true (an erasure, delivery/erasure.py), in bounded batches; an event in flight becomes
        delivery/erasure.ERASED. They count as filtered. Returns how many were erased."""

    async def prune_dead_letters(self, before: float, limit: int = 1000) -> int:
        """Delete up to `limit` dead letters that died before `before` (retention)."""

    def depth(self) -> int:
        """Items waiting or in flight, from memory (cheap: used for backpressure)."""

    def disk_low(self) -> bool:
        """True while the disk that holds the queue has less room than the reserve delivery
        needs to lease, settle and drain; from memory (checked in the background)."""

    def rate_limiter(self, topic: str, budget: Budget) -> RateLimiter:
        """What paces `topic`'s requests to Pinterest, for the whole cluster: its own ceiling
        and its ad account's budget, shared with every other topic of that account."""

    async def close(self) -> None: ...


class RateLimiter(Protocol):
    """Token buckets (delivery/ratelimit.py): `acquire` takes one of the topic's own and one of
    its ad account's; a 429 pauses the account's and halves its rate, which doubles back every
    `budget.recovery` seconds by itself; new limits apply at the next take."""

    budget: Budget

    def reconfigure(self, budget: Budget) -> None: ...
    async def acquire(self, priority: bool = False) -> None: ...
    def throttled(self, retry_after: float) -> None: ...
