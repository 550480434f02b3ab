"""AlertStore on PostgreSQL (delivery/alerts.py), shared by every node: see the SQLite one."""

from __future__ import annotations

import asyncpg

from delivery.postgres.db import PgDatabase


class PgAlertStore:
    def __init__(self, db: PgDatabase) -> None:
        self.db = db

    async def destinations(self) -> list[bytes]:
        return [r[0] for r in await self.db.run(lambda c: c.fetch("SELECT body FROM alert_destinations ORDER BY id"),
                                                single=True)]

    async def put_destination(self, destination_id: str, body: bytes) -> None:
        await self.db.run(lambda c: c.execute(
            "INSERT INTO alert_destinations (id, body) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE "
            "SET body = excluded.body", destination_id, body), single=True)

    async def delete_destination(self, destination_id: str) -> None:
        await self.db.run(lambda c: c.execute("DELETE FROM alert_destinations WHERE id = $1", destination_id),
                          single=True)

    async def incidents(self) -> list[bytes]:
        return [r[0] for r in await self.db.run(lambda c: c.fetch("SELECT body FROM alert_incidents ORDER BY key"),
                                                single=True)]

    async def change_incidents(self, opened: list[tuple[str, bytes]], closed: list[str]) -> None:
        async def change(conn: asyncpg.Connection) -> None:
            await conn.executemany("INSERT INTO alert_incidents (key, body) VALUES ($1, $2) ON CONFLICT (key) "
                                   "DO NOTHING", opened)
            await conn.execute("DELETE FROM alert_incidents WHERE key = ANY($1)", closed)
        await self.db.run(change)

    async def add_history(self, at: float, body: bytes) -> int:
        return await self.db.run(lambda c: c.fetchval("INSERT INTO alert_history (at, body) VALUES ($1, $2) "
                                                      "RETURNING id", at, body), single=True)

    async def update_history(self, record_id: int, body: bytes) -> None:
        await self.db.run(lambda c: c.execute("UPDATE alert_history SET body = $2 WHERE id = $1", record_id, body),
                          single=True)

    async def history(self, before_id: int | None, limit: int) -> list[tuple[int, bytes]]:
        rows = await self.db.run(lambda c: c.fetch(
            "SELECT id, body FROM alert_history WHERE id < $1 ORDER BY id DESC LIMIT $2", before_id or 2**62, limit),
            single=True)
        return [tuple(r) for r in rows]

    async def add_volume(self, rows: list[tuple[str, str, float, int]]) -> None:
        await self.db.run(lambda c: c.executemany(
            "INSERT INTO event_volume (topic, event, bucket, count) VALUES ($1, $2, $3, $4) ON CONFLICT (topic, event, "
            "bucket) DO UPDATE SET count = event_volume.count + excluded.count", rows))

    async def volume(self, since: float) -> list[tuple[str, str, float, int]]:
        rows = await self.db.run(lambda c: c.fetch(
            "SELECT topic, event, bucket, count FROM event_volume WHERE bucket >= $1", since), single=True)
        return [tuple(r) for r in rows]
