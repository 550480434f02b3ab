"""When to try again: backoff with jitter, for as long as Pinterest would still take the event.

Pinterest refuses an event whose event_time is more than 7 days old. So a retryable failure
is retried, the waits growing along `delays` and the last one repeating, until the event
nears that age; then it is dead-lettered as too old. Nothing is sent within MARGIN of the
window's end: a clock off by minutes, or a request that takes its whole timeout, never
makes Pinterest refuse an event for its age.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import msgspec

# The waits after attempts 1..7 (SIGNAL_RETRY_DELAYS); the last one repeats.
DEFAULT_DELAYS = (30.0, 120.0, 600.0, 1800.0, 3600.0, 14400.0, 64800.0)
MAX_AGE = 7 * 86400.0  # Pinterest refuses events whose event_time is older
MARGIN = 3600.0  # nothing is sent this close to that age
LAST_CALL = 60.0  # a wait that would reach the window's end ends this long before it instead

TOO_OLD = ("not sent: older than 7 days, or within the hour of it (Pinterest refuses events more than 7 days "
           "old)")


def send_by(event_time: float) -> float:
    """The last moment (Unix seconds) at which the event may still be sent."""
    return event_time + MAX_AGE - MARGIN


def too_old(event_time: float, now: float) -> bool:
    return now >= send_by(event_time)


class RetryPolicy(msgspec.Struct, frozen=True):
    delays: tuple[float, ...] = DEFAULT_DELAYS
    jitter: float = 0.2  # +-20%, so a burst of failures does not come back as one burst

    def delay(self, attempts_made: int, retry_after: float | None = None,
              rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after the `attempts_made`-th failed attempt (1-based); past the end
        of `delays` its last one repeats. `rand` gives [0, 1): the jitter."""
        base = self.delays[min(max(attempts_made, 1), len(self.delays)) - 1]
        wait = base * (1 - self.jitter + 2 * self.jitter * rand())
        return max(wait, retry_after or 0.0)


def next_try(event_time: float, now: float, wait: float) -> float | None:
    """Seconds until the next attempt after a failure at `now`, given the backoff `wait` (from
    RetryPolicy.delay): shortened to fall before the window closes, or None when no time is
    left for one (the event is then dead-lettered as too old)."""
    last = send_by(event_time) - LAST_CALL
    if now >= last:
        return None
    return min(wait, last - now)


def gave_up(attempts_made: int, error: str) -> str:
    """The dead letter's reason for an event whose window closed while it was retried."""
    return (f"gave up after {attempts_made} attempt{'s' * (attempts_made != 1)}: Pinterest's 7-day window for it "
            f"closes before another attempt; the last error: {error}")
