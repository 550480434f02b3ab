"""The admin UI in Debian's Chromium against a live signal-edge (issue 7).

Screenshots of every screen go to e2e/artifacts/ui/.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from e2e.conftest import STUB
from e2e.ui import assert_every_control_is_labelled, login, shot
from tests.support import create_integration, create_source

PURCHASE_JS = """_df.track("Order Completed", {order_id: "ORD-UI-1", total: 129.99, currency: "USD",
  products: [{product_id: "SKU-A", name: "Widget", price: 49.99, quantity: 2},
             {product_id: "SKU-B", name: "Gadget", price: 30.01, quantity: 1}]});"""


def test_seed_ui_setup_then_a_purchase_shows_in_the_live_debugger(page, edge, fake_pinterest, site):
    fake_pinterest.sandbox.add_token("pina_UI_ACCESS_TOKEN_0001")
    fake_pinterest.sandbox.add_token("ct_UI_CONVERSION_TOKEN_0001")
    admin = edge.admin_url
    page.goto(admin + "/login")
    shot(page, "01-login")
    login(page, admin)
    shot(page, "02-integrations-empty")

    # Sources: create one, see its snippet.
    page.get_by_role("link", name="Sources").click()
    page.get_by_label("Name").fill("My shop")
    page.get_by_label("Default country").fill("US")
    page.get_by_role("button", name="Create source").click()
    expect(page.get_by_role("heading", name="My shop")).to_be_visible()
    snippet = page.get_by_label("Snippet").input_value()
    key = re.search(r'data-pipeline-key="([^"]+)"', snippet).group(1)
    assert f"{edge.url.replace('127.0.0.1', 'localhost')}/d.js" in snippet or "/d.js" in snippet
    assert_every_control_is_labelled(page)
    shot(page, "03-source")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Rotate pipeline key").click()
    expect(page.locator("#pipeline-key")).not_to_have_text(key)
    key = page.locator("#pipeline-key").inner_text()

    # The seed's "Management UI Setup": Integrations > Add Integration > Pinterest Conversions API >
    # variant > the three credentials > consent categories > Save.
    page.get_by_role("link", name="Integrations").click()
    page.get_by_role("link", name="Add Integration").click()
    expect(page.get_by_label("Pinterest Conversions API")).to_be_checked()
    page.get_by_label(re.compile(r"^Retail")).check()
    page.get_by_label("Ad Account ID").fill("549764982399")
    page.get_by_label("API access token").fill("pina_UI_ACCESS_TOKEN_0001")
    page.get_by_label("Conversion access token").fill("ct_UI_CONVERSION_TOKEN_0001")
    expect(page.get_by_label("advertising")).to_be_checked()
    assert page.get_by_text("E-commerce focused with checkout").is_visible()
    assert_every_control_is_labelled(page)
    shot(page, "04-add-integration")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".badge.healthy")).to_be_visible(timeout=10_000)
    expect(page.locator("#test-result")).to_contain_text("Pinterest accepted the test event")
    shot(page, "05-integration-healthy")

    page.get_by_role("link", name="Integrations").click()
    row = page.get_by_role("row", name=re.compile("Pinterest Conversions API"))
    expect(row).to_contain_text("Retail")
    expect(row.locator(".badge")).to_have_text("healthy")
    shot(page, "06-integrations-listed")

    # The debugger is open; a purchase on the shop appears as delivered without a reload.
    page.get_by_role("link", name="Debugger").click()
    expect(page.locator("#live-state")).to_contain_text("Live", timeout=5000)
    shop = page.context.new_page()
    shop.goto(site.page("/checkout", "<h1>Thanks</h1>", edge.url, key, head=STUB))
    shop.wait_for_function("() => window._df && !Array.isArray(window._df)")
    shop.evaluate(PURCHASE_JS)
    delivered = page.locator("#events tr[data-status=delivered]", has_text="Order Completed")
    expect(delivered).to_be_visible(timeout=5000)
    expect(delivered).to_contain_text("checkout")
    shot(page, "07-debugger-live")
    page.get_by_label("Status").select_option("failed")
    expect(page.locator("#events tbody tr")).to_have_count(0)
    page.get_by_label("Status").select_option("delivered")
    expect(delivered).to_be_visible()
    expect(page).to_have_url(re.compile(r"status=delivered"))
    page.get_by_label("Integration").select_option(label="Pinterest Conversions API")
    expect(delivered).to_be_visible()
    delivered.get_by_role("button").click()
    expect(page.locator("#detail")).to_contain_text('"value": "129.99"')
    expect(page.locator("#detail")).to_contain_text("Incoming event (PII hashed)")
    shot(page, "08-debugger-detail")

    # Match quality on the integration page now has data.
    page.get_by_role("link", name="Integrations").click()
    page.get_by_role("link", name="Pinterest Conversions API").click()
    expect(page.locator("#match-quality .meter")).to_have_count(5)
    expect(page.locator("#count-delivered")).not_to_have_text("0")
    shot(page, "09-integration-match-quality")


def test_a_wrong_token_shows_the_401_explanation(page, edge, fake_pinterest):
    with edge.admin() as api:
        source = create_source(api)
        integration = create_integration(api, source["id"], name="Expired",
                                         config={"access_token": "pina_EXPIRED", "conversion_token": "ct_EXPIRED"})
    login(page, edge.admin_url)
    page.goto(f"{edge.admin_url}/integrations/{integration['id']}")
    page.get_by_role("button", name="Send test event").click()
    # Each credential is tried on its own, and the explanation is given once, in Health.
    expect(page.locator("#test-result")).to_contain_text("The conversion token and the API access token failed.")
    expect(page.locator("#test-result li")).to_have_count(2)
    expect(page.locator("#test-result")).to_contain_text("Conversion access token: refused: 401")
    expect(page.locator(".badge.unhealthy")).to_be_visible()
    expect(page.locator("#health-explanation")).to_contain_text("expired or been revoked")
    assert page.content().count("expired or been revoked") == 1
    shot(page, "10-integration-401")


def test_dead_letters_replay_and_edit_from_the_integration_page(page, edge, fake_pinterest):
    from tests.support import post_batch, stats, wait_for

    with edge.admin() as api:
        source = create_source(api)
        integration = create_integration(api, source["id"], name="Replays")
        fake_pinterest.sandbox.state.failing_event_ids["dl-1"] = "event_time is invalid."
        post_batch(edge.url, source["pipeline_key"], [{"type": "track", "event": "Signed Up", "messageId": "dl-1"}])
        wait_for(lambda: stats(api, integration["id"])["dead_lettered"] == 1, what="a dead letter")
    fake_pinterest.sandbox.state.failing_event_ids.clear()
    login(page, edge.admin_url)
    page.goto(f"{edge.admin_url}/integrations/{integration['id']}")
    expect(page.locator("#dead-letters")).to_contain_text("Pinterest: event_time is invalid.")
    shot(page, "11-dead-letters")
    page.get_by_role("button", name="Replay all").click()
    expect(page.locator("#dead-letters")).to_contain_text("None: nothing has failed for good.")
    assert wait_for(lambda: [e for e in fake_pinterest.sandbox.events() if e["event_id"] == "dl-1"])

    page.get_by_label("Enabled").uncheck()
    page.get_by_label("Name", exact=True).fill("Replays (paused)")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("heading", name="Replays (paused)")).to_be_visible()
    expect(page.locator(".badge.disabled").first).to_be_visible()


def test_session_cookie_csrf_and_logout(page, edge):
    login(page, edge.admin_url)
    jar = {c["name"]: c for c in page.context.cookies()}
    session = jar["se_session"]
    assert session["httpOnly"] is True and session["sameSite"] == "Strict"
    # The cookie alone is not enough for a state-changing request: the CSRF header is required.
    forged = page.context.request.post(edge.admin_url + "/v1/admin/sources", data={"name": "forged"})
    assert forged.status == 403 and forged.json()["error"]["code"] == "csrf_failed"
    assert page.context.request.get(edge.admin_url + "/v1/admin/sources").status == 200
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login"))
    assert page.context.request.get(edge.admin_url + "/v1/admin/sources").status == 401
    page.get_by_label("Admin token").fill("sea_wrong")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid")


@pytest.mark.parametrize("path", ["/integrations", "/integrations/new", "/sources", "/debugger"])
def test_screens_work_at_375_px(browser, edge, path):
    with edge.admin() as api:
        create_source(api, name="Phone shop")
    context = browser.new_context(viewport={"width": 375, "height": 740})
    page = context.new_page()
    login(page, edge.admin_url)
    page.goto(edge.admin_url + path)
    page.wait_for_load_state("networkidle") if path != "/debugger" else page.wait_for_timeout(500)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    assert_every_control_is_labelled(page)
    shot(page, "mobile" + path.replace("/", "-"))
    context.close()


def test_replaying_a_deleted_integrations_dead_letters_into_another_source_warns_and_asks(page, edge):
    from tests.support import post_batch

    with edge.admin() as api:
        shop, other = create_source(api, name="Shop"), create_source(api, name="Another site")
        gone = create_integration(api, shop["id"], name="Old pixel")
        api.patch(f"/integrations/{gone['id']}", json={"paused": True})
        post_batch(edge.url, shop["pipeline_key"], [{"type": "track", "event": "Signed Up", "messageId": "dl-x"}])
        assert api.delete(f"/integrations/{gone['id']}").status_code == 204
        elsewhere = create_integration(api, other["id"], name="Another site's pixel")
    login(page, edge.admin_url, f"/integrations/{gone['id']}")
    expect(page.get_by_label("Replay into")).to_have_value(elsewhere["id"])
    expect(page.locator("#other-source")).to_contain_text("belongs to another source")
    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.get_by_role("button", name="Replay all").click()
    expect(page.locator("#dead-letters")).to_contain_text("dl-x")  # dismissed: nothing replayed
    assert asked and "another site's Pinterest ad account" in asked[0]
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Replay all").click()
    expect(page.locator("#status")).to_contain_text("1 event queued again")
    with edge.admin() as api:
        assert api.get(f"/integrations/{elsewhere['id']}").json()["delivery"]["accepted"] == 1
