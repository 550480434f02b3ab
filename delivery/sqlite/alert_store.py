"""AlertStore on SQLite (delivery/alerts.py): destinations, open incidents, alert history and the
event counts behind the silent-drop rule. Bodies are the JSON of delivery/alerts.py's Structs."""

from __future__ import annotations

import sqlite3

from delivery.sqlite.db import Database


class SqliteAlertStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def destinations(self) -> list[bytes]:
        return await self.db.run(lambda c: [b for (b,) in c.execute("SELECT body FROM alert_destinations ORDER BY id")])

    async def put_destination(self, destination_id: str, body: bytes) -> None:
        await self.db.run(lambda c: c.execute(
            "INSERT INTO alert_destinations (id, body) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET body=excluded.body",
            (destination_id, body)))

    async def delete_destination(self, destination_id: str) -> None:
        await self.db.run(lambda c: c.execute("DELETE FROM alert_destinations WHERE id=?", (destination_id,)))

    async def incidents(self) -> list[bytes]:
        return await self.db.run(lambda c: [b for (b,) in c.execute("SELECT body FROM alert_incidents ORDER BY key")])

    async def change_incidents(self, opened: list[tuple[str, bytes]], closed: list[str]) -> None:
        def change(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT INTO alert_incidents (key, body) VALUES (?, ?) ON CONFLICT(key) DO NOTHING", opened)
            conn.executemany("DELETE FROM alert_incidents WHERE key=?", [(key,) for key in closed])
        await self.db.run(change)

    async def add_history(self, at: float, body: bytes) -> int:
        return await self.db.run(lambda c: c.execute("INSERT INTO alert_history (at, body) VALUES (?, ?)",
                                                     (at, body)).lastrowid)

    async def update_history(self, record_id: int, body: bytes) -> None:
        await self.db.run(lambda c: c.execute("UPDATE alert_history SET body=? WHERE id=?", (body, record_id)))

    async def history(self, before_id: int | None, limit: int) -> list[tuple[int, bytes]]:
        return await self.db.run(lambda c: c.execute(
            "SELECT id, body FROM alert_history WHERE id < ? ORDER BY id DESC LIMIT ?",
            (before_id or 2**62, limit)).fetchall())

    async def add_volume(self, rows: list[tuple[str, str, float, int]]) -> None:
        await self.db.run(lambda c: c.executemany(
            "INSERT INTO event_volume (topic, event, bucket, count) VALUES (?, ?, ?, ?) ON CONFLICT(topic, event, "
            "bucket) DO UPDATE SET count = count + excluded.count", rows))

    async def volume(self, since: float) -> list[tuple[str, str, float, int]]:
        return await self.db.run(lambda c: c.execute(
            "SELECT topic, event, bucket, count FROM event_volume WHERE bucket >= ?", (since,)).fetchall())
