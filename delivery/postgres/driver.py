"""The stores' statements (delivery/sql/) on PostgreSQL through asyncpg: a single call is one
statement on a pooled connection, atomic by itself (no BEGIN and COMMIT round trips) and
answered within ANSWER_WITHIN or a StorageError (PgDatabase.run); a transaction runs its
statements one by one on one connection.

Notices go out on the channel (sealed: channel.py) as `<kind>:<object id>:<node>`, in the
transaction of their write: a notice carried by a write joins it in one statement
(`WITH done AS (<write>) SELECT pg_notify(...)`), so the write and its notice are one round
trip and one atomic step."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import asyncpg

from delivery.postgres.channel import Channel
from delivery.postgres.db import CHANNEL, PgDatabase
from delivery.sql.statements import Notice, Op, Row, Stmt, in_postgres

T = TypeVar("T")


class PgDriver:
    def __init__(self, db: PgDatabase, node: str = "") -> None:
        self.db = db
        self.node = node
        self.channel: Channel | None = None  # set once the secret key is known (PgConfigStore.open)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self.db.run(self._run, Stmt("fetch", sql, args), single=True)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return await self.db.run(self._run, Stmt("fetchrow", sql, args), single=True)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.db.run(self._run, Stmt("fetchval", sql, args), single=True)

    async def execute(self, sql: str, *args: Any, notice: Notice | None = None) -> int:
        return await self.db.run(self._run, Stmt("execute", sql, args, notice), single=True)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self.db.run(self._run, Stmt("executemany", sql, rows))  # in a transaction: all rows or none

    async def transaction(self, op: Callable[..., Op[T]], *args: Any) -> T:
        return await self.db.run(self._drive, op, args)

    async def _drive(self, conn: asyncpg.Connection, op: Callable[..., Op[T]], args: tuple) -> T:
        steps, result = op(*args), None
        try:
            while True:
                result = await self._run(conn, steps.send(result))
        except StopIteration as done:
            return done.value

    async def _run(self, conn: asyncpg.Connection, stmt: Stmt) -> Any:
        how, args = stmt.how, stmt.args
        if stmt.notice is not None:
            if how == "notify":
                return await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, self.sealed(stmt.notice))
            sql = in_postgres(f"WITH done AS ({stmt.sql} RETURNING 1) SELECT (SELECT count(*) FROM done), "
                              "pg_notify(?, ?)")
            return await conn.fetchval(sql, *args, CHANNEL, self.sealed(stmt.notice))
        sql = in_postgres(stmt.sql)
        if how == "fetch":
            return await conn.fetch(sql, *args)
        if how == "fetchrow":
            return await conn.fetchrow(sql, *args)
        if how == "fetchval":
            return await conn.fetchval(sql, *args)
        if how == "executemany":
            return await conn.executemany(sql, args)
        return int((await conn.execute(sql, *args)).split()[-1])  # "DELETE 3": the rows it changed

    def sealed(self, notice: Notice) -> str:
        if self.channel is None:
            raise RuntimeError("a notice before the store was opened: no channel key yet")
        kind, object_id = notice
        return self.channel.seal(kind, f"{object_id}:{self.node}")
