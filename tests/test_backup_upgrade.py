"""Back up, restore, upgrade (issue 27): `signal-edge backup` copies a SQLite database that is
being written, consistently and 0600; the README's restore brings it back; and a start refuses to
change the schema of a database that an older signal-edge still has open."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from contextlib import closing

import httpx
import pytest

from delivery.sqlite.migrations import MIGRATIONS
from tests.support import ROOT, create_integration, create_source, post_batch, wait_for


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collector", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", **env})


def test_backup_of_a_busy_database_is_consistent_private_and_restores(edge_factory, tmp_path):
    edge = edge_factory()
    with edge.admin() as admin:
        source = create_source(admin)
        create_integration(admin, source["id"])
    sent, stop = [0], threading.Event()

    def load() -> None:  # the server commits all through the backup
        with httpx.Client() as client:
            while not stop.is_set():
                post_batch(edge.url, source["pipeline_key"], [{"type": "track", "event": f"Load {sent[0]}"}] * 10,
                           client)
                sent[0] += 10

    loader = threading.Thread(target=load)
    loader.start()
    try:
        wait_for(lambda: sent[0] >= 200, what="load")
        copy = tmp_path / "backups" / "signal-edge-1.db"
        (tmp_path / "backups").mkdir()
        made = cli("backup", "--db", str(edge.db), "--to", str(copy))
        assert made.returncode == 0, made.stderr
        again = cli("backup", "--db", str(edge.db), "--to", str(copy))
    finally:
        stop.set()
        loader.join()
    assert "mode 0600" in made.stdout and "key file" in made.stdout
    assert again.returncode == 1 and "already exists" in again.stderr
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert not copy.with_name(copy.name + "-wal").exists()  # one self-contained file
    with closing(sqlite3.connect(copy)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        # Consistent: every event a committed counter says was accepted is in the copy, as a queued
        # event or a delivered one, no more and no less.
        accepted, delivered, queued, in_flight = conn.execute(
            "SELECT accepted, delivered, queued, in_flight FROM counters").fetchone()
        rows = conn.execute("SELECT coalesce(sum(events), 0) FROM queue").fetchone()[0]
    assert accepted >= 200 and accepted == delivered + queued + in_flight and rows == queued + in_flight

    # The README's restore: stop, put the backup (and the key file) in place, start.
    edge.stop()
    for suffix in ("", "-wal", "-shm"):
        edge.db.with_name(edge.db.name + suffix).unlink(missing_ok=True)
    copy.rename(edge.db)
    restored = edge_factory(db=edge.db)
    with restored.admin() as admin:
        assert [s["id"] for s in admin.get("/sources").json()["data"]] == [source["id"]]
        wait_for(lambda: admin.get("/integrations").json()["data"][0]["delivery"]["queued"] == 0,
                 what="the restored queue to drain")


@pytest.mark.process
def test_backup_explains_what_it_cannot_do(tmp_path):
    missing = cli("backup", "--db", str(tmp_path / "none.db"), "--to", str(tmp_path / "b.db"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    pg = cli("backup", "--to", str(tmp_path / "b.db"), SIGNAL_DATABASE_URL="postgresql://u@127.0.0.1:9/db")
    assert pg.returncode == 1 and "pg_dump" in pg.stderr


OLDER = textwrap.dedent("""
    # An older signal-edge: its schema is one migration behind, it keeps the database open and,
    # when told, holds the serving lock as a 0.2 server does (its pid alone in the file).
    import fcntl, os, sqlite3, sys, time
    import delivery.sqlite.migrations as m
    db, hold_lock = sys.argv[1], sys.argv[2] == "lock"
    m.MIGRATIONS = m.MIGRATIONS[:-1]
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    m.migrate(conn)
    if hold_lock:
        fd = os.open(db + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, str(os.getpid()).encode())
    print("ready", flush=True)
    sys.stdin.read()  # until the test closes it
""")


@pytest.mark.process
def test_a_start_refuses_to_migrate_a_database_an_older_version_has_open(tmp_path):
    db = tmp_path / "old.db"
    for hold_lock in ("lock", "no-lock"):  # a 0.2 server holds the lock; a 0.1 one, or a shell, does not
        older = subprocess.Popen([sys.executable, "-c", OLDER, str(db), hold_lock], cwd=ROOT, text=True,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert older.stdout.readline().strip() == "ready"
        try:
            refused = cli("admin-token", "--rotate", "--db", str(db))
            assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
            said = refused.stderr
            assert f"schema version {len(MIGRATIONS) - 1}" in said and "stop, back up" in said
            holder = f"signal-edge before 0.3 (pid {older.pid})" if hold_lock == "lock" else "another process"
            assert holder in said
            if hold_lock == "lock":  # serve is refused by the lock itself, naming the holder
                served = cli("serve", "--db", str(db), "--port", "0", "--admin-port", "0")
                assert served.returncode == 1 and holder in served.stderr and "to upgrade" in served.stderr
            with closing(sqlite3.connect(db)) as conn:
                assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) - 1  # untouched
        finally:
            older.stdin.close()
            older.wait(10)
    upgraded = cli("admin-token", "--rotate", "--db", str(db))  # the old one stopped: the upgrade goes on
    assert upgraded.returncode == 0, upgraded.stderr
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
