"""What expires, deleted in the background in bounded batches: no statement holds the database
for long, and a backlog of expired rows (after an upgrade, or downtime) drains in steps."""

from __future__ import annotations

import asyncio
import logging

from delivery.store import StorageError

log = logging.getLogger("signal_edge.retention")
RUN_EVERY = 600.0  # seconds between passes
BATCH = 1000  # rows per statement
PAUSE = 0.05  # seconds between the statements of one pass: others get the database in between


async def prune_expired(store, batch: int = BATCH) -> int:
    """One pass: every identity past its retention goes; returns how many."""
    total = 0
    while True:
        gone = await store.prune_identities(batch)
        total += gone
        if gone < batch:
            return total
        await asyncio.sleep(PAUSE)


async def run(store, every: float = RUN_EVERY) -> None:
    while True:
        try:
            gone = await prune_expired(store)
            if gone:
                log.info("retention: %d identities past their retention deleted", gone)
        except StorageError as exc:
            log.warning("retention: could not delete expired rows now (%s); trying again later", exc)
        await asyncio.sleep(every)
