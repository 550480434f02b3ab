"""Token bucket: `rate` requests per second sustained, up to `burst` at once.

A 429/503 from Pinterest pauses the bucket for its Retry-After and halves the rate;
each later success wins back 10% until the configured rate is reached again.
"""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    def __init__(self, rate: float, burst: int, clock=time.monotonic) -> None:
        self.configured_rate = rate
        self.rate = rate
        self.burst = max(1, burst)
        self.clock = clock
        self.tokens = float(self.burst)
        self.updated = clock()
        self.paused_until = 0.0
        self._lock = asyncio.Lock()

    def reconfigure(self, rate: float, burst: int) -> None:
        self.configured_rate = self.rate = rate
        self.burst = max(1, burst)
        self.tokens = min(self.tokens, self.burst)

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def try_take(self, n: int = 1) -> float:
        """Take `n` tokens and return 0, or return how long until they would be there."""
        now = self.clock()
        if now < self.paused_until:
            return self.paused_until - now
        self._refill(now)
        if self.tokens >= min(n, self.burst):  # a take larger than the burst leaves a debt
            self.tokens -= n
            return 0.0
        return (min(n, self.burst) - self.tokens) / self.rate

    async def acquire(self) -> None:
        async with self._lock:  # FIFO: waiters are served in order
            while (wait := self.try_take()) > 0:
                await asyncio.sleep(wait)

    def throttled(self, retry_after: float) -> None:
        now = self.clock()
        self.paused_until = max(self.paused_until, now + retry_after)
        self.rate = max(1.0, self.rate / 2)
        self._refill(now)
        self.tokens = 0.0

    def succeeded(self) -> None:
        if self.rate < self.configured_rate:
            self.rate = min(self.configured_rate, self.rate * 1.1)
