"""Operator safety (issue 24, item 5): a weak admin token is refused, the admin throttle never
refuses the right token and sees clients through trusted proxies, `copy` is all or nothing,
and a secret key rotation writes the new key down first and refuses while a node serves."""

from __future__ import annotations

import asyncio

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
    async def main():
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
    asyncio.run(main())


def test_the_session_cookie_is_secure_when_a_trusted_proxy_says_https(tmp_path):
    async def main():
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
    asyncio.run(main())


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

