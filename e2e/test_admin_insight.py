"""When something is wrong, the admin shows what and why (issue 19), driven in Debian's Chromium
as a person would: refused events, queued events, consent, warnings, plain errors, the mapping,
the debugger's Integration column."""

from __future__ import annotations

import hashlib
import re

import httpx
from playwright.sync_api import expect

from e2e.conftest import STUB
from e2e.ui import login, shot, with_a_dead_letter
from tests.support import create_integration, create_source, post_batch, stats, wait_for


def test_a_foreign_sites_events_show_as_refused_on_the_source_page_within_5_s(page, edge, site):
    with edge.admin() as api:
        source = create_source(api, name="Domain shop", domain="shop.example")
        create_integration(api, source["id"])
    login(page, edge.admin_url, f"/sources/{source['id']}")
    expect(page.locator("#refusals")).to_contain_text("Nothing refused")
    foreign = page.context.new_page()
    foreign.goto(site.page("/landing", "<h1>Elsewhere</h1>", edge.url, source["pipeline_key"], head=STUB))
    refused = page.locator("#refusals")
    expect(refused).to_contain_text("origin_not_allowed", timeout=5000)
    expect(refused).to_contain_text(site.url)  # the refused origin, named
    shot(page, "insight-refused")
    # An event with a missing field is counted too, with the field named.
    assert post_batch(edge.url, source["pipeline_key"], [{"type": "track"}, {"type": "page"}]).status_code == 200
    expect(refused).to_contain_text("batch[0].event: required for track events", timeout=5000)
    with edge.admin() as api:
        rejected = api.get(f"/sources/{source['id']}").json()["rejected"]
        assert rejected["origin_not_allowed"] >= 1 and rejected["invalid_event"] == 1
    assert post_batch(edge.url, "dk_live_NOSUCHKEY", [{"type": "page"}]).status_code == 401
    metrics = httpx.get(edge.admin_url + "/metrics").text
    assert re.search(rf'signal_edge_events_refused_total{{source="{source["id"]}",reason="origin_not_allowed"}} [1-9]',
                     metrics)
    assert 'signal_edge_events_refused_total{source="(no source)",reason="unknown_pipeline_key"} 1' in metrics


def test_an_event_queued_behind_a_paused_integration_is_listed_under_queued(page, edge):
    with edge.admin() as api:
        source = create_source(api)
        integration = create_integration(api, source["id"], name="Paused one")
    login(page, edge.admin_url, f"/integrations/{integration['id']}")
    page.get_by_role("button", name="Pause").click()
    expect(page.locator(".badge.paused").first).to_be_visible()
    post_batch(edge.url, source["pipeline_key"], [{"type": "track", "event": "Signed Up", "messageId": "q-1"}])
    page.get_by_role("link", name="its queued events").click()
    row = page.locator("#events tbody tr", has_text="Signed Up")
    expect(row).to_be_visible()
    expect(row).to_contain_text("Paused one")
    expect(row.locator(".badge")).to_have_text("queued")
    row.get_by_role("button", name="View").click()
    expect(page.locator("#detail")).to_contain_text("waiting: the integration is paused; resume it to send")
    shot(page, "insight-queued")
    with edge.admin() as api:  # resumed: it is delivered, and leaves the queued list by itself
        api.patch(f"/integrations/{integration['id']}", json={"paused": False})
        wait_for(lambda: stats(api, integration["id"])["delivered"] == 1, what="the delivery")
    expect(row).to_have_count(0, timeout=5000)
    expect(page.locator("#empty")).to_be_visible()


def test_the_consent_panel_switches_enforcement_and_the_forms_say_when_it_is_off(page, edge):
    with edge.admin() as api:
        source = create_source(api, name="Consent shop")
        integration = create_integration(api, source["id"], name="Ads", consent_categories=["advertising"])
    login(page, edge.admin_url, "/integrations/new")
    expect(page.locator("#consent-note")).to_be_visible()  # the source does not enforce consent
    page.goto(f"{edge.admin_url}/integrations/{integration['id']}")
    expect(page.locator("#consent-state")).to_contain_text("not enforced by the source")
    page.get_by_role("link", name="source's page").click()
    page.get_by_label("Enforce consent").check()
    page.get_by_label("analytics").check()
    page.get_by_role("button", name="Save consent and privacy").click()
    expect(page.locator("#status")).to_contain_text("consent is enforced")
    with edge.admin() as api:
        assert api.get(f"/sources/{source['id']}").json()["consent"] == {"enabled": True,
                                                                         "default_categories": ["analytics"]}
        # Enforced: an event without advertising consent does not reach the integration.
        post_batch(edge.url, source["pipeline_key"], [{"type": "track", "event": "Signed Up"}])
        wait_for(lambda: stats(api, integration["id"])["filtered"] == 1, what="the event filtered by consent")
    page.goto(f"{edge.admin_url}/integrations/{integration['id']}")
    expect(page.locator("#consent-state")).to_have_text("enforced")
    expect(page.locator("#count-filtered")).to_have_text("1")
    page.goto(f"{edge.admin_url}/integrations/new")
    expect(page.locator("#consent-note")).to_be_hidden()


def test_warnings_show_on_the_add_form_and_on_the_integration_page(page, edge):
    with edge.admin() as api:
        create_source(api, name="Warned shop")
    login(page, edge.admin_url, "/integrations/new")
    page.get_by_label("Ad Account ID").fill("549764982399")
    page.get_by_label("API access token").fill("ct_PASTED_IN_THE_WRONG_FIELD")  # the tokens swapped
    page.get_by_label("Conversion access token").fill("pina_PASTED_IN_THE_WRONG_FIELD")
    page.get_by_role("button", name="Save").click()
    warnings = page.locator("#form-warnings")
    expect(warnings).to_contain_text("Saved, with warnings")
    expect(warnings).to_contain_text("config.access_token does not start with pina_")
    expect(page.locator(".field-warning")).to_have_count(2)  # beside each field too
    shot(page, "insight-warnings-form")
    page.get_by_label("API access token").fill("pina_NOW_RIGHT")
    page.get_by_label("Conversion access token").fill("ct_NOW_RIGHT")
    page.get_by_role("button", name="Save changes").click()  # edits what was saved, no second integration
    expect(page).to_have_url(re.compile(r"/integrations/int_"))
    with edge.admin() as api:
        listed = api.get("/integrations").json()["data"]
    assert len(listed) == 1 and listed[0]["warnings"] == []
    with edge.admin() as api:
        api.patch(f"/integrations/{listed[0]['id']}", json={"config": {"access_token": "ct_SWAPPED_AGAIN"}})
    page.reload()
    expect(page.locator("#warn-h")).to_have_text("Warnings")
    expect(page.locator("section.warning")).to_contain_text("does not start with pina_")


def test_validation_errors_read_as_plain_words_beside_their_field(page, edge):
    with edge.admin() as api:
        create_source(api, name="Typo shop")
    login(page, edge.admin_url, "/integrations/new")
    page.get_by_label("API access token").fill("pina_SOMETHING")
    page.get_by_role("button", name="Save").click()
    field = page.get_by_label("Ad Account ID")
    error = page.locator(".field-error[data-for=ad_account_id]")
    expect(error).to_have_text("Ad Account ID is required: fill in the numeric Ad Account ID from Ads Manager, "
                               "digits only, such as 549764982399, or the Ads Manager URL that holds it")
    expect(field).to_have_attribute("aria-invalid", "true")
    field.fill("5497-6498")
    page.get_by_role("button", name="Save").click()
    expect(error).to_contain_text("has the wrong format")
    assert "expected `str`" not in page.content().lower()
    shot(page, "insight-plain-error")

    # A pasted URL where the domain belongs is cut to its host, not refused.
    page.goto(edge.admin_url + "/sources")
    page.get_by_label("Name").fill("Pasted URL shop")
    page.get_by_label("Site domain").fill("https://www.shop.example/cart?step=2")
    page.get_by_role("button", name="Create source").click()
    expect(page.locator("dl.facts")).to_contain_text("www.shop.example")
    page.get_by_label("Default country for phone numbers").fill("U1")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator(".field-error[data-for=default_country]")).to_have_text(
        "Default country for phone numbers has the wrong format: a two-letter country code such as US")
    page.get_by_label("Name").fill("Still typing")  # kept until the form is sent again
    expect(page.locator(".field-error[data-for=default_country]")).to_be_visible()


def test_the_mapping_table_its_override_editor_and_the_payload_preview(page, edge):
    with edge.admin() as api:
        source = create_source(api)
        integration = create_integration(api, source["id"], variant="retail")
    login(page, edge.admin_url, f"/integrations/{integration['id']}")
    mapping = page.locator("#mapping")
    expect(mapping.get_by_role("row", name=re.compile("Payment Info Entered"))).to_contain_text("this variant")
    expect(mapping).to_contain_text("Priority events: checkout, initiate_checkout, add_to_cart, add_to_wishlist, "
                                    "page_visit, search, view_category, view_content")
    expect(mapping).to_contain_text("Event names: current.")
    expect(mapping.get_by_role("row", name=re.compile("Checkout Started"))).to_contain_text("initiate_checkout")
    page.get_by_role("button", name="Add an override").click()
    page.get_by_label("Event name", exact=True).fill("Lead Form Sent")
    page.get_by_label("Pinterest event").select_option("lead")
    page.get_by_label("Send custom event names").check()
    page.get_by_label("Event names", exact=True).select_option("seed")
    page.get_by_role("button", name="Save mapping").click()
    expect(mapping.get_by_role("row", name=re.compile("Lead Form Sent"))).to_contain_text("your override")
    expect(mapping).to_contain_text("Event names: seed.")
    expect(mapping.get_by_role("row", name=re.compile("Checkout Started"))).to_contain_text("checkout")
    expect(mapping.get_by_role("row", name=re.compile("Checkout Started"))).not_to_contain_text("initiate_checkout")
    with edge.admin() as api:
        config = api.get(f"/integrations/{integration['id']}").json()["config"]
    assert config["event_map"] == {"Lead Form Sent": "lead"} and config["send_custom_event_name"] is True
    assert config["event_names"] == "seed"

    page.get_by_label("An event, as the tag").fill(
        '{"type": "track", "event": "lead form sent", "context": {"traits": {"email": "Jane@Example.com"}}}')
    page.get_by_role("button", name="Show the Pinterest payload").click()
    result = page.locator("#preview-result")
    expect(result).to_contain_text("Pinterest would receive lead (event names: seed)")
    expect(result).to_contain_text(hashlib.sha256(b"jane@example.com").hexdigest())
    expect(result).not_to_contain_text("Jane@Example.com")
    shot(page, "insight-mapping-preview")
    page.get_by_label("An event, as the tag").fill('{"type": "track"}')
    page.get_by_role("button", name="Show the Pinterest payload").click()
    expect(page.locator("#preview-form .field-error[data-for=event]")).to_contain_text("required for track events")


def test_the_debugger_names_each_rows_integration_newest_first(page, edge):
    with edge.admin() as api:
        source = create_source(api)
        first = create_integration(api, source["id"], name="First integration")
        second = create_integration(api, source["id"], name="Second integration")
    login(page, edge.admin_url, "/debugger")
    expect(page.locator("#empty")).to_be_visible()
    expect(page.locator("#live-state")).to_contain_text("Live")
    post_batch(edge.url, source["pipeline_key"], [{"type": "track", "event": "Signed Up", "messageId": "older"}])
    with edge.admin() as api:
        wait_for(lambda: all(stats(api, i["id"])["delivered"] == 1 for i in (first, second)), what="deliveries")
    post_batch(edge.url, source["pipeline_key"], [{"type": "track", "event": "Lead Generated", "messageId": "newer"}])
    rows = page.locator("#events tbody tr[data-status=delivered]")
    expect(rows).to_have_count(4, timeout=5000)
    names = [n.strip() for n in page.locator("#events tbody tr td[data-label=Integration]").all_inner_texts()]
    assert sorted(names[:2]) == ["First integration", "Second integration"] == sorted(names[2:])
    assert page.locator("#events tbody tr").first.get_attribute("data-event") == "newer"
    shot(page, "insight-debugger-integrations")
    view = rows.first.get_by_role("button", name="View")
    view.click()
    expect(page.locator("#detail")).to_be_visible()
    expect(page.locator("#detail")).to_contain_text("Pinterest accepted it")
    page.keyboard.press("Escape")
    expect(page.locator("#detail")).to_be_hidden()
    expect(view).to_be_focused()
    view.click()
    page.get_by_label("Status").select_option("failed")  # a new filter closes the old detail
    expect(page.locator("#detail")).to_be_hidden()
    expect(page.locator("#empty")).to_have_text("No events match these filters yet.")


def test_dead_letters_replay_selected_waits_for_a_selection_and_counts_in_words(page, edge, fake_pinterest):
    integration = with_a_dead_letter(edge, fake_pinterest, "dl-one")
    fake_pinterest.sandbox.state.failing_event_ids.clear()
    login(page, edge.admin_url, f"/integrations/{integration['id']}")
    box = page.locator("#dead-letters")
    expect(box).to_contain_text("1 event failed for good.")
    selected = box.get_by_role("button", name="Replay selected")
    expect(selected).to_be_disabled()
    box.get_by_label("Select dl-one").check()
    expect(selected).to_be_enabled()
    selected.click()
    expect(page.locator("#status")).to_have_text("1 event queued again, with its original event id.")
    expect(box).to_contain_text("None: nothing has failed for good.")


def test_a_long_name_is_cut_with_its_whole_text_on_hover(page, edge):
    long_name = "Very long shop name " * 10  # 200 characters
    with edge.admin() as api:
        source = create_source(api, name=long_name.strip())
        create_integration(api, source["id"], name=long_name.strip())
    login(page, edge.admin_url, "/integrations")
    link = page.get_by_role("link", name=long_name.strip()).first
    expect(link).to_have_attribute("title", long_name.strip())
    box = link.bounding_box()
    assert box["width"] <= 12 * 16 + 1  # 12rem: the other columns stay on screen
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]
