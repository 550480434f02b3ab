"""Pinterest fidelity, round 2 (issue 18), through the running server: the refused opt-in field,
the server key, URLs scrubbed wherever they are kept, the identity switch across a restart,
and the source's privacy settings."""

from __future__ import annotations

import hashlib

import httpx

from tests.support import create_integration, create_source, post_batch, stats, wait_for


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sent(fake, event_id):
    return next((e for e in fake.sandbox.events() if e["event_id"] == event_id), None)


def test_a_refused_custom_event_name_is_dropped_and_flagged(edge, fake_pinterest):
    with edge.admin() as admin:
        source = create_source(admin)
        integration = create_integration(admin, source["id"], config={"send_custom_event_name": True})
        events = [{"type": "track", "event": "Quiz Finished", "messageId": f"q-{i}"} for i in range(3)]
        assert post_batch(edge.url, source["pipeline_key"], events).status_code == 200
        wait_for(lambda: all(sent(fake_pinterest, f"q-{i}") for i in range(3)), what="the custom events")
        assert all("custom_data" not in sent(fake_pinterest, f"q-{i}") for i in range(3))
        # the batch's health is written once it is settled, a moment after Pinterest has the events
        health = wait_for(lambda: (h := admin.get(f"/integrations/{integration['id']}").json()["health"])["status"]
                          != "pending" and h, what="the integration's health")
        assert health["status"] == "healthy" and health["problem"] == "custom_event_name_refused"
        assert "custom_event_name" in health["pinterest_message"]  # Pinterest's own words
        assert stats(admin, integration["id"])["dead_lettered"] == 0
        refused_before = sum(1 for r in fake_pinterest.sandbox.request_log() if r.status == 400)
        assert post_batch(edge.url, source["pipeline_key"], [{"type": "track", "event": "Quiz Shared",
                                                              "messageId": "q-later"}]).status_code == 200
        wait_for(lambda: sent(fake_pinterest, "q-later"), what="a later custom event")
        assert sum(1 for r in fake_pinterest.sandbox.request_log() if r.status == 400) == refused_before


def test_the_server_key_lets_the_sites_servers_give_the_visitors_address(edge, fake_pinterest):
    with edge.admin() as admin:
        source = create_source(admin, client_rate_limit_per_second=1, client_rate_limit_burst=500)
        create_integration(admin, source["id"])
        issued = admin.post(f"/sources/{source['id']}/rotate-server-key").json()
        key = issued["server_key"]
        assert key.startswith("sk_live_") and "once" in issued["message"]
        shown = admin.get(f"/sources/{source['id']}").json()["server_key"]
        assert shown == f"sk_****{key[-4:]}" and key not in admin.get("/sources").text
    purchase = {"type": "track", "event": "Order Completed", "properties": {"currency": "USD", "total": 9},
                "context": {"ip": "198.51.100.23", "userAgent": "Mozilla/5.0 (iPhone) Visitor/2.0"}}
    server = post_batch(edge.url, "", [{**purchase, "messageId": "srv-1"}],
                        headers={"Authorization": f"Bearer {key}", "User-Agent": "shop-backend/1.0"})
    browser = post_batch(edge.url, source["pipeline_key"], [{**purchase, "messageId": "web-1"}])
    assert server.status_code == 200 and browser.status_code == 200
    wait_for(lambda: sent(fake_pinterest, "srv-1") and sent(fake_pinterest, "web-1"), what="both purchases")
    assert sent(fake_pinterest, "srv-1")["user_data"]["client_ip_address"] == "198.51.100.23"
    assert sent(fake_pinterest, "srv-1")["user_data"]["client_user_agent"] == "Mozilla/5.0 (iPhone) Visitor/2.0"
    assert sent(fake_pinterest, "web-1")["user_data"]["client_ip_address"] == "127.0.0.1"  # not the browser's choice
    # One address speaks for every visitor: no per-client limit for the server key.
    for n in range(3):
        many = [{**purchase, "messageId": f"srv-bulk-{n}-{i}"} for i in range(400)]
        assert post_batch(edge.url, "", many, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    with edge.admin() as admin:
        admin.post(f"/sources/{source['id']}/rotate-server-key")
    old = post_batch(edge.url, "", [purchase], headers={"Authorization": f"Bearer {key}"})
    assert old.status_code == 401 and old.json()["error"]["code"] == "unknown_server_key"


def test_personal_parameters_leave_every_copy_of_a_url(edge, fake_pinterest):
    with edge.admin() as admin:
        source = create_source(admin, privacy={"url_params_to_remove": ["affiliate"]})
        create_integration(admin, source["id"])
    url = "https://shop.example/reset?email=jane%40example.com&token=s3cr3t&affiliate=77&utm_source=pin&page=2"
    referrer = "https://mail.example/open?to=jane@example.com&id=9"
    event = {"type": "page", "messageId": "pg-1", "context": {"page": {"url": url, "referrer": referrer}}}
    assert post_batch(edge.url, source["pipeline_key"], [event]).status_code == 200
    wait_for(lambda: sent(fake_pinterest, "pg-1"), what="the page view")
    assert sent(fake_pinterest, "pg-1")["event_source_url"] == "https://shop.example/reset?utm_source=pin&page=2"
    with edge.admin() as admin:
        record = admin.get("/debugger/events", params={"source_id": source["id"]}).json()["data"][0]
    assert record["incoming"]["page_url"] == "https://shop.example/reset?utm_source=pin&page=2"
    assert record["incoming"]["referrer"] == "https://mail.example/open?id=9"
    edge.stop()
    stored = b"".join(p.read_bytes() for p in edge.db.parent.glob(edge.db.name + "*"))
    for secret in (b"jane", b"s3cr3t", b"affiliate=77"):
        assert secret not in stored, secret


def test_a_second_user_on_a_browser_after_a_restart_inherits_nothing(edge_factory, fake_pinterest):
    first = edge_factory()
    with first.admin() as admin:
        source = create_source(admin, default_country="US")
        create_integration(admin, source["id"])
    browser = httpx.Client()
    ana = {"type": "identify", "userId": "ana", "traits": {"email": "ana@example.com", "phone": "+1 415 555 0101"}}
    assert post_batch(first.url, source["pipeline_key"], [ana], browser).status_code == 200
    first.stop()
    again = edge_factory(db=first.db)
    bo = {"type": "identify", "userId": "bo", "traits": {"email": "bo@example.com"}}
    buy = {"type": "track", "event": "Order Completed", "messageId": "bo-buys", "properties": {"total": 5}}
    assert post_batch(again.url, source["pipeline_key"], [bo, buy], browser).status_code == 200
    wait_for(lambda: sent(fake_pinterest, "bo-buys"), what="Bo's purchase")
    user_data = sent(fake_pinterest, "bo-buys")["user_data"]
    assert user_data["em"] == [sha("bo@example.com")] and "ph" not in user_data
    assert sha("bo") in user_data["external_id"] and sha("ana") not in user_data["external_id"]


def test_privacy_settings_through_the_admin_api(edge):
    with edge.admin() as admin:
        source = create_source(admin, privacy={"ldp": "states", "ldp_states": ["CA", "co"]})
        assert source["privacy"] == {"ldp": "states", "ldp_states": ["ca", "co"], "url_params_to_remove": [],
                                     "gpc": "opt_out"}
        patched = admin.patch(f"/sources/{source['id']}", json={"privacy": {"ldp": "all"}}).json()
        assert patched["privacy"]["ldp"] == "all"
        wrong = admin.patch(f"/sources/{source['id']}", json={"privacy": {"ldp": "sometimes"}})
        assert wrong.status_code == 400 and wrong.json()["error"]["field"] == "privacy.ldp"
        state = admin.patch(f"/sources/{source['id']}", json={"privacy": {"ldp_states": ["California"]}})
        assert state.status_code == 400 and state.json()["error"]["field"] == "privacy.ldp_states[0]"
