"""The admin UI defects a new user met (issue 30, item 5), each as that person met it, in Debian's
Chromium against a live signal-edge."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone

from playwright.sync_api import expect

from e2e.ui import login, with_a_dead_letter
from tests.support import (
    ACCESS_TOKEN,
    CONVERSION_TOKEN,
    create_integration,
    create_source,
    post_batch,
    stats,
    wait_for,
)

# Direct text in a box that a script filled: a stray `null` (or any bare text) shows as a line.
BARE_TEXT = """(box) => [...document.querySelector(box).childNodes]
    .filter(n => n.nodeType === 3 && n.textContent.trim()).map(n => n.textContent)"""


def rows(page) -> list[tuple[str, str]]:
    return sorted((r.get_attribute("data-event"), r.get_attribute("data-status"))
                  for r in page.locator("#events tbody tr").all())


def test_identify_and_group_calls_leave_no_queued_row_behind(page, edge):
    with edge.admin() as api:
        source = create_source(api)
        integration = create_integration(api, source["id"])
    login(page, edge.admin_url, "/debugger")
    expect(page.locator("#live-state")).to_contain_text("Live")
    post_batch(edge.url, source["pipeline_key"], [
        {"type": "identify", "userId": "u-1", "traits": {"email": "jane@example.com"}, "messageId": "who"},
        {"type": "group", "groupId": "g-1", "messageId": "team"},
        {"type": "track", "event": "Signed Up", "messageId": "signup"}])
    with edge.admin() as api:
        wait_for(lambda: stats(api, integration["id"])["delivered"] == 1, what="the delivery")
    expect(page.locator("#events tr[data-event=signup][data-status=delivered]")).to_be_visible()
    expect(page.locator("#events tr[data-status=queued]")).to_have_count(0)
    live = rows(page)
    page.reload()
    expect(page.locator("#events tr[data-event=signup]")).to_be_visible()
    assert rows(page) == live == [("signup", "delivered")]


def test_a_queued_events_detail_shows_the_event_by_field_name_and_no_null_line(page, edge):
    with edge.admin() as api:
        source = create_source(api)
        integration = create_integration(api, source["id"])
        api.patch(f"/integrations/{integration['id']}", json={"paused": True})
    login(page, edge.admin_url, "/debugger")
    expect(page.locator("#live-state")).to_contain_text("Live")
    post_batch(edge.url, source["pipeline_key"], [{"type": "track", "event": "Signed Up", "messageId": "held"}])
    row = page.locator("#events tr[data-event=held]")
    expect(row.locator(".badge")).to_have_text("queued")
    row.get_by_role("button", name="View").click()
    incoming = page.locator("#detail pre").first
    expect(incoming).to_contain_text('"message_id": "held"')
    assert incoming.inner_text().lstrip().startswith("{")  # an object by field name, not the queue's array
    assert page.evaluate(BARE_TEXT, "#detail-body") == []


def test_dead_letters_show_no_null_line_above_replay(page, edge, fake_pinterest):
    integration = with_a_dead_letter(edge, fake_pinterest, "dl-1")
    login(page, edge.admin_url, f"/integrations/{integration['id']}")
    expect(page.locator("#dead-letters")).to_contain_text("1 event failed for good.")
    assert page.evaluate(BARE_TEXT, "#dead-letters") == []


def test_the_preview_forgets_the_last_payload_after_an_error_and_refuses_an_event_over_7_days_old(page, edge):
    with edge.admin() as api:
        source = create_source(api)
        integration = create_integration(api, source["id"])
    login(page, edge.admin_url, f"/integrations/{integration['id']}")
    event, show = page.get_by_label("An event, as the tag"), page.get_by_role("button", name="Show the Pinterest payload")
    result = page.locator("#preview-result")
    show.click()
    expect(result).to_contain_text("Pinterest would receive checkout")
    event.fill('{"type": "track"}')
    show.click()
    expect(page.locator("#preview-form .field-error[data-for=event]")).to_contain_text("required for track events")
    expect(result).to_be_empty()  # not the previous event's payload under the new error
    old = (datetime.now(timezone.utc) - timedelta(days=8)).isoformat()
    event.fill('{"type": "track", "event": "Signed Up", "timestamp": "%s", '
               '"context": {"traits": {"email": "jane@example.com"}}}' % old)
    show.click()
    expect(result).to_contain_text("not sent: older than 7 days")
    expect(result).not_to_contain_text("Pinterest would receive")


def test_overrides_that_differ_only_in_case_are_refused_beside_the_second(page, edge):
    with edge.admin() as api:
        source = create_source(api)
        integration = create_integration(api, source["id"], config={"event_map": {"Lead Form Sent": "lead"}})
        refused = api.patch(f"/integrations/{integration['id']}",
                            json={"config": {"event_map": {"Lead Form Sent": "lead", "lead form sent ": "signup"}}})
        assert refused.status_code == 400 and refused.json()["error"]["field"] == "config.event_map.lead form sent "
    login(page, edge.admin_url, f"/integrations/{integration['id']}")
    expect(page.get_by_label("Event name", exact=True)).to_have_value("Lead Form Sent")
    page.get_by_role("button", name="Add an override").click()
    second = page.locator("#overrides input").nth(1)
    second.fill("LEAD FORM SENT")
    page.locator("#overrides select").nth(1).select_option("signup")
    page.get_by_role("button", name="Save mapping").click()
    expect(second).to_have_attribute("aria-invalid", "true")
    error = page.locator("#mapping-form .field-error[data-for]")  # beside the name, not the form's top line
    expect(error).to_contain_text("differ only in case")
    assert error.get_attribute("id") in second.get_attribute("aria-describedby").split()
    with edge.admin() as api:
        assert api.get(f"/integrations/{integration['id']}").json()["config"]["event_map"] == {"Lead Form Sent": "lead"}
    row = page.locator("#mapping").get_by_role("row", name=re.compile("Lead Form Sent"))
    expect(row).to_contain_text("lead")  # the table in effect agrees with what is saved


def test_add_integration_groups_the_alternatives_speaks_plainly_and_reads_an_ads_manager_url(page, edge):
    with edge.admin() as api:
        create_source(api, name="Grouped shop")
    login(page, edge.admin_url, "/integrations/new")
    tokens = page.get_by_role("group", name=re.compile("Paste tokens"))
    app = page.get_by_role("group", name=re.compile("connect with Pinterest", re.I))
    expect(tokens.get_by_label("API access token")).to_be_visible()
    expect(tokens.get_by_label("Conversion access token")).to_be_visible()
    expect(tokens.get_by_label("Pinterest app id")).to_have_count(0)
    expect(app.get_by_label("Pinterest app id")).to_be_visible()
    expect(app.get_by_label("Pinterest app secret")).to_be_visible()
    expect(app.get_by_role("button", name="Connect with Pinterest")).to_be_visible()
    account = page.get_by_label("Ad Account ID")
    expect(tokens.get_by_label("Ad Account ID")).to_have_count(0)  # both ways need it
    placeholder = account.get_attribute("placeholder")
    assert placeholder is None or not re.fullmatch(r"\d+", placeholder), placeholder

    page.get_by_label("API access token").fill(ACCESS_TOKEN)
    page.get_by_role("button", name="Save").click()
    error = page.locator(".field-error[data-for=ad_account_id]")
    expect(error).to_contain_text("Ad Account ID is required")
    expect(error).not_to_contain_text("config.")

    account.fill("https://ads.pinterest.com/advertiser/549764982399/conversions/?tab=tag")
    page.get_by_label("Conversion access token").fill(CONVERSION_TOKEN)
    page.get_by_role("button", name="Save").click()
    expect(page).to_have_url(re.compile(r"/integrations/int_"))
    expect(page.get_by_label("Ad Account ID")).to_have_value("549764982399")


def test_the_health_card_keeps_an_old_dead_letter_out_of_a_401(page, edge, fake_pinterest):
    integration = with_a_dead_letter(edge, fake_pinterest, "old-1")
    login(page, edge.admin_url, f"/integrations/{integration['id']}")
    health = page.locator("section[aria-labelledby=health-h]")
    expect(health).to_contain_text("event_time is invalid")  # the last error, while nothing newer is known
    fake_pinterest.sandbox.remove_token(ACCESS_TOKEN)
    fake_pinterest.sandbox.remove_token(CONVERSION_TOKEN)
    page.get_by_role("button", name="Send test event").click()
    expect(health.locator(".badge.unhealthy")).to_be_visible()
    expect(health).to_contain_text("expired or been revoked")
    expect(health).not_to_contain_text("event_time is invalid")
    expect(page.locator("#dead-letters")).to_contain_text("event_time is invalid")  # where it belongs


def test_a_disabled_integration_offers_no_pause(page, edge):
    with edge.admin() as api:
        source = create_source(api)
        integration = create_integration(api, source["id"], enabled=False)
    login(page, edge.admin_url, f"/integrations/{integration['id']}")
    health = page.locator("section[aria-labelledby=health-h]")
    expect(health.locator(".badge.disabled")).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("^(Pause|Resume)$"))).to_have_count(0)
    expect(health).to_contain_text("Disabled: nothing is queued")


def test_minting_a_conversion_token_says_so_after_the_reload(page, edge, fake_pinterest):
    from tests.test_oauth import oauth_config

    with edge.admin() as api:
        source = create_source(api)
        integration = create_integration(api, source["id"], config={
            "access_token": None, "conversion_token": None, **oauth_config(fake_pinterest)})
    login(page, edge.admin_url, f"/integrations/{integration['id']}")
    page.get_by_role("button", name="Mint a conversion token").click()
    expect(page.get_by_text(re.compile(r"leave blank to keep ct_\*\*\*\*"))).to_be_visible(timeout=10_000)
    expect(page.get_by_role("status").filter(has_text="conversion token was minted")).to_be_visible()
    page.reload()  # told once
    expect(page.get_by_role("status").filter(has_text="conversion token was minted")).to_have_count(0)


def test_a_deleted_integrations_dead_letters_name_it(page, edge):
    with edge.admin() as api:
        source = create_source(api, name="Named shop")
        gone = create_integration(api, source["id"], name="Old pixel")
        api.patch(f"/integrations/{gone['id']}", json={"paused": True})
        post_batch(edge.url, source["pipeline_key"], [{"type": "track", "event": "Signed Up", "messageId": "left"}])
        assert api.delete(f"/integrations/{gone['id']}").status_code == 204
    login(page, edge.admin_url, "/integrations")
    deleted = page.get_by_role("table", name="Deleted integrations with dead letters")
    expect(deleted.get_by_role("row", name=re.compile("Old pixel"))).to_contain_text("Named shop")
    deleted.get_by_role("link", name=re.compile("Old pixel")).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Old pixel")
    expect(page.locator("main")).to_contain_text("Named shop")
    expect(page.locator("#dead-letters")).to_contain_text("left")


def test_a_click_before_the_pages_script_has_run_is_not_lost(page, edge):
    """On a slow link the page's script comes a second after the page: a click on Pause
    meanwhile waits for it (the page is inert until then) instead of landing on a button that
    nothing listens to yet."""
    with edge.admin() as api:
        source = create_source(api)
        integration = create_integration(api, source["id"])
    login(page, edge.admin_url)

    def late(route):
        time.sleep(1)  # the browser goes on meanwhile: only this script is held
        route.continue_()
    page.route("**/static/admin/integration-page.js", late)
    page.goto(f"{edge.admin_url}/integrations/{integration['id']}", wait_until="commit")
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("button", name="Resume")).to_be_visible()
    with edge.admin() as api:
        assert api.get(f"/integrations/{integration['id']}").json()["paused"] is True
