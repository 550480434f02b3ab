"""The AlertStore (delivery/store.py) over a driver: alert destinations, open incidents, alert
history and the event counts behind the silent-drop rule. Bodies are the JSON of
delivery/alerts.py's Structs."""

from __future__ import annotations

from delivery.sql.statements import Driver, Op, executemany


class SqlAlertStore:
    def __init__(self, sql: Driver) -> None:
        self.sql = sql

    async def destinations(self) -> list[bytes]:
        return [row[0] for row in await self.sql.fetch("SELECT body FROM alert_destinations ORDER BY id")]

    async def put_destination(self, destination_id: str, body: bytes) -> None:
        await self.sql.execute("INSERT INTO alert_destinations (id, body) VALUES (?, ?) ON CONFLICT (id) DO UPDATE "
                               "SET body = excluded.body", destination_id, body)

    async def delete_destination(self, destination_id: str) -> None:
        await self.sql.execute("DELETE FROM alert_destinations WHERE id = ?", destination_id)

    async def incidents(self) -> list[bytes]:
        return [row[0] for row in await self.sql.fetch("SELECT body FROM alert_incidents ORDER BY key")]

    async def change_incidents(self, opened: list[tuple[str, bytes]], closed: list[str]) -> None:
        """Open incidents (one already open stays as it was) and close others, together."""
        await self.sql.transaction(_change_incidents, opened, closed)

    async def add_history(self, at: float, body: bytes) -> int:
        return await self.sql.fetchval("INSERT INTO alert_history (at, body) VALUES (?, ?) RETURNING id", at, body)

    async def update_history(self, record_id: int, body: bytes) -> None:
        await self.sql.execute("UPDATE alert_history SET body = ? WHERE id = ?", body, record_id)

    async def history(self, before_id: int | None, limit: int) -> list[tuple[int, bytes]]:
        """(id, body) newest first, below `before_id`."""
        rows = await self.sql.fetch("SELECT id, body FROM alert_history WHERE id < ? ORDER BY id DESC LIMIT ?",
                                    before_id or 2**62, limit)
        return [(row[0], row[1]) for row in rows]

    async def add_volume(self, rows: list[tuple[str, str, float, int]]) -> None:
        """Add (topic, event, bucket, count) rows to the counts."""
        await self.sql.executemany("INSERT INTO event_volume (topic, event, bucket, count) VALUES (?, ?, ?, ?) "
                                   "ON CONFLICT (topic, event, bucket) DO UPDATE "
                                   "SET count = event_volume.count + excluded.count", rows)

    async def volume(self, since: float) -> list[tuple[str, str, float, int]]:
        rows = await self.sql.fetch("SELECT topic, event, bucket, count FROM event_volume WHERE bucket >= ?", since)
        return [(row[0], row[1], row[2], row[3]) for row in rows]


def _change_incidents(opened: list[tuple[str, bytes]], closed: list[str]) -> Op[None]:
    yield executemany("INSERT INTO alert_incidents (key, body) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", opened)
    yield executemany("DELETE FROM alert_incidents WHERE key = ?", [(key,) for key in closed])
