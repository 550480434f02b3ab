"""Long work on the event loop that also answers browsers gives way to them every few ms.

The edge, the admin app and delivery share one event loop per process. Building a batch of
1000 events for Pinterest held it for about 10 ms (bench/tail.py: ingestion's p99 went from
9 ms to 78 ms while delivery drained a backlog); the same bound applies to a request of 500
hostile events at the edge.
"""

from __future__ import annotations

import time

import anyio
import anyio.lowlevel

# The longest stretch of work done without letting the event loop serve others. A usual
# request or a small batch finishes well inside one slice and never yields.
WORK_SLICE = 0.004


class Slices:
    """Call `give_way()` between the steps of a long loop."""

    __slots__ = ("ends",)

    def __init__(self) -> None:
        self.ends = time.perf_counter() + WORK_SLICE

    async def give_way(self) -> None:
        if time.perf_counter() >= self.ends:
            await anyio.lowlevel.checkpoint()
            self.ends = time.perf_counter() + WORK_SLICE
