"""The stores' statements (delivery/sql/) on SQLite: every call is a job of the writer thread
(delivery/sqlite/db.py), and a transaction is one job, so it shares a commit with the others of
its moment. Notices are dropped: one process has no other node to tell."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from delivery.sql.statements import Notice, Op, Row, Stmt, in_sqlite
from delivery.sqlite.db import Database

T = TypeVar("T")


class SqliteDriver:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self.db.run(_run, Stmt("fetch", sql, args))

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return await self.db.run(_run, Stmt("fetchrow", sql, args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.db.run(_run, Stmt("fetchval", sql, args))

    async def execute(self, sql: str, *args: Any, notice: Notice | None = None) -> int:
        return await self.db.run(_run, Stmt("execute", sql, args))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self.db.run(_run, Stmt("executemany", sql, rows))

    async def transaction(self, op: Callable[..., Op[T]], *args: Any) -> T:
        return await self.db.run(_drive, op, args)


def _drive(conn: sqlite3.Connection, op: Callable[..., Op[T]], args: tuple) -> T:
    steps, result = op(*args), None
    try:
        while True:
            result = _run(conn, steps.send(result))
    except StopIteration as done:
        return done.value


def _run(conn: sqlite3.Connection, stmt: Stmt) -> Any:
    how = stmt.how
    if how == "notify":
        return None
    if how == "executemany":
        conn.executemany(in_sqlite(stmt.sql), stmt.args)
        return None
    cursor = conn.execute(in_sqlite(stmt.sql), stmt.args)
    if how == "fetch":
        return cursor.fetchall()
    if how == "execute":
        return cursor.rowcount
    row = cursor.fetchone()
    return row if how == "fetchrow" or row is None else row[0]
