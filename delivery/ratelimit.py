"""Token bucket: `rate` requests per second sustained, up to `burst` at once.

A 429 (or a 503) from Pinterest pauses the bucket for its Retry-After and halves the rate it
had; from then on the rate doubles back every `recovery` seconds by itself, up to the
configured rate. Recovery follows the clock, not the successes nor any flag of a process: a
restart, or a node that never saw the 429, recovers on the same schedule. A new configured
rate applies at the next take, above or below the slowed one.
"""

from __future__ import annotations

import asyncio
import time

RATE_RECOVERY = 10.0  # seconds for a rate halved by a 429 to double back (SIGNAL_RATE_RECOVERY)
MAX_DOUBLINGS = 64  # 2**64 times any slowed rate is more than any configured one


class TokenBucket:
    def __init__(self, rate: float, burst: int, clock=time.monotonic, recovery: float = RATE_RECOVERY) -> None:
        self.configured_rate = rate
        self.burst = max(1, burst)
        self.clock = clock
        self.recovery = recovery
        self.tokens = float(self.burst)
        self.updated = clock()
        self.paused_until = float("-inf")
        self.slowed: tuple[float, float] | None = None  # (the rate a 429 left, when): None, never slowed
        self._lock = asyncio.Lock()

    def _rate(self, now: float) -> float:
        """The configured rate, or since a 429 the rate it left, doubled every `recovery` s."""
        if self.slowed is None:
            return self.configured_rate
        slowed, at = self.slowed
        return min(self.configured_rate, slowed * 2 ** min(MAX_DOUBLINGS, max(0.0, now - at) / self.recovery))

    def reconfigure(self, rate: float, burst: int) -> None:
        self.configured_rate = rate
        self.burst = max(1, burst)
        self.tokens = min(self.tokens, self.burst)

    def try_take(self, n: int = 1) -> float:
        """Take `n` tokens and return 0, or return how long until they would be there."""
        now = self.clock()
        if now < self.paused_until:
            return self.paused_until - now
        rate = self.configured_rate if self.slowed is None else self._rate(now)
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * rate)
        self.updated = now
        if self.tokens >= min(n, self.burst):  # a take larger than the burst leaves a debt
            self.tokens -= n
            return 0.0
        return (min(n, self.burst) - self.tokens) / rate

    async def acquire(self) -> None:
        async with self._lock:  # FIFO: waiters are served in order
            while (wait := self.try_take()) > 0:
                await asyncio.sleep(min(wait, 1.0))  # a raised limit applies within a second

    def throttled(self, retry_after: float) -> None:
        """Pause for `retry_after`, and halve the rate unless a pause is already running (the
        other requests in flight at that moment report the same overload)."""
        now = self.clock()
        if now >= self.paused_until:
            self.slowed = (max(1.0, self._rate(now) / 2), now)
        self.paused_until = max(self.paused_until, now + retry_after)
        self.tokens = 0.0
        self.updated = self.paused_until  # nothing accrues during the pause
