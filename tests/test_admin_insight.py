"""What the admin API says when something is wrong (issue 19): refusals, queued events, the
payload preview, plain-words validation errors, replayable dead letters, stray pages."""

from __future__ import annotations

import hashlib
import logging
import re
import time

import httpx
import pytest

from collector.activity import UNKNOWN, ActivityLog
from collector.admin.api import dead_letter_out
from delivery.pinterest.schema_check import schema_validator
from delivery.queue import DeadLetter
from delivery.store import StorageError
from tests.support import ADMIN_TOKEN, create_integration, create_source, post_batch, run_async, stats, wait_for


def test_refusals_are_counted_per_source_and_reason_with_the_last_few_examples(edge):
    with edge.admin() as api:
        source = create_source(api, domain="shop.example", client_rate_limit_per_second=1, client_rate_limit_burst=500)
        key = source["pipeline_key"]
        for origin in ("https://evil.example", "https://other.example"):
            assert post_batch(edge.url, key, [{"type": "page"}], headers={"Origin": origin}).status_code == 403
        mixed = post_batch(edge.url, key, [{"type": "track"}, {"type": "track"}, {"type": "page"}])
        assert mixed.status_code == 200 and len(mixed.json()["rejected"]) == 2
        assert post_batch(edge.url, key, [{"type": "page"}] * 500).status_code == 429  # the bucket had 499 left
        found = api.get(f"/sources/{source['id']}").json()  # current at once: the node flushes before answering
    assert found["rejected"] == {"origin_not_allowed": 2, "invalid_event": 2, "rate_limited": 1}
    recent = [(r["reason"], r["detail"]) for r in found["recent_refusals"]]
    assert recent[0][0] == "rate_limited" and "events/s from one client" in recent[0][1]
    assert ("invalid_event", "batch[0].event: required for track events (the event name)") in recent
    assert [d for r, d in recent if r == "origin_not_allowed"] == ["https://other.example", "https://evil.example"]
    assert found["last_event_at"] is not None
    with edge.admin() as api:
        listed = {s["id"]: s for s in api.get("/sources").json()["data"]}
    assert listed[source["id"]]["rejected"] == found["rejected"]


def test_unknown_keys_are_counted_apart_and_logged_once_a_minute_by_their_first_characters(caplog, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("collector.activity.time.monotonic", lambda: clock[0])
    log = ActivityLog(store=None)
    with caplog.at_level(logging.WARNING, "signal_edge.edge"):
        for i in range(50):
            log.unknown_key(f"dk_live_OLD{i % 2}_rest_of_a_secret_key", "unknown_pipeline_key")
        assert caplog.records == []
        clock[0] += 61
        log.unknown_key("dk_live_OLD0_rest_of_a_secret_key", "unknown_pipeline_key")
    assert len(caplog.records) == 1
    line = caplog.records[0].getMessage()
    assert "refused 51 requests" in line and "'dk_live_OLD0'" in line and "rest_of_a_secret" not in line
    assert log.totals[(UNKNOWN, "unknown_pipeline_key")] == 51


def test_refusal_counts_survive_a_failed_flush():
    class Flaky:
        def __init__(self):
            self.calls, self.saved = 0, []

        def source(self, source_id):
            return object()

        async def record_activity(self, refused, examples, last_events):
            self.calls += 1
            if self.calls == 1:
                raise StorageError("database is locked")
            self.saved.append((refused, last_events))

    store = Flaky()
    log = ActivityLog(store)
    log.record("src_a", "rate_limited", "over the limit", 3)
    log.received("src_a", 5.0)
    run_async(log.flush())
    log.record("src_a", "rate_limited", "over the limit")
    run_async(log.flush())
    assert store.saved == [({("src_a", "rate_limited"): 4}, {"src_a": 5.0})]


def test_queued_events_are_listed_page_by_page_with_why_they_wait(edge):
    with edge.admin() as api:
        source = create_source(api)
        integration = create_integration(api, source["id"], name="Held")
        api.patch(f"/integrations/{integration['id']}", json={"paused": True})
        post_batch(edge.url, source["pipeline_key"],
                   [{"type": "track", "event": "Order Completed", "messageId": f"m{i}"} for i in range(3)])
        first = api.get("/debugger/events", params={"status": "queued", "limit": 2}).json()
        rest = api.get("/debugger/events", params={"status": "queued", "limit": 2,
                                                   "cursor": first["next_cursor"]}).json()
        other = api.get("/debugger/events", params={"status": "queued", "integration_id": "int_other"}).json()
    events = first["data"] + rest["data"]
    assert first["has_more"] and not rest["has_more"]
    assert [e["event_id"] for e in events] == ["m2", "m1", "m0"]  # newest first
    assert {(e["status"], e["integration_id"], e["pinterest_event"]) for e in events} == {
        ("queued", integration["id"], "checkout")}
    assert events[0]["message"] == "waiting: the integration is paused; resume it to send"
    assert events[0]["incoming"]["name"] == "Order Completed"
    assert other["data"] == []


def test_the_preview_shows_the_payload_pinterest_would_get_without_sending_it(edge, fake_pinterest):
    with edge.admin() as api:
        source = create_source(api, consent={"enabled": True, "default_categories": []})
        integration = create_integration(api, source["id"], variant="media",
                                         config={"event_map": {"Quiz Finished": "lead"}})
        preview = lambda body: api.post(f"/integrations/{integration['id']}/preview", json=body)  # noqa: E731
        shown = preview({"type": "track", "event": "quiz finished", "properties": {"value": 3},
                         "context": {"traits": {"email": " Jane@Example.com "}, "consent": {"advertising": True}}})
        assert shown.status_code == 200, shown.text
        result = shown.json()
        assert result["sent"] is True and result["pinterest_event"] == "lead" and result["schema_errors"] == []
        assert result["payload"]["data"][0]["user_data"]["em"] == [hashlib.sha256(b"jane@example.com").hexdigest()]
        assert not list(schema_validator().iter_errors(result["payload"]))
        assert "Jane@Example.com" not in shown.text
        identify = preview({"type": "identify", "userId": "u1", "traits": {"email": "a@b.example"}}).json()
        assert identify["sent"] is False and "only add identity" in identify["reason"]
        integration_consent = create_integration(api, source["id"], consent_categories=["advertising"])
        refused = api.post(f"/integrations/{integration_consent['id']}/preview",
                           json={"type": "track", "event": "Signed Up"}).json()
        assert refused["sent"] is False and "consent" in refused["reason"]
        missing = preview({"type": "track"})
        assert missing.status_code == 400 and missing.json()["error"]["message"] == \
            "event: required for track events (the event name)"
        assert preview({"event": "x"}).json()["error"]["message"].startswith("type: missing")
    assert fake_pinterest.sandbox.recorded() == []  # nothing was sent


@pytest.mark.parametrize("body, message", [
    ({"name": ""}, "name: is empty: fill it in"),
    ({}, "name: is required"),
    ({"name": 5}, "name: must be text, not a whole number"),
    ({"name": "x" * 201}, "name: is too long: at most 200 characters"),
    ({"name": "x", "domain": "shop_example"}, "domain: has the wrong format: a host name such as shop.example.com"),
    ({"name": "x", "client_rate_limit_burst": 5}, "client_rate_limit_burst: must be at least 500"),
    ({"name": "x", "consent": {"default_categories": ["ads"]}},
     "consent.default_categories[0]: 'ads' is not allowed: use one of advertising, analytics, functional, "
     "necessary, personalization"),
    ({"name": "x", "allowed_origins": ["https://a.example/path"]},
     "allowed_origins[0]: has the wrong format: scheme://host[:port], such as https://shop.example.com (no path)"),
])
def test_validation_errors_are_plain_words_that_name_the_field(edge, body, message):
    with edge.admin() as api:
        response = api.post("/sources", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"] == message and error["field"] == message.split(":")[0]
    assert "expected" not in error["message"].lower() and "regex" not in error["message"]


def test_a_pasted_url_in_the_domain_is_cut_to_its_host(edge):
    with edge.admin() as api:
        created = api.post("/sources", json={"name": "x", "domain": "https://Shop.Example.com:8443/cart?a=1"}).json()
        patched = api.patch(f"/sources/{created['id']}", json={"cookie_domain": "shop.example.com/"}).json()
    assert created["domain"] == "shop.example.com" and patched["cookie_domain"] == "shop.example.com"


def test_dead_letters_over_7_days_old_are_marked_not_replayable():
    now = time.time()
    old, fresh = (dead_letter_out(DeadLetter(1, "int_a", "e", b"[]", at, now, 3, "Pinterest: bad"))
                  for at in (now - 8 * 86400, now - 86400))
    assert (old.replayable, fresh.replayable) == (False, True)
    assert "over 7 days old" in old.not_replayable_reason and fresh.not_replayable_reason is None


def test_stray_pages_answer_as_a_person_or_a_script_expects(edge):
    html = {"Accept": "text/html,application/xhtml+xml"}
    page = httpx.get(edge.admin_url + "/integratons", headers=html)
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "Page not found" in page.text
    api = httpx.get(edge.admin_url + "/v1/admin/nope", headers={"Authorization": f"Bearer {ADMIN_TOKEN}", **html})
    assert api.status_code == 404 and api.json()["error"]["code"] == "not_found"
    icon = httpx.get(edge.admin_url + "/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"

    browser = httpx.Client(base_url=edge.admin_url, follow_redirects=False, timeout=10)
    assert browser.get("/debugger?status=queued").headers["location"] == "/login?next=%2Fdebugger%3Fstatus%3Dqueued"
    form = browser.get("/login", params={"next": "https://evil.example/"}).text
    assert 'name="next" value="/integrations"' in form
    for asked, landed in (("/debugger?status=queued", "/debugger?status=queued"), ("//evil.example/x", "/integrations"),
                          ("https://evil.example", "/integrations"), ("/\\evil.example", "/integrations")):
        response = browser.post("/login", data={"token": ADMIN_TOKEN, "next": asked})
        assert response.status_code == 303 and response.headers["location"] == landed
    assert browser.get("/integrations/int_nope").status_code == 404
    assert browser.get("/sources/src_nope").status_code == 404


def test_the_test_event_is_delivered_with_every_seed_example_token_in_the_demo_sandbox():
    from delivery.pinterest.sandbox import Sandbox

    async def main():
        sandbox = Sandbox(demo=True)
        transport = httpx.ASGITransport(app=sandbox)
        async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as client:
            body = {"data": [{"event_name": "page_visit", "action_source": "web", "event_time": int(time.time()),
                              "event_id": "e1", "user_data": {"em": ["a" * 64]}}]}
            answers = [(await client.post("/v5/ad_accounts/549764982399/events", json=body,
                                          headers={"Authorization": f"Bearer {token}"})).status_code
                       for token in ("pina_ABC123...", "ct_ABC123...", "pina_", "nonsense_token")]
        return answers

    assert run_async(main()) == [200, 200, 401, 401]


def test_the_match_quality_names_no_weak_signal_when_every_signal_is_common(edge, fake_pinterest):
    with edge.admin() as api:
        source = create_source(api)
        integration = create_integration(api, source["id"])
        context = {"traits": {"email": "a@b.example", "phone": "+44 7700 900123"}, "page": {"url": "https://s.example/?epik=abc"}}
        post_batch(edge.url, source["pipeline_key"], [{"type": "track", "event": "Signed Up", "userId": "u1",
                                                        "context": context}])
        wait_for(lambda: stats(api, integration["id"])["delivered"] == 1, what="a delivery")
        quality = api.get(f"/integrations/{integration['id']}/match-quality").json()
    assert quality["advice"] == [] and quality["weakest"] is None and quality["hint"] is None
    assert re.fullmatch(r"[a-z_]+", quality["signals"][0]["signal"])
