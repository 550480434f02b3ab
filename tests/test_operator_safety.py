"""Operator safety (issue 24, item 5): a weak admin token is refused, the admin throttle never
refuses the right token and sees clients through trusted proxies, `copy` is all or nothing,
and a secret key rotation writes the new key down first and refuses while a node serves."""

from __future__ import annotations

import asyncio
import io
import sys
import time

import pytest

from collector.cli import main
from collector.settings import SettingsError, load_settings
from tests.support import ADMIN_TOKEN, admin_in_process, asgi_client


@pytest.mark.parametrize("token", ["abc", "sea_" + "a" * 40, "0123456789" * 4, "short_but_varied_9X!"])
def test_a_weak_admin_token_is_refused_with_what_makes_a_good_one(token, tmp_path, monkeypatch, capsys):
    with pytest.raises(SettingsError, match=r"SIGNAL_ADMIN_TOKEN: too weak .* at least 32 random characters"):
        load_settings({}, environ={"SIGNAL_ADMIN_TOKEN": token})
    monkeypatch.setenv("SIGNAL_ADMIN_TOKEN", token)
    assert main(["serve", "--db", str(tmp_path / "weak.db")]) == 2
    said = capsys.readouterr().err.strip()
    assert said.count("\n") == 0 and "openssl rand -base64 32" in said and "leave it unset" in said
    assert not (tmp_path / "weak.db").exists()  # refused before anything was created


def test_a_random_admin_token_is_taken():
    for token in ("sea_test_admin_token_0123456789abcdef", "Yq3v0Zb9kP2mXw7sT1rN5aJ8cL4dF6gH0eU2iO9p"):
        assert load_settings({}, environ={"SIGNAL_ADMIN_TOKEN": token}).admin_token == token


PROXY = "127.0.0.1"  # a trusted proxy (SIGNAL_TRUSTED_PROXIES' default)


def test_the_throttle_never_refuses_the_right_token_and_sees_clients_through_the_proxy(tmp_path):
    async def scenario():
        async with admin_in_process(tmp_path) as (_, app):
            def behind_proxy(address: str, token: str | None):
                return asgi_client(app, PROXY, token, **{"X-Forwarded-For": address})

            async with behind_proxy("203.0.113.7", "sea_wrong_token") as guesser:
                statuses = [(await guesser.get("/v1/admin/sources")).status_code for _ in range(21)]
            assert statuses[:20] == [401] * 20 and statuses[20] == 429
            # The same address with the right token: an admin on the guesser's network (or one who mistyped).
            async with behind_proxy("203.0.113.7", ADMIN_TOKEN) as admin:
                assert (await admin.get("/v1/admin/sources")).status_code == 200
                assert (await admin.post("/login", data={"token": ADMIN_TOKEN})).status_code == 303
            # Another client behind the same proxy is not throttled for the guesser's mistakes...
            async with behind_proxy("198.51.100.4", "sea_also_wrong") as other:
                assert (await other.get("/v1/admin/sources")).status_code == 401
            # ...and the guesser stays throttled, on the API and at the login form.
            async with behind_proxy("203.0.113.7", None) as guesser:
                assert (await guesser.post("/login", data={"token": "sea_wrong_again"})).status_code == 429
            # A client that is not a trusted proxy cannot choose its address.
            async with asgi_client(app, "192.0.2.50", "sea_wrong", **{"X-Forwarded-For": "198.51.100.99"}) as direct:
                for _ in range(20):
                    await direct.get("/v1/admin/sources")
            async with behind_proxy("198.51.100.99", "sea_wrong") as innocent:
                assert (await innocent.get("/v1/admin/sources")).status_code == 401
    asyncio.run(scenario())


def test_the_session_cookie_is_secure_when_a_trusted_proxy_says_https(tmp_path):
    async def scenario():
        async with admin_in_process(tmp_path) as (_, app):
            async def cookie(peer: str, **headers) -> str:
                async with asgi_client(app, peer, None, **headers) as browser:
                    answer = await browser.post("/login", data={"token": ADMIN_TOKEN})
                    assert answer.status_code == 303
                    return answer.headers["set-cookie"]

            assert "secure" in (await cookie(PROXY, **{"X-Forwarded-Proto": "https"})).lower()
            assert "secure" not in (await cookie(PROXY)).lower()
            # Only a trusted proxy is believed: a client cannot claim https.
            assert "secure" not in (await cookie("192.0.2.50", **{"X-Forwarded-Proto": "https"})).lower()
    asyncio.run(scenario())


def test_an_interrupted_copy_leaves_a_database_that_no_node_starts_on(tmp_path, postgres, pg_url, monkeypatch, capsys):
    import collector.copy as copy
    from collector.services import close_database, open_backend
    from delivery.store import StorageUnusable

    async def sqlite_deployment():
        async with admin_in_process(tmp_path) as (_, app):
            async with asgi_client(app) as api:
                assert (await api.post("/v1/admin/sources", json={"name": "Shop"})).status_code == 201

    async def cut(*_):  # the copy's process dies, or its connection, once the tables are in
        raise ConnectionResetError("connection lost")

    asyncio.run(sqlite_deployment())
    settings = load_settings({"db": str(tmp_path / "admin.db")}, environ={})
    with monkeypatch.context() as patched:
        patched.setattr(copy, "_copy_queue", cut)
        with pytest.raises(ConnectionResetError):
            asyncio.run(copy.copy_deployment(settings, pg_url))

    target = load_settings({"database_url": pg_url}, environ={})
    with pytest.raises(StorageUnusable, match=r"holds an unfinished `signal-edge copy` .* then run the copy again"):
        asyncio.run(open_backend(target, "node-a"))
    monkeypatch.setenv("SIGNAL_ADMIN_TOKEN", ADMIN_TOKEN)
    for argv in (["serve", "--database-url", pg_url], ["copy", "--from", str(tmp_path / "admin.db"), "--to", pg_url]):
        assert main(argv) == 1
        said = capsys.readouterr().err.strip().splitlines()[-1]
        assert "unfinished `signal-edge copy`" in said and "dropdb, createdb" in said

    # Copied again into a fresh database, to the end: nodes start on it.
    fresh = postgres.create_database()
    assert asyncio.run(copy.copy_deployment(settings, fresh)) == 0

    async def opens():
        db, store, _ = await open_backend(load_settings({"database_url": fresh}, environ={}), "node-a")
        await close_database(db)
    asyncio.run(opens())



def test_rotation_with_the_key_in_the_environment_writes_the_new_key_down_before_re_sealing(tmp_path, monkeypatch):
    """With SIGNAL_SECRET_KEY the new key used to be printed, once, after the tokens were
    re-encrypted with it: a terminal that had gone away lost every stored token."""
    from collector.services import open_services
    from delivery.store import StorageUnusable
    from tests.test_secrets_at_rest import mode, open_with

    old = "the-old-secret-key-0123456789abcdef"

    async def deployment():
        async with admin_in_process(tmp_path, {"SIGNAL_SECRET_KEY": old}) as (_, app):
            async with asgi_client(app) as api:
                source = (await api.post("/v1/admin/sources", json={"name": "Shop"})).json()
                assert (await api.post("/v1/admin/integrations", json={
                    "source_id": source["id"], "vendor": "pinterest", "name": "Pinterest", "enabled": True,
                    "config": {"ad_account_id": "549764982399", "access_token": "pina_KEPT_TOKEN_1234"},
                    "consent_categories": []})).status_code == 201

    asyncio.run(deployment())
    db = tmp_path / "admin.db"
    gone = io.StringIO()
    gone.close()
    with monkeypatch.context() as patched:
        patched.setenv("SIGNAL_SECRET_KEY", old)
        patched.setattr(sys, "stdout", gone)  # the operator's terminal went away
        try:
            main(["rotate-secret-key", "--db", str(db)])
        except ValueError:  # printing to it failed
            pass

    written = tmp_path / "admin.key.new"
    assert written.exists() and mode(written) == 0o600
    new = written.read_text().strip()
    [integration] = open_with(db, new)
    assert integration.config.access_token == "pina_KEPT_TOKEN_1234"
    with pytest.raises(StorageUnusable):
        open_with(db, old)

    async def start(key: str):
        settings = load_settings({"db": str(db)}, environ={"SIGNAL_SECRET_KEY": key, "SIGNAL_ADMIN_TOKEN": ADMIN_TOKEN})
        services = await open_services(settings)
        await services.close()
    with pytest.raises(StorageUnusable, match=r"SIGNAL_SECRET_KEY holds the key from before the rotation: .*admin\.key\.new"):
        asyncio.run(start(old))
    asyncio.run(start(new))


def test_rotation_refuses_while_any_node_serves(edge_factory, pg_url, tmp_path, monkeypatch, capsys):
    from tests.support import create_integration, create_source

    sqlite_node = edge_factory()
    assert main(["rotate-secret-key", "--db", str(sqlite_node.db)]) == 1
    assert "already serves" in capsys.readouterr().err
    sqlite_node.stop()

    key_file = tmp_path / "cluster.key"
    env = {"SIGNAL_DATABASE_URL": pg_url, "SIGNAL_SECRET_KEY_FILE": str(key_file)}
    node = edge_factory(env=env)
    with node.admin() as admin:
        integration = create_integration(admin, create_source(admin)["id"])
    old = key_file.read_text()
    monkeypatch.setenv("SIGNAL_SECRET_KEY_FILE", str(key_file))
    assert main(["rotate-secret-key", "--database-url", pg_url]) == 1
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert "signal-edge still serves" in said and "stop every node first" in said and f"-{node.proc.pid}-" in said
    assert key_file.read_text() == old and not key_file.with_name("cluster.key.new").exists()
    with node.admin() as admin:  # the node still opens its tokens
        assert admin.post(f"/integrations/{integration['id']}/test").json()["ok"]
    node.stop()

    assert main(["rotate-secret-key", "--database-url", pg_url]) == 0
    assert key_file.read_text() != old
    again = edge_factory(env=env)
    with again.admin() as admin:
        assert admin.post(f"/integrations/{integration['id']}/test").json()["ok"]


def test_a_node_never_serves_with_a_key_a_rotation_replaced(pg_url, monkeypatch):
    """A node that starts while a rotation runs waits for it, then reads the new key's
    fingerprint; a node whose lock's connection is lost takes the lock again; and one that
    missed a rotation meanwhile cannot seal tokens with the old key."""
    import asyncpg

    from delivery.config import Health
    from delivery.postgres import serving as serving_module
    from delivery.postgres.serving import ServingLock, serving_stopped
    from delivery.secrets import CHECK_META, SecretBox, fingerprint
    from delivery.store import StorageError, StorageUnusable
    from tests.test_config_store import integration, source

    async def scenario():
        async with serving_stopped(pg_url):
            late = ServingLock(pg_url, "late-node")
            with pytest.raises(StorageUnusable, match="rotation .* has held this database"):
                await late.hold(wait=0.5)
        serving = ServingLock(pg_url, "node-a")
        await serving.hold()
        owner = await asyncpg.connect(pg_url)
        try:
            with pytest.raises(StorageUnusable, match="still serves .*node-a"):
                async with serving_stopped(pg_url):
                    pass
            holder = ("SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
                      "AND l.objid = $1 AND l.granted AND a.application_name = 'signal-edge node node-a'")
            lost = await owner.fetchval(holder, serving_module.LOCK)
            await owner.execute("SELECT pg_terminate_backend($1)", lost)  # an administrator, or a network cut
            deadline = time.monotonic() + 3 * serving_module.PING
            while await owner.fetchval(holder, serving_module.LOCK) in (None, lost):
                assert time.monotonic() < deadline, "the serving lock was not taken again"
                await asyncio.sleep(0.05)
        finally:
            await owner.close()
            await serving.close()

        from collector.services import close_database, open_backend
        db, store, _ = await open_backend(load_settings({"database_url": pg_url}, environ={}), "node-a")
        try:
            await store.init_meta(CHECK_META, fingerprint("key-one"))
            await store.open(SecretBox("key-one"))
            await store.put_source(source(), "create")
            await store.put_integration(integration(), "create")
            await store.set_meta(CHECK_META, fingerprint("key-two"))  # rotated behind this node's back
            with pytest.raises(StorageError, match="secret key was rotated since this node started"):
                await store.set_health("int_001", Health("unhealthy", "unauthorized", "Authentication failed.", 1.0))
        finally:
            await close_database(db)
    monkeypatch.setattr(serving_module, "PING", 0.3)
    asyncio.run(scenario())
