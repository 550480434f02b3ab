"""One event's whole journey, the process lifecycle, and the minimal admin API (issue 2)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import jsonschema
import pytest

from delivery.pinterest.normalize import sha256
from delivery.pinterest.schema_check import SCHEMA
from tests.support import (
    ADMIN_TOKEN,
    FakePinterest,
    SignalEdge,
    create_integration,
    create_source,
    post_batch,
    stats,
    wait_for,
)

# The -d body of the seed's "Management API Setup" curl, byte for byte
# (../shared/seed/000_8226c3ce4f798cdb.txt), so the test runs without the shared folder.
SEED_BODY = Path(__file__).resolve().parent / "fixtures" / "seed_curl_body.json"
PURCHASE = {
    "type": "track",
    "event": "Order Completed",
    "properties": {
        "order_id": "ORD-001", "total": 129.99, "currency": "USD",
        "products": [
            {"product_id": "SKU-A", "name": "Widget", "price": 49.99, "quantity": 2},
            {"product_id": "SKU-B", "name": "Gadget", "price": 30.01, "quantity": 1},
        ],
    },
    "context": {"page": {"url": "https://shop.example/checkout?epik=dj0yJnU9dGVzdA"}},
}


def test_purchase_reaches_pinterest_as_a_schema_valid_checkout(edge, shop, fake_pinterest):
    source, _ = shop
    with httpx.Client() as browser:
        identify = {"type": "identify", "userId": "user-123",
                    "traits": {"email": " Jane.Doe@Example.com ", "phone": "+44 7700 900123"}}
        assert post_batch(edge.url, source["pipeline_key"], [identify], browser).status_code == 200
        response = post_batch(edge.url, source["pipeline_key"], [PURCHASE], browser)
        assert response.status_code == 200
        assert response.json() == {"success": True, "accepted": 1}

    events = wait_for(lambda: fake_pinterest.sandbox.events(), what="the checkout at Pinterest")
    assert len(events) == 1
    event = events[0]
    jsonschema.validate({"data": events}, SCHEMA)
    assert event["event_name"] == "checkout"
    assert event["action_source"] == "web"
    assert isinstance(event["event_time"], int) and abs(event["event_time"] - time.time()) < 60
    assert event["event_id"]
    assert event["event_source_url"] == PURCHASE["context"]["page"]["url"]
    user = event["user_data"]
    assert user["em"] == [sha256("jane.doe@example.com")]
    assert user["ph"] == [sha256("447700900123")]
    assert user["click_id"] == "dj0yJnU9dGVzdA"
    assert user["client_ip_address"] == "127.0.0.1"
    assert user["client_user_agent"].startswith("Mozilla/5.0")
    assert sha256("user-123") in user["external_id"]
    assert event["custom_data"] == {
        "currency": "USD", "value": "129.99", "order_id": "ORD-001", "num_items": 3,
        "content_ids": ["SKU-A", "SKU-B"],
        "contents": [
            {"id": "SKU-A", "item_price": "49.99", "quantity": 2, "item_name": "Widget"},
            {"id": "SKU-B", "item_price": "30.01", "quantity": 1, "item_name": "Gadget"},
        ],
    }
    # Raw PII never reached the database file.
    raw = edge.db.read_bytes() + (edge.db.with_name(edge.db.name + "-wal").read_bytes()
                                  if edge.db.with_name(edge.db.name + "-wal").exists() else b"")
    assert b"jane.doe" not in raw.lower() and b"7700" not in raw


def test_identity_cookies_come_from_the_server(edge, shop):
    source, _ = shop
    with httpx.Client() as browser:
        first = post_batch(edge.url, source["pipeline_key"], [PURCHASE], browser)
        cookies = {c.split("=")[0]: c for c in first.headers.get_list("set-cookie")}
        assert set(cookies) == {"_dfid", "_pin_unauth", "_epik"}
        assert "HttpOnly" in cookies["_dfid"] and "HttpOnly" not in cookies["_pin_unauth"]
        assert "_epik=dj0yJnU9dGVzdA;" in cookies["_epik"]
        assert all("SameSite=Lax" in c for c in cookies.values())
        dfid = browser.cookies["_dfid"]
        # Known browser: nothing new is issued, the id stays.
        second = post_batch(edge.url, source["pipeline_key"], [{"type": "page"}], browser)
        assert second.headers.get_list("set-cookie") == []
        assert browser.cookies["_dfid"] == dfid


def test_single_event_endpoints_take_the_key_as_bearer(edge, shop, fake_pinterest):
    source, _ = shop
    auth = {"Authorization": f"Bearer {source['pipeline_key']}", "User-Agent": "Mozilla/5.0 Test"}
    for path, body in (("/v1/p", {"name": "Home"}), ("/v1/t", {"event": "Signed Up"}),
                       ("/v1/i", {"userId": "u-1"}), ("/v1/g", {"groupId": "g-1"})):
        response = httpx.post(edge.url + path, json=body, headers=auth)
        assert response.status_code == 200, (path, response.text)
    names = wait_for(lambda: sorted(e["event_name"] for e in fake_pinterest.sandbox.events())
                     if len(fake_pinterest.sandbox.events()) == 2 else None, what="page and signup")
    assert names == ["page_visit", "signup"]  # identify and group only feed identity memory
    assert httpx.post(edge.url + "/v1/t", json={"event": "x"}).status_code == 401


@pytest.mark.process
def test_events_wait_on_disk_while_pinterest_is_down_and_arrive_after_restarts(tmp_path):
    fake = FakePinterest().start()
    port = fake.port
    edge = SignalEdge(tmp_path, fake.url).start()
    with edge.admin() as admin:
        source = create_source(admin)
        integration = create_integration(admin, source["id"])
    fake.stop()  # Pinterest unreachable from here on

    ids = [f"evt-{i}" for i in range(25)]
    response = post_batch(edge.url, source["pipeline_key"],
                          [{"type": "track", "event": "Product Added", "messageId": i} for i in ids])
    assert response.json()["accepted"] == 25
    with edge.admin() as admin:
        wait_for(lambda: stats(admin, integration["id"])["last_error"], what="a failed attempt")
        counts = stats(admin, integration["id"])
    assert counts["accepted"] == 25 and counts["delivered"] == 0 and counts["dead_lettered"] == 0
    assert edge.stop() == 0

    fake = FakePinterest(port=port).start()
    try:
        edge = SignalEdge(tmp_path, fake.url, db=edge.db).start()
        received = wait_for(lambda: {e["event_id"] for e in fake.sandbox.events()} >= set(ids) and
                            {e["event_id"] for e in fake.sandbox.events()}, timeout=20, what="all 25 events")
        assert received == set(ids)
        with edge.admin() as admin:
            wait_for(lambda: stats(admin, integration["id"])["delivered"] == 25, what="delivered count")
            assert stats(admin, integration["id"])["queued"] == 0
        edge.stop()
    finally:
        fake.stop()


def test_sigterm_flushes_what_is_ready_then_exits(edge_factory, fake_pinterest):
    # A long flush interval: only the shutdown flush can send these non-priority events.
    edge = edge_factory(env={"SIGNAL_FLUSH_INTERVAL": "60"})
    with edge.admin() as admin:
        source = create_source(admin)
        create_integration(admin, source["id"], variant="retail")
    post_batch(edge.url, source["pipeline_key"], [{"type": "track", "event": "Signed Up"} for _ in range(3)])
    time.sleep(0.5)
    assert fake_pinterest.sandbox.events() == []
    started = time.monotonic()
    assert edge.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 10
    assert [e["event_name"] for e in fake_pinterest.sandbox.events()] == ["signup"] * 3
    assert "stay queued on disk" in edge.output()


def test_seed_curl_body_creates_the_integration(edge):
    body = SEED_BODY.read_text()
    with edge.admin() as admin:
        create_source(admin, id="src_abc123")
        response = admin.post("/integrations", content=body.encode(), headers={"Content-Type": "application/json"})
        assert response.status_code == 201, response.text
        created = response.json()
        assert created["source_id"] == "src_abc123" and created["vendor"] == "pinterest"
        assert created["config"]["ad_account_id"] == "549764982399"
        assert created["config"]["access_token"] != "pina_ABC123..."
        assert created["consent_categories"] == ["advertising"]
        listed = admin.get("/integrations").json()["data"]
        assert [i["id"] for i in listed] == [created["id"]]


def test_admin_validation_errors_name_the_field(edge):
    with edge.admin() as admin:
        create_source(admin, id="src_abc123")
        good = {"source_id": "src_abc123", "vendor": "pinterest", "name": "P",
                "config": {"ad_account_id": "549764982399", "access_token": "pina_x", "conversion_token": "ct_y"}}
        cases = [
            ({**good, "config": {**good["config"], "ad_account_id": "54976-4982"}}, "config.ad_account_id"),
            ({**good, "config": {**good["config"], "access_token": ""}}, "config.access_token"),
            ({**good, "vendor": "meta"}, "vendor"),
            ({**good, "surprise": 1}, "surprise"),
            ({k: v for k, v in good.items() if k != "name"}, "name"),
            ({**good, "source_id": "src_nope"}, "source_id"),
        ]
        for body, field in cases:
            response = admin.post("/integrations", json=body)
            assert response.status_code == 400, (field, response.text)
            error = response.json()["error"]
            assert error["field"] == field and error["message"].startswith(field), error
        bad_json = admin.post("/integrations", content=b"{nope", headers={"Content-Type": "application/json"})
        assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "malformed_json"


def test_admin_api_needs_the_admin_token(edge):
    url = edge.admin_url + "/v1/admin/sources"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Basic {ADMIN_TOKEN}"}).status_code == 401
    ok = httpx.get(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert ok.status_code == 200 and ok.json() == {"data": [], "next_cursor": None, "has_more": False}
