"""Pinterest's own rules (issue 26): its current event names by default with the seed's table one
setting away, priorities that follow the names, timestamps as RudderStack sends them, and consent
in Segment's shape with category names in any case."""

from __future__ import annotations

import msgspec
import pytest

from collector.edge.ingest import RequestContext, build_event
from collector.edge.wire import event_decoder
from delivery.config import ConsentSettings, Source, consent_allows
from delivery.events import EdgeEvent
from delivery.pinterest.mapping import EVENT_NAME_PROFILES, Options, event_name, is_priority
from delivery.pinterest.variants import VARIANTS
from tests.support import create_integration, create_source, post_batch, stats, wait_for

RECEIVED = 1_706_540_000.0


def source(**fields) -> Source:
    return Source(id="src_1", name="Shop", pipeline_key="dk_1", created_at=0, updated_at=0, **fields)


def built(raw: dict, skew: float = 0.0, **source_fields) -> EdgeEvent:
    ctx = RequestContext(source(**source_fields), "203.0.113.9", "UA", "anon", "pin", None, None, RECEIVED, skew)
    return build_event(event_decoder.decode(msgspec.json.encode(raw)), None, ctx, None)[0]


def track(name: str) -> EdgeEvent:
    return EdgeEvent("m", "track", "src_1", RECEIVED, RECEIVED, name)


# --- event names --------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", list(VARIANTS))
def test_an_event_that_was_a_priority_under_the_seeds_names_still_is(variant):
    """Every name either table maps, in every variant: what the seed's names made a priority
    event (sent at once, first when the rate limit binds) stays one under Pinterest's names."""
    names = {*EVENT_NAME_PROFILES["current"], *EVENT_NAME_PROFILES["seed"], *VARIANTS[variant].extra_mappings}
    seed, current = Options(variant, event_names="seed"), Options(variant)
    for name in names:
        if is_priority(track(name), seed):
            assert is_priority(track(name), current), (variant, name, event_name(track(name), current))


def test_the_two_profiles_differ_only_in_pinterests_newer_names():
    seed, current = Options(event_names="seed"), Options()
    changed = {n: (event_name(track(n), seed), event_name(track(n), current))
               for n in EVENT_NAME_PROFILES["current"] if event_name(track(n), seed) != event_name(track(n), current)}
    assert changed == {
        "Product Added to Wishlist": ("add_to_cart", "add_to_wishlist"),
        "Checkout Started": ("checkout", "initiate_checkout"),
        "Product Viewed": ("view_category", "view_content"),
        "Payment Info Entered": ("custom", "add_payment_info"),
        "Subscription Created": ("custom", "subscribe"),
        "Application Installed": ("custom", "app_install"),
    }


def test_the_mapping_table_and_the_preview_say_which_event_names_are_in_effect(edge):
    with edge.admin() as api:
        source_ = create_source(api)
        integration = create_integration(api, source_["id"])
        iid = integration["id"]
        assert integration["config"]["event_names"] == "current"
        table = api.get(f"/integrations/{iid}/mapping").json()
        assert table["event_names"] == "current" and "initiate_checkout" in table["event_names_help"]
        rows = {r["incoming"]: r["pinterest_event"] for r in table["rows"]}
        assert rows["Checkout Started"] == "initiate_checkout" and rows["Application Installed"] == "app_install"
        started = {"type": "track", "event": "Checkout Started", "properties": {"value": 5}}
        preview = api.post(f"/integrations/{iid}/preview", json=started).json()
        assert (preview["pinterest_event"], preview["event_names"]) == ("initiate_checkout", "current")

        wrong = api.patch(f"/integrations/{iid}", json={"config": {"event_names": "legacy"}})
        assert wrong.status_code == 400 and wrong.json()["error"]["field"] == "config.event_names"
        assert "current" in wrong.json()["error"]["message"] and "seed" in wrong.json()["error"]["message"]
        patched = api.patch(f"/integrations/{iid}", json={"config": {"event_names": "seed"}}).json()
        assert patched["config"]["event_names"] == "seed"
        table = api.get(f"/integrations/{iid}/mapping").json()
        rows = {r["incoming"]: r["pinterest_event"] for r in table["rows"]}
        assert table["event_names"] == "seed" and rows["Checkout Started"] == "checkout"
        assert "Application Installed" not in rows
        preview = api.post(f"/integrations/{iid}/preview", json=started).json()
        assert (preview["pinterest_event"], preview["event_names"]) == ("checkout", "seed")


# --- time ---------------------------------------------------------------------------------------

def test_original_timestamp_is_the_events_time():
    # sentAt on the event corrects the device's clock (20 s slow here: RECEIVED is 14:53:20)
    assert built({"type": "page", "originalTimestamp": "2024-01-29T14:50:00Z",
                  "sentAt": "2024-01-29T14:53:00Z"}).event_time == RECEIVED - 200 + 20
    # without one, the batch's skew
    assert built({"type": "page", "originalTimestamp": "2024-01-29T14:50:00Z"}, skew=-60).event_time == \
        RECEIVED - 200 - 60
    # timestamp, when given, wins
    assert built({"type": "page", "timestamp": "2024-01-29T14:52:00Z",
                  "originalTimestamp": "2024-01-29T14:50:00Z"}).event_time == RECEIVED - 80


# --- consent ------------------------------------------------------------------------------------

def test_consent_category_names_compare_ignoring_case():
    enforced = source(consent=ConsentSettings(True, ["Advertising"]))
    assert consent_allows(["ADVERTISING", "analytics"], enforced, ["advertising"])
    assert consent_allows(None, enforced, ["advertising"])  # the source's default, in another case
    assert not consent_allows(["analytics"], enforced, ["Advertising"])


@pytest.mark.parametrize("consent, granted, opted_out", [
    ({"categoryPreferences": {"Advertising": True, "Analytics": False}}, ["advertising"], False),
    ({"categoryPreferences": {"Advertising": False}}, [], True),
    ({"categoryPreferences": {"ADS_Personalization": False, "Advertising": True}}, ["advertising"], True),
    ({"categories": ["Advertising"], "categoryPreferences": {"Functional": True}}, ["advertising", "functional"], False),
    ({"categories": ["!Advertising"]}, [], True),
    ({"categoryPreferences": {}}, None, False),  # says nothing: the source's defaults apply
])
def test_segments_consent_shape(consent, granted, opted_out):
    event = built({"type": "page", "context": {"consent": consent}})
    assert (event.consent, event.opt_out) == (granted, opted_out)


def test_segments_consent_shape_decides_delivery(edge, fake_pinterest):
    with edge.admin() as api:
        shop = create_source(api, consent={"enabled": True, "default_categories": []})
        integration = create_integration(api, shop["id"], consent_categories=["advertising"])
    events = [{"type": "track", "event": "Signed Up", "messageId": "yes",
               "context": {"consent": {"categoryPreferences": {"Advertising": True}}}},
              {"type": "track", "event": "Signed Up", "messageId": "no",
               "context": {"consent": {"categoryPreferences": {"Advertising": False, "Analytics": True}}}}]
    assert post_batch(edge.url, shop["pipeline_key"], events).status_code == 200
    with edge.admin() as api:
        wait_for(lambda: stats(api, integration["id"])["filtered"] == 1 and stats(api, integration["id"])["delivered"] == 1,
                 what="one delivered, one filtered")
    assert [e["event_id"] for e in fake_pinterest.sandbox.events()] == ["yes"]
