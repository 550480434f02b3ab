"""ConfigStore on SQLite: the shared statements (delivery/sql/config_store.py) on the file's
writer thread. One process serves the file, so there is nobody else's change to follow."""

from __future__ import annotations

from delivery.sql.config_store import SqlConfigStore
from delivery.sqlite.db import Database
from delivery.sqlite.driver import SqliteDriver


class SqliteConfigStore(SqlConfigStore):
    def __init__(self, db: Database) -> None:
        super().__init__(SqliteDriver(db))
        self.db = db
