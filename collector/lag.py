"""The event loop's lag, measured by a timer that should fire on time."""

from __future__ import annotations

import asyncio


class LagProbe:
    """How late the event loop runs a timer: anything that blocks the loop (a slow parse, a
    blocking call) shows here, and in /metrics, before it shows as timeouts."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.last = self.max = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            self.last = max(0.0, loop.time() - due)
            self.max = max(self.max, self.last)
