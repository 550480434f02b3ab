"""The admin UI's pages (issue 30, item 5), in process: every page renders from its template with
what a stranger may have typed escaped, and every element a page's scripts ask for by name
(hook("...") in static/admin/*.js) is on the page (data-hook="..." in its template)."""

from __future__ import annotations

import asyncio
import re
import time

from delivery.queue import QueueItem
from tests.support import ADMIN_TOKEN, ROOT, admin_in_process, asgi_client

STATIC = ROOT / "static" / "admin"
HOSTILE = '<img src=x onerror="alert(1)">'


def hooks_needed(script: str, seen: set[str] | None = None) -> set[str]:
    """The hooks `script` and the modules it imports require (hookIfAny(...) ones are optional)."""
    seen = set() if seen is None else seen
    if script in seen:
        return set()
    seen.add(script)
    text = (STATIC / script).read_text()
    needed = set(re.findall(r'\bhook\("([^"]+)"\)', text))
    for imported in re.findall(r'from "\./([^"]+\.js)"', text):
        needed |= hooks_needed(imported, seen)
    return needed


def test_every_page_renders_escaped_with_the_hooks_its_scripts_use(tmp_path):
    async def main():
        async with admin_in_process(tmp_path) as (services, app):
            async with asgi_client(app) as api, asgi_client(app, token=None) as browser:
                source = (await api.post("/v1/admin/sources", json={"name": HOSTILE})).json()
                body = {"source_id": source["id"], "vendor": "pinterest", "name": HOSTILE,
                        "config": {"ad_account_id": "549764982399", "access_token": "pina_TEST_TOKEN_1234"}}
                integration = (await api.post("/v1/admin/integrations", json=body)).json()
                gone = (await api.post("/v1/admin/integrations", json={**body, "name": f"{HOSTILE} gone"})).json()
                empty = (await api.post("/v1/admin/integrations", json={**body, "name": "Held nothing"})).json()
                await services.queue.append([QueueItem(gone["id"], b'["held-1"]', time.time())])
                for deleted in (gone, empty):  # what `gone` held becomes its dead letters
                    assert (await api.delete(f"/v1/admin/integrations/{deleted['id']}")).status_code == 204
                assert (await browser.post("/login", data={"token": ADMIN_TOKEN})).status_code == 303
                pages = ["/integrations", "/integrations/new", f"/integrations/{integration['id']}", "/sources",
                         f"/sources/{source['id']}", "/debugger", "/alerts", "/erasure", f"/integrations/{gone['id']}"]
                checked = set()
                for path in pages:
                    page = await browser.get(path)
                    assert page.status_code == 200, (path, page.text[-500:])
                    assert HOSTILE not in page.text and "<img" not in page.text, path
                    present = set(re.findall(r'data-hook="([^"]+)"', page.text))
                    for script in re.findall(r'(?:src="/static/admin/|data-script=")([^"]+\.js)"', page.text):
                        missing = hooks_needed(script) - present
                        assert not missing, f"{path}: {script} needs data-hook {sorted(missing)}"
                        checked.add(script)
                modules = {"api.js", "dead-letters.js", "event-quality.js", "deployment.js"}  # imported by the others
                assert checked == {p.name for p in STATIC.glob("*.js")} - modules
                assert "<h1>Deleted integration &lt;img" in (await browser.get(f"/integrations/{gone['id']}")).text
                missing = await browser.get(f"/integrations/{empty['id']}")  # deleted, holding nothing
                assert missing.status_code == 404 and "Integration not found" in missing.text

    asyncio.run(main())
