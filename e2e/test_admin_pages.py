"""Every admin page, at 1280 px and at 375 px, with data in it (a 200-character name, refusals,
a dead letter, debugger rows): a screenshot of each in e2e/artifacts/ui/, nothing cut off or
squeezed a character per line, and no serious or critical axe-core violation."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from e2e.ui import assert_accessible, assert_every_control_is_labelled, assert_nothing_cut_off, login, shot
from tests.support import create_integration, create_source, post_batch, stats, wait_for

LONG = ("A very long shop name that goes on and on " * 5)[:200]


@pytest.fixture
def pages(edge, fake_pinterest):
    """The pages to look at, with something on each."""
    with edge.admin() as api:
        source = create_source(api, name=LONG, domain="shop.example")
        integration = create_integration(api, source["id"], name=LONG, variant="retail")
        gone = create_integration(api, source["id"], name="Deleted one")
        held = create_integration(api, source["id"], name="Paused one")
        for paused in (gone, held):
            api.patch(f"/integrations/{paused['id']}", json={"paused": True})
        fake_pinterest.sandbox.state.failing_event_ids["dead-1"] = "event_time is invalid."
        post_batch(edge.url, source["pipeline_key"], [
            {"type": "track", "event": "Order Completed", "messageId": "dead-1", "properties": {"total": 9.5}},
            {"type": "track", "event": "Product Added", "messageId": "ok-1"}, {"type": "track"}],
            headers={"Origin": "https://shop.example"})
        post_batch(edge.url, source["pipeline_key"], [{"type": "page"}], headers={"Origin": "https://elsewhere.example"})
        wait_for(lambda: stats(api, integration["id"])["dead_lettered"] == 1, what="a dead letter")
        assert api.delete(f"/integrations/{gone['id']}").status_code == 204  # its queued event: a dead letter
        hook = api.post("/alerts/destinations", json={"name": LONG, "url": fake_pinterest.url + "/no-hook"}).json()
        assert api.post(f"/alerts/destinations/{hook['id']}/test").json()["ok"] is False  # a failed row
    return {
        "login": "/login",
        "integrations": "/integrations",
        "add-integration": "/integrations/new",
        "integration": f"/integrations/{integration['id']}",
        "deleted-integration": f"/integrations/{gone['id']}",
        "sources": "/sources",
        "source": f"/sources/{source['id']}",
        "debugger": "/debugger",
        "debugger-queued": "/debugger?status=queued",
        "alerts": "/alerts",
        "erasure": "/erasure",
        "not-found": "/no-such-page",
    }


@pytest.mark.parametrize("width", [1280, 375])
def test_every_page_is_whole_labelled_and_accessible(browser, edge, pages, width):
    context = browser.new_context(viewport={"width": width, "height": 900}, bypass_csp=True)  # axe is injected inline
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(edge.admin_url + pages["login"])
        look_at(page, "login", width)
        login(page, edge.admin_url)
        for name, path in pages.items():
            if name == "login":
                continue
            page.goto(edge.admin_url + path)
            ready(page, name)
            look_at(page, name, width)
        assert errors == []
    finally:
        context.close()


def ready(page, name: str) -> None:
    """Wait for what the page's script loads."""
    if name in ("integration", "deleted-integration"):
        expect(page.locator("#dead-letters")).to_contain_text("failed for good")
    if name == "integration":
        expect(page.locator("#mapping table")).to_be_visible()
        expect(page.locator("#event-quality")).not_to_contain_text("Loading")
    if name == "source":
        expect(page.locator("#refusals")).to_contain_text("origin_not_allowed")
    if name.startswith("debugger"):
        expect(page.locator("#events tbody tr").first).to_be_visible()
    if name == "add-integration":
        expect(page.locator("#variants input")).to_have_count(4)
    if name == "alerts":
        expect(page.locator("#history")).to_contain_text("failed: HTTP 404")  # the failed test alert
        expect(page.locator("#destinations table")).to_be_visible()


def look_at(page, name: str, width: int) -> None:
    shot(page, f"page-{name}-{width}")
    assert_nothing_cut_off(page, width)
    assert_every_control_is_labelled(page)
    assert_accessible(page)
