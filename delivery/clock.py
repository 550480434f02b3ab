"""Delivery's clock, passed in wherever delivery reads the time.

The queue owns the clock of what it decides (when an item is ready, a lease runs out, a retry
is due: delivery/queue.py). Everything else delivery reads the time for (an event's age
against Pinterest's 7-day window, how long an integration holds back, when a token is due
for a refresh, the time on a record) comes from a Clock object given to it, the system's by
default. A test gives one that jumps days ahead, and a queue clock that jumps with it.
"""

from __future__ import annotations

import time


class Clock:
    """The system's time."""

    def time(self) -> float:
        """Unix seconds (the wall clock: ages, records, credentials)."""
        return time.time()


SYSTEM = Clock()
