"""One SQLite file (WAL) owned by one dedicated thread, with group commit.

Coroutines hand work to the thread with `await db.run(fn, *args)`; `fn(conn, *args)`
runs on the thread. The thread takes every job that is waiting, runs them all in one
transaction (each inside its own savepoint, so one failing job does not undo its
neighbours), commits once, and only then wakes the waiting coroutines. So a `run()`
that returned has been committed, and under concurrency many requests share a single
commit (and a single fsync). The event loop never blocks on SQLite.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from delivery.sqlite.migrations import migrate

log = logging.getLogger("signal_edge.db")
T = TypeVar("T")
_STOP = object()
MAX_JOBS_PER_COMMIT = 512


class Database:
    def __init__(self, path: str, synchronous: str = "FULL") -> None:
        self.path = path
        self.synchronous = synchronous
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.commits = 0  # number of transactions committed (for benchmarks)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="sqlite-writer", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error:
            raise self._error

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        future = asyncio.get_running_loop().create_future()
        self._jobs.put((fn, args, future))
        return await future

    def close(self) -> None:
        if self._thread and self._thread.is_alive():
            self._jobs.put(_STOP)
            self._thread.join()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    def _main(self) -> None:
        try:
            conn = self._connect()
            migrate(conn)
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while True:
                job = self._jobs.get()
                if job is _STOP:
                    return
                batch = [job]
                stop = False
                while len(batch) < MAX_JOBS_PER_COMMIT:
                    try:
                        job = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if job is _STOP:
                        stop = True
                        break
                    batch.append(job)
                self._run_batch(conn, batch)
                if stop:
                    return
        finally:
            conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list) -> None:
        outcomes: list[tuple[asyncio.Future, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, args, future in batch:
                conn.execute("SAVEPOINT job")
                try:
                    result = fn(conn, *args)
                    conn.execute("RELEASE job")
                    outcomes.append((future, result, None))
                except Exception as exc:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((future, None, exc))
            conn.execute("COMMIT")
            self.commits += 1
        except Exception as exc:  # the commit itself failed: nothing in the batch is durable
            log.error("sqlite transaction failed: %s", exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            outcomes = [(future, None, exc) for _, _, future in batch]
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].get_loop(), []).append(outcome)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, items)
            except RuntimeError:  # that loop is closed; nobody is waiting any more
                pass


def _resolve(items: list) -> None:
    for future, result, error in items:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
