"""Live fan-out of debugger records to whoever is watching (the admin SSE stream).

Publishing costs nothing when nobody is subscribed; a slow subscriber loses its oldest
records rather than slowing delivery down. With several nodes, a relay (see
delivery/postgres/relay.py) tells the hub when a watcher is connected to another node, and
forwards this node's records there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from delivery.store import DebugRecord

SUBSCRIBER_BUFFER = 1000


class DebugHub:
    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[DebugRecord]] = set()
        self.remote_watch_until = 0.0  # monotonic time until which another node has a watcher
        self.relay: Callable[[list[DebugRecord]], None] | None = None

    @property
    def local_watchers(self) -> bool:
        return bool(self._subscribers)

    @property
    def watched(self) -> bool:
        return bool(self._subscribers) or time.monotonic() < self.remote_watch_until

    def publish(self, records: list[DebugRecord]) -> None:
        """Records of this node: to its own watchers, and to other nodes' while they watch."""
        self.deliver(records)
        if self.relay is not None and time.monotonic() < self.remote_watch_until:
            self.relay(records)

    def deliver(self, records: list[DebugRecord]) -> None:
        """To this node's watchers only (records from another node arrive here)."""
        for queue in self._subscribers:
            for record in records:
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(record)

    def subscribe(self) -> asyncio.Queue[DebugRecord]:
        queue: asyncio.Queue[DebugRecord] = asyncio.Queue(SUBSCRIBER_BUFFER)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[DebugRecord]) -> None:
        self._subscribers.discard(queue)
