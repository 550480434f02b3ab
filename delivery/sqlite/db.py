"""One SQLite file (WAL) owned by one dedicated thread, with group commit.

The database may instead live in memory (`in_memory`, delivery/sqlite/files.py): the same code
and the same SQL, with no file, no fsync, no lock file and no disk to watch. The fast test tier
uses it; its contents go with its last connection.

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

The thread also watches the room left on the file's disk, never on a request's way: once a
second, and after every commit (at most every 50 ms) once the room is below twice the reserve.
The room is the free bytes (statvfs) plus the file's own free pages, less the WAL's size (what
a checkpoint may still add to the file). Below `disk_reserve` `disk_low` is set and ingestion
answers 503, while delivery still has room to lease, settle and drain: a disk that is really
full stops every write, deletes included (they go through the WAL too). Meanwhile each look
checkpoints the WAL and truncates it, so that its size stops counting against the room; what
delivery deletes frees pages, and once the room is back above the reserve by a quarter,
ingestion resumes by itself. The WAL, though, grows on the disk itself and never into the
file's free pages: while the disk's own free bytes are under the reserve, each look truncates
it too and SQLite checkpoints every 100 pages, so that a drain which frees half the file cannot
fill the disk with WAL between two checkpoints.

Checkpoints are left to SQLite (every 1000 WAL pages, inside a commit). A checkpoint thread
with its own connection was tried and made p99 worse: its large once-a-second fsync held up
the commits' fsyncs behind it (bench/ingest.py: p99 56-106 ms against 7 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from delivery.sqlite.files import (
    BUSY_TIMEOUT_MS,
    in_memory,
    in_use,
    lock_serving,
    open_elsewhere,
    private_files,
    unusable,
)
from delivery.sqlite.migrations import MIGRATIONS, migrate
from delivery.store import StorageError, StorageUnusable

log = logging.getLogger("signal_edge.db")
T = TypeVar("T")
_STOP = object()
MAX_JOBS_PER_COMMIT = 2048
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # the WAL file is truncated back to this after a checkpoint
TIGHT_CHECKPOINT_PAGES = 100  # SQLite's checkpoint threshold while the disk's own free bytes are short
MIN_BUSY_MS = 50
ROOM_EVERY = 1.0  # seconds between looks at the room left on the disk
ROOM_EVERY_NEAR = 0.05  # the same, once the room is below twice the reserve


class _Job:
    __slots__ = ("fn", "args", "futures", "merged", "at")

    def __init__(self, fn, args, futures, merged=False, at: float | None = None) -> None:
        self.fn, self.args, self.futures, self.merged = fn, args, futures, merged
        self.at = time.monotonic() if at is None else at  # when it was handed over: its wait starts

    def __call__(self, conn: sqlite3.Connection) -> Any:
        return self.fn(conn, *self.args)


_Outcome = tuple[_Job, Any, BaseException | None]  # a job, its result, or what it raised


class Database:
    def __init__(self, path: str, synchronous: str = "FULL", commit_window: float = 0.001,
                 exclusive: bool = False, disk_reserve: int = 0) -> None:
        self.path = path
        self.memory = in_memory(path)  # no file, no fsync: gone with its last connection
        self.disk_reserve = disk_reserve  # bytes kept free for delivery; 0: not watched
        self.disk_low = False
        self.disk_low_since: float | None = None
        self.exclusive = exclusive  # the serving process: no other may serve this file
        self._lock_fd: int | None = None
        self.synchronous = synchronous
        self.commit_window = commit_window
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._gathering: dict[Callable, _Job] = {}  # run_merged calls of this loop turn
        self.commits = 0  # transactions committed (benchmarks read it)
        self.problem: str | None = None  # why the last transaction failed, until one commits
        self.problem_since: float | None = None
        self._busy_ms = BUSY_TIMEOUT_MS
        self._room_at = 0.0
        self._room_every = ROOM_EVERY
        self.disk_tight = False  # the disk's own free bytes under the reserve (the file's free pages aside)

    def start(self) -> None:
        if self.exclusive and not self.memory:  # a database in memory is this process's alone
            self._lock_fd = lock_serving(self.path)
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
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # the lock goes with it
            self._lock_fd = None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               uri=self.path.startswith("file:"))
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        # Deleted content is overwritten with zeros: an event delivered or erased leaves nothing in
        # the file's free pages (README: Erasure). Debian's SQLite does so by default; this says it
        # whatever the build, and the benchmarks' figures were measured with it.
        conn.execute("PRAGMA secure_delete=ON")
        return conn

    def _open(self) -> sqlite3.Connection:
        """Connect, check and migrate, or raise StorageUnusable with what to do."""
        try:
            private_files(self.path)
            elsewhere = not self.memory and open_elsewhere(self.path)  # before this process opens it
            conn = self._connect()
        except OSError as exc:
            raise StorageUnusable(f"cannot create {self.path}: {exc.strerror}; check that its directory "
                                  "exists and is writable") from None
        except sqlite3.Error as exc:
            raise StorageUnusable(unusable(self.path, exc)) from None
        try:
            check = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
            if check != "ok":
                check = " ".join(check.replace("*** in database main ***", "").split())
                raise StorageUnusable(
                    f"{self.path} is damaged (SQLite quick_check: {check}); restore it from a backup, or salvage "
                    f"it with `sqlite3 {self.path} .recover | sqlite3 repaired.db` and start with --db repaired.db")
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            if 0 < current < len(MIGRATIONS) and elsewhere:
                raise StorageUnusable(in_use(self.path, current, len(MIGRATIONS)))
            migrate(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise StorageUnusable(unusable(self.path, exc)) from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _main(self) -> None:
        try:
            conn = self._open()
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        last_commit = 0.0
        try:
            while True:
                if time.monotonic() - self._room_at >= self._room_every:
                    self._check_room(conn)
                try:
                    job = self._jobs.get(timeout=ROOM_EVERY)
                except queue.Empty:
                    continue
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
                self._bound_wait(conn, batch[0].at)  # the queue is first in, first out
                self._run_batch(conn, _merge(batch))
                if time.monotonic() - self._room_at >= self._room_every:
                    self._check_room(conn)
                if stop:
                    return
        finally:
            conn.close()

    def _check_room(self, conn: sqlite3.Connection) -> None:
        self._room_at = time.monotonic()
        if not self.disk_reserve or self.memory:
            return
        if self.disk_low or self.disk_tight:  # the WAL's frames go into the file, its size back to the disk
            with contextlib.suppress(sqlite3.Error):  # a full disk may refuse it now and allow it later
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        try:
            disk = os.statvfs(os.path.dirname(os.path.abspath(self.path)))
            pages, page_size = (conn.execute(f"PRAGMA {name}").fetchone()[0]
                                for name in ("freelist_count", "page_size"))
            wal = os.stat(self.path + "-wal").st_size if os.path.exists(self.path + "-wal") else 0
        except (OSError, sqlite3.Error):
            return  # a fault shows in the next transaction
        free = disk.f_bavail * disk.f_frsize
        room = free + pages * page_size - wal
        low = room < self.disk_reserve * (1.25 if self.disk_low else 1)  # not back and forth at the line
        # The WAL grows on the disk itself (module docstring): kept small while its free bytes are short.
        tight = free < self.disk_reserve
        if tight != self.disk_tight:  # meanwhile SQLite checkpoints small WALs inside every commit too
            self.disk_tight = tight
            with contextlib.suppress(sqlite3.Error):
                conn.execute(f"PRAGMA wal_autocheckpoint={TIGHT_CHECKPOINT_PAGES if tight else 1000}")
                conn.execute(f"PRAGMA journal_size_limit={0 if tight else WAL_SIZE_LIMIT}")
        near = not low and (room < 2 * self.disk_reserve or tight)  # look often
        self._room_every = ROOM_EVERY_NEAR if near else ROOM_EVERY
        if low != self.disk_low:
            if low:
                log.warning("%d MB left for %s, below the reserve of %d MB kept for delivery: ingestion answers 503 "
                            "until delivery frees room (or free some disk space)", max(0, room) >> 20, self.path,
                            self.disk_reserve >> 20)
            else:
                log.info("%d MB free for %s again: ingestion resumes", room >> 20, self.path)
            if low:
                self.disk_low_since = time.time()  # read with disk_low, from another thread: set first
            self.disk_low = low

    def _bound_wait(self, conn: sqlite3.Connection, oldest: float) -> None:
        """A lock held by another process is waited for only as long as the oldest job has left
        of its BUSY_TIMEOUT_MS: jobs that queued behind a batch that waited the whole time get
        their answer (503) at once instead of waiting as long again."""
        waited = int((time.monotonic() - oldest) * 1000)
        busy = BUSY_TIMEOUT_MS if waited < 100 else max(MIN_BUSY_MS, BUSY_TIMEOUT_MS - waited)
        if busy != self._busy_ms:  # only after a slow batch: normally no statement at all
            self._busy_ms = busy
            conn.execute(f"PRAGMA busy_timeout={busy}")

    def _run_batch(self, conn: sqlite3.Connection, jobs: list[_Job]) -> None:
        outcomes: list[_Outcome]
        try:
            conn.execute("BEGIN IMMEDIATE")
            results = [job(conn) for job in jobs]
            conn.execute("COMMIT")
            self._succeeded()
            outcomes = [(job, result, None) for job, result in zip(jobs, results, strict=True)]
        except Exception as exc:
            _rollback(conn)
            failure = self._storage_failure(exc)
            if failure is not None:  # not any job's fault: every job fails with it, at once
                outcomes = [(job, None, failure) for job in jobs]
            else:  # some job's fault: each runs alone, so that only that one fails
                outcomes = [self._run_alone(conn, job) for job in jobs]
        _wake(outcomes)

    def _run_alone(self, conn: sqlite3.Connection, job: _Job) -> _Outcome:
        try:
            conn.execute("BEGIN IMMEDIATE")
            result = job(conn)
            conn.execute("COMMIT")
            self._succeeded()
            return job, result, None
        except Exception as exc:
            _rollback(conn)
            log.debug("sqlite job failed: %s", exc)
            return job, None, self._storage_failure(exc) or exc

    def _succeeded(self) -> None:
        self.commits += 1
        if self.problem is not None:
            log.info("the database works again after: %s", self.problem)
            self.problem = self.problem_since = None

    def _storage_failure(self, exc: Exception) -> StorageError | None:
        """A StorageError when `exc` is the environment's doing (and the database is then
        degraded until the next commit), else None."""
        if isinstance(exc, MemoryError):
            message = "out of memory"
        elif isinstance(exc, sqlite3.Error) and exc.sqlite_errorcode & 0xFF in _ENVIRONMENT:
            message = f"{exc} ({exc.sqlite_errorname})"
        else:
            return None
        if self.problem is None:
            self.problem_since = time.time()
        self.problem = message
        return StorageError(f"the database cannot store anything now: {message}")


# Primary SQLite result codes that say nothing about the job: BUSY, LOCKED, NOMEM, READONLY,
# IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL, NOTADB.
_ENVIRONMENT = frozenset({5, 6, 7, 8, 10, 11, 13, 14, 15, 26})


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:  # an I/O error can fail the rollback too; SQLite rolls back on its own
        pass


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
            group = groups[job.fn] = _Job(job.fn, (list(job.args[0]),), list(job.futures), True, job.at)
            out.append(group)
        else:
            group.args[0].extend(job.args[0])
            group.futures.extend(job.futures)
    return out


def _wake(outcomes: list[_Outcome]) -> None:
    """Resolve the waiting futures: one call into each event loop for the whole batch."""
    by_loop: dict[asyncio.AbstractEventLoop, list] = {}
    for job, result, error in outcomes:
        for future in job.futures:
            by_loop.setdefault(future.get_loop(), []).append((future, None if job.merged else result, error))
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed; nobody is waiting any more
            loop.call_soon_threadsafe(_resolve, items)


def _resolve(items: list) -> None:
    for future, result, error in items:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
