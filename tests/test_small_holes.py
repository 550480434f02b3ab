"""The smaller holes of issue 24 (item 6): what an admin page shows comes from the server, not
the address; a replay into another source's integration asks for confirmation; credential
writes never put back a refresh token Pinterest has already rotated."""

from __future__ import annotations

import asyncio

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
