"""The smaller holes of issue 24 (item 6): what an admin page shows comes from the server, not
the address; a replay into another source's integration asks for confirmation; credential
writes never put back a refresh token Pinterest has already rotated."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import msgspec

from tests.support import ADMIN_TOKEN, admin_in_process, asgi_client

SOURCE = {"name": "Shop", "client_rate_limit_per_second": 1_000_000, "client_rate_limit_burst": 1_000_000}
CONFIG = {"ad_account_id": "549764982399", "access_token": "pina_TEST_ACCESS_TOKEN_1234"}


async def integration_of(api, source_id: str, **config) -> dict:
    created = await api.post("/v1/admin/integrations", json={
        "source_id": source_id, "vendor": "pinterest", "name": "Pinterest", "enabled": True,
        "config": {**CONFIG, **config}, "consent_categories": []})
    assert created.status_code == 201, created.text
    return created.json()


def test_admin_pages_show_no_text_from_the_address(tmp_path):
    async def main():
        async with admin_in_process(tmp_path) as (_, app):
            async with asgi_client(app) as api, asgi_client(app, token=None) as browser:
                source = (await api.post("/v1/admin/sources", json=SOURCE)).json()
                integration = await integration_of(api, source["id"], app_id="1489999", app_secret="app-secret-0123")
                assert (await browser.post("/login", data={"token": ADMIN_TOKEN})).status_code == 303
                forged = "?connected=1&error=Your+token+leaked%3A+call+%2B1-555-0100+now"
                for path in (f"/integrations/{integration['id']}", "/integrations"):
                    page = await browser.get(path + forged)
                    assert page.status_code == 200
                    assert "now gets its access tokens itself" not in page.text and "leaked" not in page.text and "555" not in page.text
                # What the server itself has to say does show, once: here, connecting without an app.
                bare = await integration_of(api, source["id"])
                started = await browser.get(f"/oauth/pinterest/start?integration_id={bare['id']}")
                assert started.status_code == 303 and "?" not in started.headers["location"]
                page = await browser.get(started.headers["location"])
                assert "Give the Pinterest app&#39;s id and secret first" in page.text
                assert "app&#39;s id and secret first" not in (await browser.get(started.headers["location"])).text
    asyncio.run(main())


def test_a_replay_into_another_sources_integration_needs_confirm_other_source(tmp_path):
    from collector.edge.app import create_edge_app

    async def main():
        async with admin_in_process(tmp_path) as (services, app):
            async with asgi_client(app) as api, asgi_client(create_edge_app(services), token=None) as browser:
                shop, other = [(await api.post("/v1/admin/sources", json={**SOURCE, "name": n})).json()
                               for n in ("Shop", "Another site")]
                first, second = [await integration_of(api, shop["id"]) for _ in range(2)]
                sent = await browser.post("/v1/batch", content=json.dumps({"pipeline_key": shop["pipeline_key"], "batch": [
                    {"type": "track", "event": "Signed Up", "messageId": f"dl-{i}"} for i in range(3)]}))
                assert sent.status_code == 200, sent.text
                for gone in (first, second):  # their queued events become dead letters
                    assert (await api.delete(f"/v1/admin/integrations/{gone['id']}")).status_code == 204
                successor, elsewhere = await integration_of(api, shop["id"]), await integration_of(api, other["id"])

                def replay(topic: str, **body):
                    return api.post(f"/v1/admin/integrations/{topic}/dead-letters/replay", json=body)

                refused = await replay(first["id"], into=elsewhere["id"])
                assert refused.status_code == 400
                error = refused.json()["error"]
                assert error["field"] == "confirm_other_source" and "another site's ad account" in error["message"]
                assert (await replay(first["id"], into=successor["id"])).json() == {"replayed": 3}  # same source
                confirmed = await replay(second["id"], into=elsewhere["id"], confirm_other_source=True)
                assert confirmed.json() == {"replayed": 3}
                audit = (await api.get("/v1/admin/audit-log")).json()["data"]
                assert [a["new"].get("into") for a in audit if a["action"] == "replay"] == [elsewhere["id"], successor["id"]]
    asyncio.run(main())


def test_an_admin_patch_during_a_token_refresh_keeps_the_rotated_refresh_token(tmp_path, fake_pinterest):
    """The PATCH reads the integration, then its body arrives slowly; meanwhile a refresh rotates
    the refresh token at Pinterest. The PATCH must not write the used token back (Pinterest
    would refuse the next refresh: the integration would silently disconnect)."""
    fake_pinterest.sandbox.add_app("1489999", "app-secret-0123")
    first = fake_pinterest.sandbox.grant("1489999")

    async def main():
        env = {"SIGNAL_PINTEREST_API_BASE": fake_pinterest.url}
        async with admin_in_process(tmp_path, env) as (services, app):
            async with asgi_client(app) as api:
                source = (await api.post("/v1/admin/sources", json=SOURCE)).json()
                integration = await integration_of(api, source["id"], access_token=None, app_id="1489999",
                                                   app_secret="app-secret-0123", refresh_token=first)
                reading, arrived = asyncio.Event(), asyncio.Event()

                async def slow_body():
                    yield b'{"name": '
                    reading.set()  # the handler has the integration it read before the body
                    await arrived.wait()
                    yield b'"Renamed"}'

                patch = asyncio.create_task(api.patch(f"/v1/admin/integrations/{integration['id']}", content=slow_body(),
                                                      headers={"Content-Type": "application/json"}))
                await reading.wait()
                refreshed = await services.delivery.tokens.refresh(integration["id"], force=True)
                assert refreshed.config.refresh_token != first and first not in fake_pinterest.sandbox.state.refresh_tokens
                arrived.set()
                assert (await patch).status_code == 200

                stored = await services.store.reload_integration(integration["id"])
                assert stored.name == "Renamed" and stored.config.refresh_token == refreshed.config.refresh_token
                again = await services.delivery.tokens.refresh(integration["id"], force=True)  # Pinterest takes it
                assert again.config.refresh_token in fake_pinterest.sandbox.state.refresh_tokens
    asyncio.run(main())


async def until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_the_notification_channel_is_sealed_against_other_database_roles(tmp_path, pg_url):
    """Any role that can connect may LISTEN and NOTIFY on any channel: it must read nothing of
    the live debugger's events or the visitors' ids, and what it sends must not be believed."""
    import asyncpg

    from delivery.config import Source
    from delivery.events import Identity
    from delivery.postgres.db import CHANNEL
    from delivery.store import DebugRecord, StoredIdentity

    role = "intruder_" + uuid.uuid4().hex[:8]

    async def main():
        owner = await asyncpg.connect(pg_url)
        await owner.execute(f"CREATE ROLE {role} LOGIN")
        intruder = await asyncpg.connect(pg_url.replace("postgres@", f"{role}@"))
        heard: list[str] = []
        await intruder.add_listener(CHANNEL, lambda _c, _pid, _ch, payload: heard.append(payload))
        env = {"SIGNAL_SECRET_KEY": "a-shared-secret-key-0123456789"}
        async with admin_in_process(tmp_path / "a", env, pg_url) as (a, _), \
                admin_in_process(tmp_path / "b", env, pg_url) as (b, _):
            forged = DebugRecord(at=time.time(), source_id="src_x", event_id="forged-event", event="Signed Up",
                                 status="delivered")
            sent = ["watch:evil-node", "debug:evil-node:" + msgspec.json.encode(forged).decode()]
            await intruder.execute("SELECT pg_notify($1, $2), pg_notify($1, $3)", CHANNEL, *sent)
            # A genuine change after them: once B has it, B has dealt with the forged ones too.
            await a.store.put_source(Source(id="src_sync", name="Sync", pipeline_key="dk_sync", created_at=1.0,
                                            updated_at=1.0), "create")
            await until(lambda: b.store.source("src_sync") is not None)
            assert b.hub.remote_watch_until == 0.0  # nobody watches, whatever the intruder says

            watcher = a.hub.subscribe()
            await until(lambda: b.hub.remote_watch_until > time.monotonic())  # A's own announcement
            b.hub.publish([DebugRecord(at=time.time(), source_id="src_sync", event_id="evt-real", event="Signed Up",
                                       status="delivered", integration_id="int_sync", payload=msgspec.Raw(
                                           b'{"user_data":{"client_ip_address":"203.0.113.77"}}'))])
            assert (await asyncio.wait_for(watcher.get(), 10)).event_id == "evt-real"
            assert watcher.empty()  # the forged record never reached the live debugger

            assert await a.store.identity("dfid-visitor-123") is None  # cached as absent
            await b.store.save_identity("dfid-visitor-123", StoredIdentity("user-9", Identity()))
            await until(lambda: a.store.cached_identity("dfid-visitor-123") is a.store.MISSING)
        await intruder.execute("SELECT 1")  # every notification sent so far has been read
        theirs = [p for p in heard if p not in sent]
        assert theirs
        for secret in ("evt-real", "203.0.113.77", "dfid-visitor-123", "src_sync", "watch:", "debug:", "identity:"):
            assert not any(secret in payload for payload in theirs), secret
        await intruder.close()
        await owner.close()
    asyncio.run(main())


def test_a_full_reload_never_loses_a_change_made_while_it_reads(pg_url):
    """A node's first full reload (when it starts listening) reads everything; a source created
    through that node meanwhile, and another node's change heard meanwhile, must survive it."""
    from delivery.config import Source
    from delivery.postgres.config_store import PgConfigStore
    from delivery.postgres.db import PgDatabase
    from delivery.secrets import SecretBox

    def source(source_id: str, name: str) -> Source:
        return Source(id=source_id, name=name, pipeline_key=f"dk_{source_id}", created_at=1.0, updated_at=1.0)

    async def main():
        dbs = [PgDatabase(pg_url, pool_size=2) for _ in range(2)]
        try:
            a, b = PgConfigStore(dbs[0], "node-a"), PgConfigStore(dbs[1], "node-b")
            for db in dbs:
                await db.start()
            await a.open(SecretBox("k"))
            await a.put_source(source("src_old", "Old name"), "create")
            await b.open(SecretBox("k"))
            read, release, reloaded = asyncio.Event(), asyncio.Event(), asyncio.Event()
            load, reload_all = a._load, a._reload_all

            async def held_load():
                bodies = await load()
                read.set()
                await release.wait()
                return bodies

            async def reload_and_tell():
                await reload_all()
                reloaded.set()

            a._load, a._reload_all = held_load, reload_and_tell
            a.listen()
            await read.wait()
            await a.put_source(source("src_new", "Created on A"), "create")
            await b.put_source(source("src_old", "New name"), "update")
            await until(lambda: a.source("src_old").name == "New name")
            release.set()
            await reloaded.wait()
            assert a.source("src_new") is not None, "the source created during the reload vanished"
            assert a.source("src_old").name == "New name", "the reload put back the older name"
        finally:
            for db in dbs:
                await db.close()
    asyncio.run(main())
