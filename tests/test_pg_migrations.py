"""PostgreSQL's migrations only add (issue 27): nodes are upgraded one at a time, so a newer node
migrates a database that older nodes still use, and nothing they read may change under them."""

from __future__ import annotations

import re

from delivery.postgres.migrations import MIGRATIONS

ADDITIVE = re.compile(
    r"CREATE (TABLE|INDEX|UNIQUE INDEX) \w+"
    r"|CREATE FUNCTION \w+\("  # a new function: nothing an older node reads
    r"|ALTER TABLE \w+ ADD COLUMN \w+ [^;]*"
    r"|ALTER TABLE \w+ SET \([^;]*\)",  # storage parameters (autovacuum): how, not what, is stored
    re.S)


def statements(migration: str) -> list[str]:
    """The migration's statements; a function's body between $$ marks is one with its statement."""
    found, current = [], ""
    for n, piece in enumerate(migration.split("$$")):
        if n % 2:  # inside $$ ... $$
            current += "$$" + piece + "$$"
            continue
        first, *rest = piece.split(";")
        current += first
        for part in rest:
            found.append(current)
            current = part
    found.append(current)
    return [" ".join(part.split()) for part in found if part.strip()]


def test_every_postgres_migration_only_adds():
    for version, migration in enumerate(MIGRATIONS, 1):
        for statement in statements(migration):
            assert ADDITIVE.match(statement), f"migration {version} changes what older nodes read: {statement}"


def test_the_check_would_see_a_change():
    for changing in ("ALTER TABLE queue DROP COLUMN payload", "UPDATE queue SET payload = ''",
                     "ALTER TABLE queue RENAME TO old_queue", "DROP TABLE meta"):
        assert not ADDITIVE.match(changing)
