"""When to try again: exponential backoff with jitter, capped in attempts."""

from __future__ import annotations

import random
from collections.abc import Callable

import msgspec

# Eight attempts spread over about 24 hours: waits after attempts 1..7.
DEFAULT_DELAYS = (30.0, 120.0, 600.0, 1800.0, 3600.0, 14400.0, 64800.0)


class RetryPolicy(msgspec.Struct, frozen=True):
    delays: tuple[float, ...] = DEFAULT_DELAYS
    jitter: float = 0.2  # +-20%, so a burst of failures does not come back as one burst

    @property
    def max_attempts(self) -> int:
        return len(self.delays) + 1

    def exhausted(self, attempts_made: int) -> bool:
        return attempts_made >= self.max_attempts

    def delay(self, attempts_made: int, retry_after: float | None = None,
              rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after the `attempts_made`-th failed attempt (1-based). `rand` gives
        [0, 1): the jitter."""
        base = self.delays[min(attempts_made, len(self.delays)) - 1]
        wait = base * (1 - self.jitter + 2 * self.jitter * rand())
        return max(wait, retry_after or 0.0)
