"""Payload fidelity seen from outside: what the debugger records, and the catalog (issue 3)."""

from __future__ import annotations

import httpx

from delivery.pinterest.variants import VARIANTS
from tests.support import create_integration, create_source, post_batch, stats, wait_for


def test_event_without_identity_is_recorded_with_its_reason(edge, fake_pinterest):
    with edge.admin() as admin:
        source = create_source(admin)
        integration = create_integration(admin, source["id"])
        # A server-side call: no User-Agent, no email; the IP alone is not enough.
        response = httpx.post(edge.url + "/v1/t", json={"event": "Signed Up", "messageId": "lonely"},
                              headers={"Authorization": f"Bearer {source['pipeline_key']}", "User-Agent": ""})
        assert response.status_code == 200
        wait_for(lambda: stats(admin, integration["id"])["dead_lettered"] == 1, what="the dead letter")
        dead = admin.get(f"/integrations/{integration['id']}/dead-letters").json()["data"]
        assert [(d["event_id"], d["reason"]) for d in dead] == [
            ("lonely", "not sent: no em, no hashed_maids and not both IP address and User-Agent")]
        records = admin.get("/debugger/events", params={"integration_id": integration["id"]}).json()["data"]
        assert records[0]["event_id"] == "lonely" and records[0]["status"] == "failed"
        assert "no em, no hashed_maids" in records[0]["message"]
    assert fake_pinterest.sandbox.events() == []


def test_unusable_phone_is_left_out_and_the_reason_kept(edge, fake_pinterest):
    with edge.admin() as admin:
        source = create_source(admin)  # no default_country
        integration = create_integration(admin, source["id"])
        post_batch(edge.url, source["pipeline_key"],
                   [{"type": "track", "event": "Lead Generated", "messageId": "lead-1",
                     "properties": {"email": "a@example.com", "phone": "07700 900123"}}])
        event = wait_for(lambda: fake_pinterest.sandbox.events(), what="the lead")[0]
        assert "ph" not in event["user_data"] and event["user_data"]["em"]
        record = wait_for(lambda: admin.get("/debugger/events", params={"integration_id": integration["id"]})
                          .json()["data"], what="the debugger record")[0]
        incoming = record["incoming"]
        assert incoming["notes"] == ["ph: no country code and the source has no default_country (left out)"]
        assert incoming["properties"]["email"].startswith("sha256:")  # hashed, never raw
        assert "a@example.com" not in str(record) and "7700" not in str(record)
        assert record["payload"] == event


def test_catalog_serves_the_variant_data(edge):
    with edge.admin() as admin:
        catalog = admin.get("/catalog/pinterest").json()
    # The seed's three fields, then an app's (issue 20): pasted tokens and a connection are alternatives.
    assert [f["key"] for f in catalog["credentials"]] == ["ad_account_id", "access_token", "conversion_token",
                                                          "app_id", "app_secret", "refresh_token"]
    assert [f["key"] for f in catalog["credentials"] if f["required"]] == ["ad_account_id"]
    assert all(f["help"] for f in catalog["credentials"])
    assert {v["key"]: v["priority_events"] for v in catalog["variants"]} == {
        k: list(v.priority_events) if v.priority_events else None for k, v in VARIANTS.items()}
    # The seed's retail list, and the current names of the events it covered (issue 26).
    assert catalog["variants"][1]["priority_events"] == ["checkout", "initiate_checkout", "add_to_cart",
                                                         "add_to_wishlist", "page_visit", "search", "view_category",
                                                         "view_content"]
    names = next(f for f in catalog["options"] if f["key"] == "event_names")
    assert names["default"] == "current" and names["choices"] == ["current", "seed"]
    assert "watch_video" in catalog["event_names"] and "advertising" in catalog["consent_categories"]
