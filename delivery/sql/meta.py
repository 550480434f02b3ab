"""The meta table: small named values (the key's fingerprint, the admin token's hash, the
erasure salt)."""

from __future__ import annotations

from delivery.sql.statements import Driver, Op, execute, fetchval

UPSERT_META = "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"


class Meta:
    sql: Driver

    async def get_meta(self, key: str) -> str | None:
        return await self.sql.fetchval("SELECT value FROM meta WHERE key = ?", key)

    async def set_meta(self, key: str, value: str) -> None:
        await self.sql.execute(UPSERT_META, key, value)

    async def delete_meta(self, key: str) -> None:
        # SQLite: secure_delete is on (delivery/sqlite/db.py): the old value does not linger in a free page
        await self.sql.execute("DELETE FROM meta WHERE key = ?", key)

    async def init_meta(self, key: str, value: str) -> str:
        """Store `value` unless `key` has one; returns what is stored (another node may have won)."""
        return await self.sql.transaction(_init_meta, key, value)


def _init_meta(key: str, value: str) -> Op[str]:
    yield execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", key, value)
    return (yield fetchval("SELECT value FROM meta WHERE key = ?", key))
