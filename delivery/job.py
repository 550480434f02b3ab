"""One leased batch on its way: what became of each event (the settlement), the records the
debugger shows, and what the batch taught about its integration. Knows nothing of the vendor."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import msgspec

from delivery.alerts import Volume
from delivery.config import Health, Integration, Source
from delivery.events import EdgeEvent, event_decoder, event_view
from delivery.queue import Leased, Settlement
from delivery.retry import RetryPolicy, gave_up, next_try
from delivery.store import NO_JSON, DebugRecord

# Routine outcomes kept in the debugger log per batch (all of them go to a live watcher);
# failures and retries are always kept. Writing every delivered event twice (queue and log)
# halved delivery throughput.
ROUTINE_KEPT_PER_BATCH = 20
ROUTINE = ("delivered", "filtered", "skipped")
UNSHOWABLE = msgspec.Raw(b'"[this value cannot be shown]"')
_encode = msgspec.json.encode


class Job:
    def __init__(self, integration: Integration, source: Source | None, leased: list[Leased], now: float,
                 watched: bool, volume: Volume | None = None) -> None:
        self.integration = integration
        self.source = source
        self.leased = leased
        self.now = now  # when the batch was leased, by delivery's clock
        self.watched = watched  # someone follows the live debugger: publish every record
        self.volume = volume  # counts each event once, when its fate is settled (the silent-drop alert)
        self.settlement = Settlement()
        self.live: list[DebugRecord] = []
        self.kept: list[DebugRecord] = []  # what the debugger log stores
        self._routine: dict[str, int] = {}
        self.reached = False  # the vendor took events: the credentials work
        self.failure: str | None = None  # the batch failed unexpectedly (see `failed`)
        self.health: Health | None = None  # the integration's health after this batch, when the vendor says

    def record(self, item: Leased, ev: EdgeEvent | None, status: str, message: str | None = None,
               name: str | None = None, payload: Any = None, warnings: Sequence[str] = ()) -> None:
        """A debugger record of what became of `item`; `name` and `payload`: what was sent for it."""
        if self.volume is not None and ev is not None and status != "retrying":
            self.volume.add(self.integration.id, ev.type, ev.name, ev.received_at)
        keep = status not in ROUTINE or self._routine.get(status, 0) < ROUTINE_KEPT_PER_BATCH
        if not (keep or self.watched):
            return
        if keep and status in ROUTINE:
            self._routine[status] = self._routine.get(status, 0) + 1
        record = DebugRecord(
            at=self.now,
            source_id=ev.source_id if ev else "",
            event_id=ev.message_id if ev else "",
            event=(ev.name or ev.type) if ev else "",
            status=status,
            integration_id=self.integration.id,
            pinterest_event=name,
            attempts=item.attempts + (0 if status in ("filtered", "skipped") else 1),
            message=message,
            warnings=list(warnings),
            incoming=_shown(event_view, ev) if ev else _shown(msgspec.json.decode, item.payload),
            payload=_shown(lambda e: e, payload) if payload is not None else NO_JSON,
        )
        if self.watched:
            self.live.append(record)
        if keep:
            self.kept.append(record)

    def failed(self, reason: str, policy: RetryPolicy, now: float, rand: Callable[[], float] = random.random) -> None:
        """The batch failed unexpectedly (a bug, a fault nobody foresaw): every event not yet
        decided is retried with backoff, its attempt counted, while its window lasts."""
        decided = self.settlement.ids()
        for item in self.leased:
            if item.id in decided:
                continue
            attempts = item.attempts + 1
            delay = next_try(_event_time(item), now, policy.delay(attempts, rand=rand))
            if delay is None:
                self.settlement.dead.append((item.id, gave_up(attempts, reason)))
                self.record(item, None, "failed", reason)
            else:
                self.settlement.retry.append((item.id, delay, reason))
                self.record(item, None, "retrying", reason)
        self.settlement.last_error = reason
        self.failure = reason


def _event_time(item: Leased) -> float:
    """The queued event's time (Pinterest's window counts from it), else when it was queued."""
    try:
        return event_decoder.decode(item.payload).event_time
    except (msgspec.DecodeError, RecursionError):
        return item.created_at


def _shown(view, value) -> msgspec.Raw:
    """`view(value)` as JSON for the debugger, or a note when it cannot be shown: a record
    must never fail the batch it describes."""
    try:
        return msgspec.Raw(_encode(view(value)))
    except Exception:
        return UNSHOWABLE


class Control(Protocol):
    """What a batch may do to its integration's delivery loop (delivery/worker.py)."""

    async def pause(self, health: Health) -> None:
        """Credentials or account refused: send nothing until they change (or the recheck)."""

    def hold(self, seconds: float) -> None:
        """The vendor is failing: lease no new batch for `seconds`."""

    def throttle(self, seconds: float) -> None:
        """The vendor's rate limit (429): the account's budget pauses for `seconds`, its rate halves."""

    async def acquire(self) -> None:
        """A token of the rate budget for one more request of this batch."""
