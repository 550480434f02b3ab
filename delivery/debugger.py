"""Live fan-out of debugger records to whoever is watching (the admin SSE stream).

Publishing costs nothing when nobody is subscribed; a slow subscriber loses its oldest
records rather than slowing delivery down.
"""

from __future__ import annotations

import asyncio

from delivery.store import DebugRecord

SUBSCRIBER_BUFFER = 1000


class DebugHub:
    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[DebugRecord]] = set()

    @property
    def watched(self) -> bool:
        return bool(self._subscribers)

    def publish(self, records: list[DebugRecord]) -> None:
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
