"""The event queue interface: durable append, lease, settle (ack / nack / dead-letter).

Topics are integration ids. Nothing here is backend-specific: SQLite (one process) and
PostgreSQL (a cluster) implement it, and one test suite runs against both.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import msgspec


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
    oldest: float | None  # when the oldest ready normal item became ready
    next_at: float | None  # the earliest time any not-yet-ready item becomes ready


class Settlement(msgspec.Struct):
    """What became of leased items, applied atomically."""

    delivered: list[int] = []
    filtered: list[int] = []
    dead: list[tuple[int, str]] = []  # (id, reason)
    retry: list[tuple[int, float, str]] = []  # (id, retry at, error): counts an attempt
    release: list[tuple[int, float]] = []  # (id, at): back in the queue, no attempt counted
    last_error: str | None = None  # default: the last retry's or dead letter's reason

    def ids(self) -> set[int]:
        """Every item this settlement decides."""
        return {*self.delivered, *self.filtered, *(entry[0] for entries in (self.dead, self.retry, self.release)
                                                   for entry in entries)}


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
    async def append(self, items: list[QueueItem]) -> None:
        """Durable when it returns."""

    async def recover(self, now: float) -> int:
        """After a restart: every lease of the previous process is released."""

    async def ready(self, topic: str, now: float, batch_size: int) -> Readiness: ...

    async def lease(self, topic: str, limit: int, now: float, lease_seconds: float) -> list[Leased]: ...

    async def extend(self, topic: str, ids: list[int], until: float) -> None:
        """Renew the lease of `ids` until `until` (a request is still in flight)."""

    async def settle(self, topic: str, settlement: Settlement, now: float) -> None: ...

    async def reschedule(self, topic: str, at: float) -> int:
        """Make every waiting item of `topic` available at `at` (after a config change)."""

    async def dead_letters(self, topic: str, after_id: int, limit: int) -> list[DeadLetter]: ...

    async def replay(self, topic: str, ids: list[int] | None, now: float, into: str | None = None,
                     since: float = 0.0) -> int:
        """Dead letters back into the queue (all of the topic's when `ids` is None), of `topic`
        or of the topic `into` (its integration was deleted, say); only those queued at or after
        `since` (older ones Pinterest would refuse)."""

    async def waiting(self, topics: list[str], before: int | None, limit: int) -> list[Waiting]:
        """Up to `limit` of the events the topics hold, newest first, below position `before`."""

    async def dead_letter_topics(self) -> dict[str, int]:
        """Topics that hold dead letters, and how many."""

    async def stats(self, topic: str, this_node: bool = False) -> TopicStats:
        """The topic's figures for the whole cluster, or this node's share of them."""

    async def discard(self, topic: str, reason: str, now: float) -> int:
        """Move every item of `topic` to the dead-letter store (its integration is deleted)."""

    async def erase(self, topic: str, matches) -> int:
        """Delete `topic`'s queued and dead-lettered events for which `matches(event bytes)` is
        true (an erasure, delivery/erasure.py), in bounded batches; an event in flight becomes
        delivery/erasure.ERASED. They count as filtered. Returns how many were erased."""

    async def prune_dead_letters(self, before: float, limit: int = 1000) -> int:
        """Delete up to `limit` dead letters that died before `before` (retention)."""

    def depth(self) -> int:
        """Items waiting or in flight, from memory (cheap: used for backpressure)."""

    def rate_limiter(self, topic: str, rate: float, burst: int) -> RateLimiter:
        """The token bucket that paces `topic`'s requests to Pinterest (for the whole cluster)."""

    async def close(self) -> None: ...


class RateLimiter(Protocol):
    configured_rate: float
    burst: int

    def reconfigure(self, rate: float, burst: int) -> None: ...
    async def acquire(self) -> None: ...
    def throttled(self, retry_after: float) -> None: ...
    def succeeded(self) -> None: ...
