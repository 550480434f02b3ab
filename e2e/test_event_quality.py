"""Pinterest's Event Quality Score on the integration's page (issue 26), in Debian's Chromium: the
panel renders what the sandbox computed from the events it received, beside our own match panel,
and a token that cannot read it shows what to do instead of an error."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from e2e.ui import assert_accessible, assert_nothing_cut_off, login, shot
from tests.support import AD_ACCOUNT, create_integration, create_source, post_batch, stats, wait_for

READER = "pina_READS_AND_WRITES_0001"


def test_the_panel_renders_the_sandboxs_score(browser, edge, fake_pinterest):
    fake_pinterest.sandbox.add_token(READER, scopes=("ads:read", "ads:write"))
    with edge.admin() as api:
        source = create_source(api)
        reading = create_integration(api, source["id"], name="Reads the score", config={"access_token": READER})
        sending = create_integration(api, source["id"], name="Sends only")  # its tokens lack ads:read
        orders = [{"type": "track", "event": "Order Completed", "messageId": f"order-{i}",
                   "properties": {"order_id": f"O-{i}", "total": 20, "currency": "USD"},
                   "context": {"traits": {"email": f"buyer{i}@example.com"} if i else {}}} for i in range(3)]
        assert post_batch(edge.url, source["pipeline_key"], orders).status_code == 200
        wait_for(lambda: stats(api, reading["id"])["delivered"] == 3, what="the orders")
    fake_pinterest.sandbox.add_tag_events(AD_ACCOUNT, ["order-0"])  # the site's Pinterest Tag sent one of them too

    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)  # axe is injected inline
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        login(page, edge.admin_url, f"/integrations/{reading['id']}")
        panel = page.locator("#event-quality")
        expect(panel).to_contain_text("Read from Pinterest")
        expect(panel.get_by_role("heading", name="Last day")).to_be_visible()
        expect(panel.get_by_role("heading", name="Last 14 days")).to_be_visible()
        day = panel.get_by_role("table", name="Last day, WEB")
        expect(day.get_by_role("row", name=re.compile("Email \\(hashed\\)"))).to_contain_text("checkout 66.7%")
        expect(day.get_by_role("row", name=re.compile("Order id"))).to_contain_text("checkout 100%")
        expect(day.get_by_role("row", name=re.compile("Click id"))).to_contain_text("Low coverage: Only 0% of checkout")
        expect(panel.locator(".eqs-status").first).to_contain_text("WEB: Fair")  # 2 of 3 with an email, no click id
        expect(panel.locator(".eqs-overlap").first).to_contain_text("Pinterest Tag sent too (counted once): checkout 33.3%")
        # beside our own estimate
        expect(page.locator(".pair").get_by_role("heading", name="Match quality")).to_be_visible()
        assert fake_pinterest.sandbox.state.eqs_reads == 2  # read once, for both periods
        page.get_by_role("button", name="Read it again now").click()
        expect(page.locator("#status")).to_contain_text("Event Quality Score read.")
        shot(page, "event-quality-1280")
        assert_accessible(page)

        page.goto(f"{edge.admin_url}/integrations/{sending['id']}")
        problem = page.locator("#eqs-problem")
        expect(problem).to_contain_text("lacks the ads:read scope")
        expect(problem).to_contain_text("Connect with Pinterest again")
        expect(page.locator("#event-quality")).to_contain_text("Pinterest said: You are not permitted")

        page.set_viewport_size({"width": 375, "height": 900})
        page.goto(f"{edge.admin_url}/integrations/{reading['id']}")
        expect(page.locator("#event-quality")).to_contain_text("checkout 66.7%")
        shot(page, "event-quality-375")
        assert_nothing_cut_off(page, 375)
        assert errors == []
    finally:
        context.close()
