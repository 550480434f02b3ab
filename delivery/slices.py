"""Long work on the event loop that also answers browsers gives way to them every few ms.

The edge, the admin app and delivery share one event loop per process. Building a batch of
1000 events for Pinterest held it for about 10 ms (bench/tail.py: ingestion's p99 went from
9 ms to 78 ms while delivery drained a backlog); the same bound applies to a request of 500
hostile events at the edge.

While the edge is taking requests, delivery's slices are shorter and each ends with a pause
rather than a mere turn of the loop: a request waits for the loop several times on its way (its
body, its commit, its answer), each time behind every slice that is ready to run, and a backlog
being drained had left it a fifteenth of the core (bench/tail.py, 8 connections: 328 requests/s
at a p50 of 24 ms while draining, against 4,481 at 1.7 ms while paused).
"""

from __future__ import annotations

from time import perf_counter

from anyio import sleep
from anyio.lowlevel import checkpoint

# The longest stretch of work done without letting the event loop serve others. A usual
# request or a small batch finishes well inside one slice and never yields.
WORK_SLICE = 0.004
# While the edge is busy (a request within the last BUSY_FOR seconds): slices of BUSY_SLICE,
# each followed by a pause of BUSY_PAUSE for the loop's other work.
BUSY_SLICE = 0.0005
BUSY_PAUSE = 0.001
BUSY_FOR = 0.05


class Demand:
    """When the edge last took a request (perf_counter): set by the edge, read by Slices."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at = float("-inf")

    def busy(self, now: float) -> bool:
        return now - self.at < BUSY_FOR


demand = Demand()


class Slices:
    """Call `give_way()` between the steps of a long loop."""

    __slots__ = ("ends",)

    def __init__(self) -> None:
        self.ends = self._next(perf_counter())

    async def give_way(self) -> None:
        now = perf_counter()
        if now < self.ends:
            return
        if demand.busy(now):
            await sleep(BUSY_PAUSE)
        else:
            await checkpoint()
        self.ends = self._next(perf_counter())

    @staticmethod
    def _next(now: float) -> float:
        return now + (BUSY_SLICE if demand.busy(now) else WORK_SLICE)
