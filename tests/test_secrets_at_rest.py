"""Secrets sit apart from what they protect (issue 16): the key in its own 0600 file, the
database files 0600, a copy of the database alone decrypts nothing, and the key rotates."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
import subprocess
import sys

import pytest

from collector.keys import CHECK_META, LEGACY_META, fingerprint
from delivery.secrets import SecretBox
from delivery.sqlite.config_store import SqliteConfigStore
from delivery.sqlite.db import Database
from delivery.store import StorageUnusable
from tests.support import ACCESS_TOKEN, CONVERSION_TOKEN, ROOT, create_integration, create_source


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def meta(db) -> dict[str, str]:
    return dict(sqlite3.connect(db).execute("SELECT key, value FROM meta").fetchall())


def open_with(db, key: str):
    """The config store of `db` opened with `key`, as an attacker with a copy would try."""
    async def main():
        database = Database(str(db))
        database.start()
        try:
            store = SqliteConfigStore(database)
            await store.open(SecretBox(key))
            return store.integrations()
        finally:
            database.close()
    return asyncio.run(main())


@pytest.fixture
def shop_db(edge_factory):
    """A stopped server's database that holds one integration's tokens, and its key file."""
    edge = edge_factory()
    with edge.admin() as admin:
        create_integration(admin, create_source(admin)["id"])
    edge.stop()
    return edge.db, edge.db.with_suffix(".key")


def test_the_key_has_its_own_file_and_every_file_is_0600(edge_factory):
    edge = edge_factory()
    with edge.admin() as admin:
        create_integration(admin, create_source(admin)["id"])
    key_file = edge.db.with_suffix(".key")
    for path in (edge.db, edge.db.with_name(edge.db.name + "-wal"), edge.db.with_name(edge.db.name + "-shm"),
                 key_file):
        assert mode(path) == 0o600, (path, oct(mode(path)))
    key = key_file.read_text().strip()
    edge.stop()
    data = edge.db.read_bytes()
    assert key.encode() not in data and ACCESS_TOKEN.encode() not in data
    assert LEGACY_META not in meta(edge.db)


def test_a_copy_of_the_database_alone_decrypts_nothing(shop_db, tmp_path):
    db, key_file = shop_db
    copy = tmp_path / "stolen.db"
    copy.write_bytes(db.read_bytes())
    # Every value the database holds, tried as the key; and a guess.
    for candidate in [*meta(copy).values(), "guess"]:
        with pytest.raises(StorageUnusable, match="cannot be decrypted"):
            open_with(copy, candidate)
    # With the key file, the tokens open.
    [integration] = open_with(copy, key_file.read_text().strip())
    assert integration.config.access_token == ACCESS_TOKEN


def test_a_key_kept_in_the_database_by_an_older_version_moves_to_its_file(shop_db, edge_factory):
    db, key_file = shop_db
    key = key_file.read_text().strip()
    conn = sqlite3.connect(db)  # the layout of 0.1: the key in meta, no file, no fingerprint
    conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (LEGACY_META, key))
    conn.execute("DELETE FROM meta WHERE key=?", (CHECK_META,))
    conn.commit()
    conn.close()
    key_file.unlink()
    edge = edge_factory(db=db)
    assert key_file.read_text().strip() == key and mode(key_file) == 0o600
    assert LEGACY_META not in meta(db) and CHECK_META in meta(db)
    with edge.admin() as admin:
        [integration] = admin.get("/integrations").json()["data"]
        assert integration["config"]["access_token"] == "pina_****1234"
        assert admin.post(f"/integrations/{integration['id']}/test").json()["ok"]
    assert "moved out of the database" in edge.output()


@pytest.mark.process
def test_a_wrong_or_missing_key_is_refused_in_one_line(shop_db, tmp_path):
    db, key_file = shop_db

    def start(**env):
        run = subprocess.run([sys.executable, "-m", "collector", "serve", "--db", str(db), "--port", "0"],
                             cwd=ROOT, capture_output=True, text=True, timeout=60,
                             env={"PATH": "/usr/bin:/bin", **env})
        return run.returncode, run.stderr.strip()

    code, said = start(SIGNAL_SECRET_KEY="not-the-key")
    assert code == 1 and said.count("\n") == 0 and "Traceback" not in said
    assert "SIGNAL_SECRET_KEY is not the one this database was written with" in said
    key_file.rename(tmp_path / "elsewhere.key")
    code, said = start()
    assert code == 1 and said.count("\n") == 0 and "does not exist" in said and "copy that file" in said


def test_rotate_secret_key_re_encrypts_and_survives_an_interruption(shop_db, edge_factory, tmp_path):
    db, key_file = shop_db
    old = key_file.read_text().strip()
    rotated = subprocess.run([sys.executable, "-m", "collector", "rotate-secret-key", "--db", str(db)],
                             cwd=ROOT, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert rotated.returncode == 0, rotated.stderr
    new = key_file.read_text().strip()
    assert new != old and mode(key_file) == 0o600 and not key_file.with_name(key_file.name + ".new").exists()
    with pytest.raises(StorageUnusable):
        open_with(db, old)
    [integration] = open_with(db, new)
    assert integration.config.conversion_token == CONVERSION_TOKEN

    # A rotation that stopped after re-encrypting, before replacing the file, is finished at start.
    async def interrupted():
        database = Database(str(db))
        database.start()
        try:
            store = SqliteConfigStore(database)
            await store.open(SecretBox(new))
            newer = "an-even-newer-key"
            key_file.with_name(key_file.name + ".new").write_text(newer)
            await store.reseal(SecretBox(newer), {CHECK_META: fingerprint(newer)})
        finally:
            database.close()
    asyncio.run(interrupted())
    edge = edge_factory(db=db)
    assert key_file.read_text().strip() == "an-even-newer-key"
    assert "finished the secret key rotation" in edge.output()
    with edge.admin() as admin:
        assert admin.post(f"/integrations/{admin.get('/integrations').json()['data'][0]['id']}/test").json()["ok"]
