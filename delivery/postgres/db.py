"""PostgreSQL through asyncpg: a pool, its faults as StorageError, and LISTEN/NOTIFY.

Every call runs in a transaction on a pooled connection. Faults of the environment (the
server restarting or failing over, a lost connection, a pool that stays dry, a full disk)
become StorageError, and the database counts as degraded until a call succeeds again, as
the SQLite backend does. The pool reconnects by itself; nothing here needs a restart.

Every connection names its node and process (`application_name`, seen in pg_stat_activity),
and the server bounds what a frozen or partitioned node can hold: a transaction left idle is
cut after `idle_timeout` (idle_in_transaction_session_timeout), and TCP keepalives end the
session of a node that vanished. Statements that other nodes could wait on (the lease, the
rate bucket) are single statements: a node that freezes between two round trips holds no lock.

Notifications: one channel, `signal_edge`, with payloads `<kind>:<id>`. Writers send them in
the same transaction as their change (pg_notify is transactional), and a dedicated connection
listens; when it is lost it reconnects with backoff and tells its owner to reload everything,
since notifications sent meanwhile are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg

from delivery.postgres.migrations import migrate
from delivery.store import StorageError, StorageUnusable

log = logging.getLogger("signal_edge.db")
T = TypeVar("T")
CHANNEL = "signal_edge"
ACQUIRE_TIMEOUT = 5.0  # a dry pool makes a call wait this long, then StorageError (503)
ANSWER_WITHIN = 5.0  # a single statement (the requests' reads and writes) answers within this, or 503
COMMAND_TIMEOUT = 15.0
IDLE_IN_TRANSACTION = 10.0  # seconds the server lets a transaction sit idle before it ends the session
# The server probes a silent client after 5 s, every 2 s, 3 times: a vanished node's session
# (and anything it holds) ends within about 11 s instead of the kernel's two hours.
KEEPALIVES = {"tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2", "tcp_keepalives_count": "3"}
# SQLSTATE classes that mean the statement or its data is wrong (a bug: raised as it is):
# unsupported feature, cardinality, data, integrity, SQL routine, cursor name, syntax or access,
# check option. Every other failure (connection, resources, operator intervention, a standby
# after a failover, serialization, the server's internal errors) is the environment's.
_PROGRAM_CLASSES = frozenset({"0A", "21", "22", "23", "2F", "34", "42", "44"})


def shown(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    where = f"{parts.username + '@' if parts.username else ''}{host}{':' + str(parts.port) if parts.port else ''}"
    return f"{parts.scheme}://{where}{parts.path}"


def environmental(exc: BaseException) -> bool:
    """A fault of the database, the network or the connection, not of the statement."""
    if isinstance(exc, asyncpg.PostgresError):
        return (exc.sqlstate or "")[:2] not in _PROGRAM_CLASSES
    return isinstance(exc, (OSError, asyncio.TimeoutError, asyncpg.InterfaceError,
                            asyncpg.exceptions.InternalClientError))


class PgDatabase:
    def __init__(self, url: str, pool_size: int = 10, name: str = "signal-edge",
                 idle_timeout: float = IDLE_IN_TRANSACTION) -> None:
        self.url = url
        self.pool_size = pool_size
        self.name = name  # application_name: which node and process, for pg_stat_activity
        self.idle_timeout = idle_timeout
        self.pool: asyncpg.Pool | None = None
        self.problem: str | None = None  # why the last call failed, until one succeeds
        self.problem_since: float | None = None
        self.commits = 0
        self._listener: asyncio.Task | None = None
        self._handlers: list[tuple[Callable[[str], None], Callable[[], Awaitable[None]] | None]] = []

    async def start(self) -> None:
        """Connect and migrate, or raise StorageUnusable in one line that says what to do."""
        try:
            # min_size 0: connections open on demand. With a floor, asyncpg keeps reconnecting in
            # the background during an outage and logs a traceback each time.
            self.pool = await asyncpg.create_pool(
                self.url, min_size=0, max_size=self.pool_size, command_timeout=COMMAND_TIMEOUT,
                max_inactive_connection_lifetime=60, timeout=10, server_settings=self.server_settings())
        except BaseException as exc:
            raise StorageUnusable(self._unusable(exc)) from None
        try:
            async with self.pool.acquire() as conn:
                await migrate(conn)
        except StorageUnusable:
            await self.close()
            raise
        except Exception as exc:
            await self.close()
            raise StorageUnusable(self._unusable(exc)) from None

    def server_settings(self, role: str = "") -> dict[str, str]:
        return {"application_name": f"{self.name}{role}"[:63],  # PostgreSQL keeps 63 bytes of it
                "idle_in_transaction_session_timeout": str(max(1, round(self.idle_timeout * 1000))), **KEEPALIVES}

    def _unusable(self, exc: BaseException) -> str:
        where = shown(self.url)
        if isinstance(exc, ValueError):
            return f"SIGNAL_DATABASE_URL is not a PostgreSQL URL ({exc}); use postgresql://user:password@host:port/db"
        if isinstance(exc, (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)):
            return f"PostgreSQL at {where} refused the user or password in SIGNAL_DATABASE_URL; check them"
        if isinstance(exc, asyncpg.InvalidCatalogNameError):
            return f"the database in {where} does not exist; create it (createdb) or fix SIGNAL_DATABASE_URL"
        if isinstance(exc, (OSError, asyncio.TimeoutError, socket.gaierror)):
            return f"cannot reach PostgreSQL at {where} ({exc or type(exc).__name__}); check that it runs and the URL"
        return f"cannot use PostgreSQL at {where}: {type(exc).__name__}: {exc}"

    async def close(self) -> None:
        if self._listener:
            self._listener.cancel()
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), 5)
            except Exception:  # a timeout or a broken pool alike: terminate it
                self.pool.terminate()

    def opened(self) -> asyncpg.Pool:
        """The pool that open() made."""
        if self.pool is None:
            raise RuntimeError("the PostgreSQL database was not opened")
        return self.pool

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any, single: bool = False) -> T:
        """`await fn(conn, *args)` in a transaction on a pooled connection. `single`: `fn` runs one
        statement, which is atomic by itself: no BEGIN and COMMIT round trips (the hot path's
        append and the reads), and the caller waits at most ANSWER_WITHIN for it."""
        if single:
            return await self._within(self._call(fn, args, True), ANSWER_WITHIN)
        return await self._call(fn, args, False)

    async def _call(self, fn: Callable[..., Awaitable[T]], args: tuple, single: bool) -> T:
        try:
            async with self.opened().acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                if single:
                    result = await fn(conn, *args)
                else:
                    async with conn.transaction():
                        result = await fn(conn, *args)
        except Exception as exc:
            if not environmental(exc):
                raise
            raise self._failed(exc) from None
        self._succeeded()
        return result

    async def _within(self, call: Awaitable[T], seconds: float) -> T:
        """The call's result, or StorageError after `seconds`; the call itself goes on in a task of
        its own until its statement's timeout. Not cancelled: asyncpg hands a connection back only
        once a frozen server has answered a cancel request or the release has timed out (a wait
        the caller would share), and a release cut short leaves an error nobody reads."""
        task = asyncio.ensure_future(call)
        task.add_done_callback(_retrieve)
        done, _ = await asyncio.wait((task,), timeout=seconds)
        if done:
            return task.result()
        raise self.no_answer(seconds)

    def no_answer(self, seconds: float) -> StorageError:
        """The fault of a database that did not answer within `seconds` (frozen, partitioned)."""
        return self._failed(TimeoutError(f"no answer within {seconds:g}s"))

    def _succeeded(self) -> None:
        self.commits += 1
        if self.problem is not None:
            log.info("PostgreSQL works again after: %s", self.problem)
            self.problem = self.problem_since = None

    def dedicated(self) -> Dedicated:
        return Dedicated(self)

    def _failed(self, exc: BaseException) -> StorageError:
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self.problem is None:
            self.problem_since = time.time()
        self.problem = message
        return StorageError(f"the database cannot store anything now: {message}")

    # --- LISTEN -----------------------------------------------------------------------

    def listen(self, on_notify: Callable[[str], None],
               on_reconnect: Callable[[], Awaitable[None]] | None = None) -> None:
        """Call `on_notify(payload)` for every notification; await `on_reconnect()` each time
        listening starts (first, and after a lost connection: notifications were missed). One
        connection serves every listener."""
        self._handlers.append((on_notify, on_reconnect))
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="pg-listen")

    def _dispatch(self, payload: str) -> None:
        for on_notify, _ in self._handlers:
            try:
                on_notify(payload)
            except Exception:
                log.exception("a change listener failed")

    async def _listen(self) -> None:
        delay, first = 0.2, True
        while True:
            conn = None
            try:
                conn = await asyncpg.connect(self.url, timeout=5, server_settings=self.server_settings(" listen"))
                lost = asyncio.Event()
                # Bound now: an earlier connection's late termination must not end this one's wait.
                conn.add_termination_listener(lambda _, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, lambda _c, _pid, _ch, payload: self._dispatch(payload))
                # Changes made before LISTEN took effect (since the owner's first load, or while
                # the connection was lost) sent notifications nobody heard: read everything again.
                for _, on_reconnect in self._handlers:
                    if on_reconnect is not None:
                        await on_reconnect()
                if not first:
                    log.info("listening for changes from other nodes again")
                first, delay = False, 0.2
                while not lost.is_set():
                    try:
                        await asyncio.wait_for(lost.wait(), 5)
                    except TimeoutError:
                        await conn.execute("SELECT 1", timeout=5)  # notices a silently dead connection
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not environmental(exc):
                    log.exception("the change listener failed")
                first = False
            finally:
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


class Dedicated:
    """One pooled connection kept by a hot path (the queue's appender) for single statements: a
    pool acquire and release cost more CPU than the statement. A fault drops the connection
    (the next call takes a fresh one) and is a StorageError, as in PgDatabase.run."""

    def __init__(self, db: PgDatabase) -> None:
        self.db = db
        self.conn: asyncpg.Connection | None = None

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any, wait: float = ACQUIRE_TIMEOUT) -> T:
        """`await fn(conn, *args)`, waiting at most `wait` for a connection when it has none."""
        try:
            if self.conn is None:
                self.conn = await self.db.opened().acquire(timeout=min(ACQUIRE_TIMEOUT, wait))
            result = await fn(self.conn, *args)
        except Exception as exc:
            self.drop()
            if not environmental(exc):
                raise
            raise self.db._failed(exc) from None
        self.db._succeeded()
        return result

    def drop(self) -> None:
        """After a fault: the connection's state is unknown (a statement may still be running on
        a frozen server), so it is terminated at once and not reset, which would wait on it."""
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already terminated and handed back by asyncpg
                conn.terminate()

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                await self.db.opened().release(conn, timeout=1)
            except Exception:
                # A release that timed out has terminated the connection and handed it back to
                # the pool already: terminating it again raised InterfaceError (a 500, once).
                with contextlib.suppress(Exception):
                    conn.terminate()


def spawn(tasks: set[asyncio.Task], coro: Coroutine[Any, Any, Any]) -> None:
    """Run `coro` in the background, kept in `tasks` until it is done; its outcome is read, so
    that asyncio never logs it as lost (the coroutine logs what matters itself)."""
    task = asyncio.ensure_future(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    task.add_done_callback(_retrieve)


def _retrieve(task: asyncio.Task) -> None:
    """Read a task's outcome, so that asyncio does not log it as never retrieved when the
    caller stopped waiting for it."""
    if not task.cancelled():
        task.exception()


async def notify(conn: asyncpg.Connection, kind: str, message: str) -> None:
    """Tell every node `kind:message` (in the caller's transaction: sent when it commits)."""
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"{kind}:{message}")
