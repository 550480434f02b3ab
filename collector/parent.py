"""A `--workers` process's watch on the parent that started it (see collector/workers.py)."""

from __future__ import annotations

import asyncio
import logging
import os

log = logging.getLogger("signal_edge")

PARENT_ENV = "SIGNAL_WORKERS_PARENT"  # the parent's pid, in each worker process's environment
PARENT_EVERY = 1.0  # seconds between a worker's looks at its parent


async def watch_parent(stop: asyncio.Event) -> None:
    """In a worker process: set `stop` once the parent that started it is gone (a parent
    killed before the kernel's signal was armed, or a system without PR_SET_PDEATHSIG)."""
    parent = int(os.environ.get(PARENT_ENV, "0"))
    if not parent:
        return
    while os.getppid() == parent:  # noqa: ASYNC110 - nothing signals a parent's death: polling is the way
        await asyncio.sleep(PARENT_EVERY)
    log.warning("the --workers parent (pid %d) is gone; stopping", parent)
    stop.set()
