"""What each source's traffic did: refused requests and events, counted per reason so the admin
can show what went wrong, and when an event was last accepted. Kept in memory on the request
path (a few dict updates, whatever a flood sends), written to the store every few seconds, and
the refusals totalled per process for /metrics.

How browsers' requests arrived (same-origin, same-site, cross-site) is this process's own view,
never stored: a load balancer gives every node a share of the same pages' traffic."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from enum import StrEnum

from delivery.store import ConfigStore, Refusal, StorageError

log = logging.getLogger("signal_edge.edge")
FLUSH_INTERVAL = 2.0
UNKNOWN_KEY_LOG_INTERVAL = 60.0
MAX_DETAIL = 200  # characters of an origin or an error message kept
MAX_PENDING_EXAMPLES = 10  # per source, between flushes
MAX_KEY_PREFIXES = 5  # distinct unknown-key prefixes named in one log line
KEY_PREFIX = 12  # "dk_live_" and four characters: enough to recognise, not to use
UNKNOWN = "(no source)"  # the metrics label of refusals that match no source


class ArrivalKind(StrEnum):
    """How a source's browser request reached the edge (collector/edge/arrival.py tells them apart)."""

    SAME_ORIGIN = "same-origin"
    SAME_SITE = "same-site"
    CROSS_SITE = "cross-site"


class Arrival:
    """A source's browser requests that arrived one way: how many, the last one's time, the
    page's origin and the host it asked for."""

    __slots__ = ("requests", "at", "origin", "host")

    def __init__(self) -> None:
        self.requests, self.at = 0, 0.0
        self.origin: str | None = None
        self.host: str | None = None


class ActivityLog:
    def __init__(self, store: ConfigStore) -> None:
        self.store = store
        self.totals: Counter[tuple[str, str]] = Counter()  # this process's, for /metrics
        self._counts: Counter[tuple[str, str]] = Counter()  # not yet in the store
        self._examples: dict[str, list[Refusal]] = {}
        self._last_events: dict[str, float] = {}
        self._unknown_keys: Counter[str] = Counter()
        self._unknown_since = time.monotonic()
        self._flushing = asyncio.Lock()
        self.arrivals: dict[tuple[str, ArrivalKind], Arrival] = {}  # (source, same-origin | same-site | cross-site)

    def record(self, source_id: str | None, reason: str, detail: str, count: int = 1) -> None:
        """`count` requests or events of a source refused for `reason`; `detail` names the refused
        origin or the field and what was wrong with it (the error messages carry no field values)."""
        if source_id is None:
            self.totals[(UNKNOWN, reason)] += count
            return
        self.totals[(source_id, reason)] += count
        self._counts[(source_id, reason)] += count
        examples = self._examples.setdefault(source_id, [])
        if len(examples) < MAX_PENDING_EXAMPLES:
            examples.append(Refusal(time.time(), reason, detail[:MAX_DETAIL]))

    def received(self, source_id: str, at: float) -> None:
        self._last_events[source_id] = at

    def arrived(self, source_id: str, kind: ArrivalKind, at: float, origin: str | None, host: str | None) -> None:
        """One accepted browser request of a source, as it arrived (collector/edge/arrival.py)."""
        entry = self.arrivals.get((source_id, kind))
        if entry is None:
            entry = self.arrivals[(source_id, kind)] = Arrival()
        entry.requests += 1
        entry.at, entry.origin, entry.host = at, origin, host

    def unknown_key(self, key: str, reason: str) -> None:
        """A key that names no source: counted, and named by its first characters once a minute."""
        self.record(None, reason, "")
        prefix = key[:KEY_PREFIX]
        if prefix in self._unknown_keys or len(self._unknown_keys) < MAX_KEY_PREFIXES:
            self._unknown_keys[prefix] += 1
        else:
            self._unknown_keys["other"] += 1
        if time.monotonic() - self._unknown_since >= UNKNOWN_KEY_LOG_INTERVAL:
            self.log_unknown_keys()

    def log_unknown_keys(self) -> None:
        if self._unknown_keys:
            named = ", ".join(f"{prefix!r}… ×{n}" for prefix, n in self._unknown_keys.most_common())
            log.warning("refused %d requests with keys that match no source in the last minute (%s): a page may "
                        "carry an old snippet; copy the current one from the source's page",
                        sum(self._unknown_keys.values()), named)
        self._unknown_keys.clear()
        self._unknown_since = time.monotonic()

    async def flush(self) -> None:
        """Into the store; kept for the next try when the store fails (bounded all the same)."""
        async with self._flushing:
            if not self._counts and not self._examples and not self._last_events:
                return
            counts, self._counts = self._counts, Counter()
            examples, self._examples = self._examples, {}
            last_events, self._last_events = self._last_events, {}
            known = self.store.source  # a source deleted meanwhile keeps nothing
            try:
                await self.store.record_activity({k: n for k, n in counts.items() if known(k[0])},
                                                 [(s, r) for s, rs in examples.items() if known(s) for r in rs],
                                                 {s: at for s, at in last_events.items() if known(s)})
            except StorageError as exc:
                log.warning("source activity not saved yet (%s); retrying", exc)
                self._counts.update(counts)
                for source, at in last_events.items():
                    self._last_events.setdefault(source, at)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                await self.flush()
            except Exception:  # a bug here must not end the counting for the rest of the run
                log.exception("saving source activity failed; trying again in %.0fs", FLUSH_INTERVAL)
            if time.monotonic() - self._unknown_since >= UNKNOWN_KEY_LOG_INTERVAL:
                self.log_unknown_keys()
