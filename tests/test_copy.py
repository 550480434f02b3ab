"""`signal-edge copy` (issue 27): every table of a SQLite deployment reaches PostgreSQL, and the
target comes from `--to` or else from SIGNAL_DATABASE_URL, as the README's setup exports it."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time

import pytest

from collector import copy as deployment_copy
from collector.services import alert_store_of, close_database, open_backend
from collector.settings import load_settings
from delivery.config import Integration, PinterestConfig, Source
from delivery.events import Identity
from delivery.queue import QueueItem, Settlement
from delivery.secrets import SecretBox
from delivery.store import AdminSession, DebugRecord, Refusal, StoredIdentity
from tests.support import ROOT

TOPIC = "int_copy"


async def a_deployment_with_a_row_in_every_table(db_path) -> None:
    settings = load_settings({"db": str(db_path)}, environ={})
    db, store, queue = await open_backend(settings, "node-a", serving=False)
    try:
        await store.open(SecretBox("copy-test-key"))
        await store.set_meta("secret_key_check", store.box.fingerprint)  # as load_secret_key stores it
        await store.put_source(Source(id="src_copy", name="Shop", pipeline_key="dk_live_copy", created_at=1,
                                      updated_at=1), "create")
        await store.put_integration(Integration(id=TOPIC, source_id="src_copy", name="P", created_at=1, updated_at=1,
                                                config=PinterestConfig("549764982399", "pina_SECRET_1")), "create")
        await store.save_identity("anon-1", StoredIdentity("u1", Identity(em=["a" * 64])))
        await store.put_session(AdminSession("session-key", "csrf", time.time(), time.time() + 3600))
        await store.add_debug([DebugRecord(time.time(), "src_copy", "e1", "Signed Up", "delivered",
                                           integration_id=TOPIC)])
        await store.record_activity({("src_copy", "rate_limited"): 3}, [("src_copy", Refusal(time.time(), "rate_limited",
                                                                                             "over the limit"))],
                                    {"src_copy": time.time()})
        await store.suppress({"a-keyed-digest"}, time.time() + 86400)
        alerts = alert_store_of(settings, db)
        await alerts.put_destination("dst_1", b'{"id":"dst_1"}')
        await alerts.change_incidents([("integration_paused:int_copy", b"{}")], [])
        await alerts.add_history(time.time(), b"{}")
        await alerts.add_volume([(TOPIC, "page", 300.0, 4)])
        await queue.open()
        await queue.append([QueueItem(TOPIC, b'["m1"]\n["m2"]', time.time(), 0, 2),
                            QueueItem(TOPIC, b'["m3"]', time.time(), 0, 1)])
        leased = await queue.lease(TOPIC, 1, 60)
        await queue.settle(TOPIC, Settlement(dead=[(leased[0].id, "Pinterest: bad")]))
    finally:
        await queue.close()
        await close_database(db)


def test_every_table_is_copied_and_none_is_forgotten(tmp_path, pg_url):
    db_path = tmp_path / "deployment.db"
    asyncio.run(a_deployment_with_a_row_in_every_table(db_path))
    with sqlite3.connect(db_path) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        counts = {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in tables}
    copied = {table for table, _ in deployment_copy.PLAIN} | set(deployment_copy.OWN_FUNCTIONS)
    assert tables == copied, "a table that `signal-edge copy` does not know: add it to collector/copy.py"
    assert all(counts.values()), {t: n for t, n in counts.items() if not n}  # the test fills every one

    settings = load_settings({"db": str(db_path)}, environ={})
    assert asyncio.run(deployment_copy.copy_deployment(settings, pg_url)) == 0

    async def landed() -> dict[str, int]:
        import asyncpg

        conn = await asyncpg.connect(pg_url)
        try:
            return {table: await conn.fetchval(f"SELECT count(*) FROM {table}") for table, _ in deployment_copy.PLAIN}
        finally:
            await conn.close()
    assert asyncio.run(landed()) == {table: counts[table] for table, _ in deployment_copy.PLAIN}


def run_copy(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collector", "copy", *args], cwd=ROOT, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", **env})


@pytest.mark.process
def test_the_target_is_to_or_else_signal_database_url(tmp_path, pg_url, postgres):
    db_path = tmp_path / "deployment.db"
    asyncio.run(a_deployment_with_a_row_in_every_table(db_path))
    # As the README's setup leaves the shell: the URL exported for the nodes to come.
    exported = run_copy("--from", str(db_path), env={"SIGNAL_DATABASE_URL": pg_url})
    assert exported.returncode == 0, exported.stderr
    assert "copied" in exported.stderr
    other = postgres.create_database()  # --to wins over the variable
    given = run_copy("--from", str(db_path), "--to", other, env={"SIGNAL_DATABASE_URL": pg_url,
                                                                   "SIGNAL_DB": "/elsewhere.db"})
    assert given.returncode == 0, given.stderr
    neither = run_copy("--from", str(db_path), env={})
    assert neither.returncode == 2
    assert "--to postgresql://" in neither.stderr and "SIGNAL_DATABASE_URL" in neither.stderr
    assert "--db" not in neither.stderr  # never a flag the user did not pass
