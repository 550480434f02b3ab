"""The smaller holes of issue 24 (item 6): what an admin page shows comes from the server, not
the address; a replay into another source's integration asks for confirmation; credential
writes never put back a refresh token Pinterest has already rotated."""

from __future__ import annotations

import asyncio
import json

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
                assert "Give the Pinterest app&#x27;s id and secret first" in page.text
                assert "app&#x27;s id and secret first" not in (await browser.get(started.headers["location"])).text
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
