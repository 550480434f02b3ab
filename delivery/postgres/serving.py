"""Which processes serve a PostgreSQL deployment, so that `rotate-secret-key` refuses while any
does: each serving process holds one advisory lock in shared mode, on a connection of its own,
for as long as it serves; a rotation takes it exclusively, or refuses and names the holders.

Why this and not the alternatives: the lock goes with its connection when a node dies (no
stale heartbeat blocks a rotation, and no dead node is counted); a node that starts while a
rotation runs waits for it, then reads the new key's fingerprint and refuses the old key
(pg_stat_activity would not stop a node that starts after the check); and it costs one idle
connection per process. A lost connection is noticed within PING seconds and the lock taken
again; for the moment in between, PgConfigStore writes an integration only while the stored
fingerprint is this node's key's, so a node that missed a rotation cannot seal with the old key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import asyncpg

from delivery.postgres.db import environmental, shown
from delivery.store import StorageUnusable

log = logging.getLogger("signal_edge.db")
LOCK = 0x53455256  # "SERV": pg_advisory_lock key, per database
PING = 5.0  # seconds between checks that the lock's connection is alive
NAME = "signal-edge node "  # the lock's connection's application_name, to name the holders


class ServingLock:
    """Held in shared mode while this process serves."""

    def __init__(self, url: str, node: str) -> None:
        self.url, self.node = url, node
        self._conn: asyncpg.Connection | None = None
        self._keeper: asyncio.Task | None = None

    async def hold(self, wait: float = 30.0) -> None:
        """Take the lock (waiting out a rotation that runs now), then keep it."""
        try:
            await self._take(wait)
        except StorageUnusable:
            raise
        except Exception as exc:
            raise StorageUnusable(f"cannot reach PostgreSQL at {shown(self.url)} ({exc}); check that it runs") from None
        self._keeper = asyncio.create_task(self._keep(), name="pg-serving-lock")

    async def _take(self, wait: float) -> None:
        self._conn = await asyncpg.connect(self.url, timeout=10, server_settings={"application_name": NAME + self.node})
        deadline = time.monotonic() + wait
        while not await self._conn.fetchval("SELECT pg_try_advisory_lock_shared($1)", LOCK):
            if time.monotonic() > deadline:
                await self.close()
                raise StorageUnusable("a secret key rotation (`signal-edge rotate-secret-key`) has held this database "
                                      f"for over {wait:.0f}s; let it finish, then start with the new key")
            await asyncio.sleep(0.2)

    def _held(self) -> asyncpg.Connection:
        """The lock's connection, which _take made before _keep started."""
        if self._conn is None:
            raise RuntimeError("the serving lock was not taken")
        return self._conn

    async def _keep(self) -> None:
        """Ping the lock's connection; when it is lost, connect and take the lock again."""
        while True:
            await asyncio.sleep(PING)
            try:
                await self._held().execute("SELECT 1", timeout=PING)
                continue
            except Exception as exc:
                if not environmental(exc):
                    log.exception("the serving lock's connection failed")
            log.warning("lost the serving lock's connection; taking the lock again")
            while True:
                self._held().terminate()
                try:
                    await self._take(wait=float("inf"))  # after a rotation that runs now, if one does
                    log.info("holding the serving lock again")
                    break
                except Exception:  # the database is away: try again
                    await asyncio.sleep(PING)

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            self._keeper = None
        if self._conn is not None and not self._conn.is_closed():
            self._conn.terminate()  # the lock goes with the connection


@contextlib.asynccontextmanager
async def serving_stopped(url: str):
    """Held while no process serves the database (and none can start): StorageUnusable, naming
    the processes that serve it, when any does."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK):
            holders = await conn.fetch(
                "SELECT a.application_name, a.client_addr FROM pg_locks l "
                "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.objid = $1 AND l.database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database()) AND l.granted", LOCK & 0xFFFFFFFF)
            names = ", ".join(sorted(
                (r["application_name"] or "").removeprefix(NAME) or f"a process at {r['client_addr'] or 'this host'}"
                for r in holders)) or "a node"
            raise StorageUnusable(f"signal-edge still serves {shown(url)} ({len(holders) or 1} processes: "
                                  f"{names}); stop every node first: a node that keeps the old key would seal "
                                  "tokens the new key cannot open")
        yield
    finally:
        conn.terminate()
