"""Statements written once for both backends, and the thin driver each backend implements
(delivery/sqlite/driver.py, delivery/postgres/driver.py), as Procrastinate and pgqueuer do.

A statement uses `?` placeholders (PostgreSQL's driver numbers them `$1`, `$2`, ...) and names
the few differences between the dialects as `{markers}` from DIALECTS: row locks, which SQLite
has no use for (a transaction there holds the whole file), and two functions spelled apart.

One statement is one call (`await sql.fetchval(...)`). A transaction is an operation written as
a generator of statements, sans I/O: it yields each statement and is sent its result back, so
the same code runs whole on SQLite's writer thread (one job of its group commit) and statement
by statement on an asyncpg connection. A write may carry a notice, `(kind, object id)`, for the
other nodes: PostgreSQL sends it when the write commits; SQLite serves one process and has
nobody to tell.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator, Sequence
from typing import Any, NamedTuple, Protocol, TypeVar

T = TypeVar("T")
Row = Sequence[Any]  # a tuple (SQLite) or an asyncpg Record: read rows by index
Notice = tuple[str, str]  # (kind, object id): "the object changed", for the other nodes


class Stmt(NamedTuple):
    how: str  # fetch | fetchrow | fetchval | execute (its row count) | executemany | notify
    sql: str
    args: Sequence[Any]  # executemany: a sequence of argument tuples
    notice: Notice | None = None


Op = Generator[Stmt, Any, T]  # a transaction: yields statements, is sent their results, returns T


def fetch(sql: str, *args: Any) -> Stmt:
    return Stmt("fetch", sql, args)


def fetchrow(sql: str, *args: Any) -> Stmt:
    return Stmt("fetchrow", sql, args)


def fetchval(sql: str, *args: Any) -> Stmt:
    return Stmt("fetchval", sql, args)


def execute(sql: str, *args: Any, notice: Notice | None = None) -> Stmt:
    """A write (no RETURNING: fetch that); its result is the count of rows it changed."""
    return Stmt("execute", sql, args, notice)


def executemany(sql: str, rows: Sequence[Sequence[Any]]) -> Stmt:
    return Stmt("executemany", sql, rows)


def notify(kind: str, object_id: str) -> Stmt:
    """A notice that goes with no single write (sent when the transaction commits)."""
    return Stmt("notify", "", (), (kind, object_id))


DIALECTS: dict[str, dict[str, str]] = {
    "sqlite": {"for_update": "", "for_share": "", "skip_locked": "", "greatest": "max",
               "json_each": "json_each(?)"},
    "postgres": {"for_update": " FOR UPDATE", "for_share": " FOR SHARE", "skip_locked": " FOR UPDATE SKIP LOCKED",
                 "greatest": "greatest", "json_each": "json_array_elements_text(?::json)"},
}


@functools.lru_cache(maxsize=1024)
def in_sqlite(sql: str) -> str:
    return sql.format_map(DIALECTS["sqlite"])


@functools.lru_cache(maxsize=1024)
def in_postgres(sql: str) -> str:
    parts = sql.format_map(DIALECTS["postgres"]).split("?")
    return parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], 1))


class Driver(Protocol):
    """One backend's way to run statements. Each single call is atomic by itself; a
    transaction runs `op(*args)` (a fresh generator each time: SQLite may run it again, alone,
    when a job it was grouped with failed)."""

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...
    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...
    async def fetchval(self, sql: str, *args: Any) -> Any: ...
    async def execute(self, sql: str, *args: Any, notice: Notice | None = None) -> int: ...
    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...
    async def transaction(self, op: Callable[..., Op[T]], *args: Any) -> T: ...
