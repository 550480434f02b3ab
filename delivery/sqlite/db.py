"""One SQLite file (WAL) owned by one dedicated thread, with group commit.

Coroutines hand work to the thread with `await db.run(fn, *args)`; `fn(conn, *args)` runs on
the thread. The thread takes every job that is waiting, runs them all in one transaction,
commits once, and only then wakes the waiting coroutines: a `run()` that returned has been
committed, and under load many requests share one commit (one fsync). The event loop never
blocks on SQLite.

`run_merged(fn, items)` is for the hot path (queue appends): calls with the same `fn` made in
one turn of the event loop are handed to the thread as one job, and jobs waiting for the
thread are merged again, so each commit makes a single `fn(conn, all_items)` call. That
matters on a busy core: every hand-off wakes the thread, and every SQLite call releases the
GIL and must win it back from the event loop.

Under load the thread also waits out a short commit window (like PostgreSQL's commit_delay):
a commit starts at most every `commit_window` seconds, so one fsync covers every request of
that window instead of the few that arrived during the previous fsync. When idle (the last
commit began longer ago than the window) nothing waits.

If anything in a batch raises, the whole transaction is rolled back and every job is run
again in a transaction of its own, so one bad job fails alone.

Checkpoints are left to SQLite (every 1000 WAL pages, inside a commit). A checkpoint thread
with its own connection was tried and made p99 worse: its large once-a-second fsync held up
the commits' fsyncs behind it (bench/ingest.py: p99 56-106 ms against 7 ms).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from delivery.sqlite.migrations import migrate

log = logging.getLogger("signal_edge.db")
T = TypeVar("T")
_STOP = object()
MAX_JOBS_PER_COMMIT = 2048
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # the WAL file is truncated back to this after a checkpoint


class _Job:
    __slots__ = ("fn", "args", "futures", "merged")

    def __init__(self, fn, args, futures, merged=False) -> None:
        self.fn, self.args, self.futures, self.merged = fn, args, futures, merged

    def __call__(self, conn: sqlite3.Connection) -> Any:
        return self.fn(conn, *self.args)


class Database:
    def __init__(self, path: str, synchronous: str = "FULL", commit_window: float = 0.001) -> None:
        self.path = path
        self.synchronous = synchronous
        self.commit_window = commit_window
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._gathering: dict[Callable, _Job] = {}  # run_merged calls of this loop turn
        self.commits = 0  # transactions committed (benchmarks read it)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="sqlite-writer", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error:
            raise self._error

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        future = asyncio.get_running_loop().create_future()
        self._jobs.put(_Job(fn, args, [future]))
        return await future

    def run_merged(self, fn: Callable[[sqlite3.Connection, list], None], items: list) -> asyncio.Future:
        """Like run(), but calls with the same `fn` share one call with all their items. Returns
        the future to await (not a coroutine: one frame less on the hot path to suspend and resume)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        job = self._gathering.get(fn)
        if job is None:
            job = self._gathering[fn] = _Job(fn, ([],), [], merged=True)
            loop.call_soon(self._hand_over, fn)  # after every request of this loop turn
        job.args[0].extend(items)
        job.futures.append(future)
        return future

    def _hand_over(self, fn: Callable) -> None:
        self._jobs.put(self._gathering.pop(fn))

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
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
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
        last_commit = 0.0
        try:
            while True:
                job = self._jobs.get()
                if job is _STOP:
                    return
                wait = last_commit + self.commit_window - time.monotonic()
                if wait > 0:
                    time.sleep(wait)  # busy: let this commit gather the window's requests
                last_commit = time.monotonic()
                batch, stop = [job], False
                while len(batch) < MAX_JOBS_PER_COMMIT:
                    try:
                        job = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if job is _STOP:
                        stop = True
                        break
                    batch.append(job)
                self._run_batch(conn, _merge(batch))
                if stop:
                    return
        finally:
            conn.close()

    def _run_batch(self, conn: sqlite3.Connection, jobs: list[_Job]) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            results = [job(conn) for job in jobs]
            conn.execute("COMMIT")
            self.commits += 1
            outcomes = [(job, result, None) for job, result in zip(jobs, results)]
        except Exception:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            outcomes = [self._run_alone(conn, job) for job in jobs]
        _wake(outcomes)

    def _run_alone(self, conn: sqlite3.Connection, job: _Job) -> tuple:
        try:
            conn.execute("BEGIN IMMEDIATE")
            result = job(conn)
            conn.execute("COMMIT")
            self.commits += 1
            return job, result, None
        except Exception as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            log.debug("sqlite job failed: %s", exc)
            return job, None, exc


def _merge(batch: list[_Job]) -> list[_Job]:
    """Merged jobs with the same fn become one job over all their items, in arrival order."""
    out: list[_Job] = []
    groups: dict[Callable, _Job] = {}
    for job in batch:
        if not job.merged:
            out.append(job)
            continue
        group = groups.get(job.fn)
        if group is None:
            group = groups[job.fn] = _Job(job.fn, (list(job.args[0]),), list(job.futures), merged=True)
            out.append(group)
        else:
            group.args[0].extend(job.args[0])
            group.futures.extend(job.futures)
    return out


def _wake(outcomes: list[tuple]) -> None:
    """Resolve the waiting futures: one call into each event loop for the whole batch."""
    by_loop: dict[asyncio.AbstractEventLoop, list] = {}
    for job, result, error in outcomes:
        for future in job.futures:
            by_loop.setdefault(future.get_loop(), []).append((future, None if job.merged else result, error))
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
