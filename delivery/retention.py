"""What expires, deleted in the background in bounded batches: no statement holds the database
for long, and a backlog of expired rows (after an upgrade, or downtime) drains in steps.

Each kind has its own retention (README: Retention): identities after their last change, the
delivery log (debugger records), dead letters after they died, the audit log and the alert
history, the event counts behind the silent-drop alert (as long as its baseline needs), and
suppressions once they end. Deleting frees pages that later writes reuse: a database under a
steady load stays the same size once its oldest records expire (bench/retention.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time

import msgspec

from delivery.store import StorageError

log = logging.getLogger("signal_edge.retention")
RUN_EVERY = 600.0  # seconds between passes
BATCH = 1000  # rows per statement
# ...for rows that carry an event (debugger records, dead letters: up to 32 KB each): SQLite's
# secure_delete writes every deleted byte to the WAL, so one statement needs a few MB of it at most.
EVENT_ROWS_BATCH = 100
PAUSE = 0.05  # seconds between the statements of one pass: others get the database in between
DAY = 86400.0


class Retention(msgspec.Struct, frozen=True):
    """Seconds each kind is kept. Identities are the store's own (store.identity_retention)."""

    debug: float = 7 * DAY
    dead_letters: float = 30 * DAY
    audit: float = 365 * DAY
    volume: float = 8 * DAY  # the silent-drop alert's baseline and window


async def prune_expired(store, batch: int = BATCH) -> int:
    """Every identity past its retention goes; returns how many."""
    return await _drain(lambda: store.prune_identities(batch), batch)


async def prune_all(store, queue, policy: Retention, batch: int = BATCH) -> dict[str, int]:
    """One pass over every kind; returns how many records of each went."""
    now = time.time()
    gone = {"identities": await prune_expired(store, batch)}
    small = min(batch, EVENT_ROWS_BATCH)
    for kind, before, size in (("debug", now - policy.debug, small), ("audit", now - policy.audit, batch),
                               ("alerts", now - policy.audit, batch), ("volume", now - policy.volume, batch),
                               ("suppressions", now, batch)):
        gone[kind] = await _drain(functools.partial(store.prune, kind, before, size), size)
    gone["dead_letters"] = await _drain(lambda: queue.prune_dead_letters(now - policy.dead_letters, small), small)
    return gone


async def _drain(step, batch: int) -> int:
    total = 0
    while True:
        gone = await step()
        total += gone
        if gone < batch:
            return total
        await asyncio.sleep(PAUSE)


async def run(store, queue, policy: Retention, every: float = RUN_EVERY) -> None:
    while True:
        try:
            gone = {kind: n for kind, n in (await prune_all(store, queue, policy)).items() if n}
            if gone:
                log.info("retention: deleted what expired: %s", ", ".join(f"{n} {kind}" for kind, n in gone.items()))
        except StorageError as exc:
            log.warning("retention: could not delete expired rows now (%s); trying again later", exc)
        await asyncio.sleep(every)
