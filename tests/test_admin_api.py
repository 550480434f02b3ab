"""The management API: complete, documented and safe (issue 6)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests.support import (
    ADMIN_TOKEN,
    ROOT,
    SignalEdge,
    create_integration,
    create_source,
    post_batch,
    stats,
    wait_for,
)

SEED_BODY = (Path(__file__).parent / "fixtures" / "seed_curl_body.json").read_bytes()
SEED_ACCESS, SEED_CONVERSION = "pina_ABC123...", "ct_ABC123..."


def test_the_seed_curl_creates_a_working_integration(edge, fake_pinterest):
    fake_pinterest.sandbox.add_token(SEED_CONVERSION)
    fake_pinterest.sandbox.add_token(SEED_ACCESS)
    with edge.admin() as admin:
        create_source(admin, id="src_abc123")
        created = admin.post("/integrations", content=SEED_BODY, headers={"Content-Type": "application/json"})
        assert created.status_code == 201, created.text
        integration = created.json()
        assert integration["warnings"] == []  # pina_ / ct_ prefixes as expected
        test = admin.post(f"/integrations/{integration['id']}/test")
        assert test.status_code == 200
        assert test.json()["ok"] is True, test.json()
        assert "accepted the test event" in test.json()["message"]
    sent = fake_pinterest.sandbox.recorded()
    assert [(r.test, r.token) for r in sent] == [(True, SEED_CONVERSION), (True, SEED_ACCESS)]
    assert sent[0].ad_account_id == "549764982399"


def press_test(admin, access_token: str, conversion_token: str) -> tuple[dict, dict]:
    """A new integration with these tokens, and the answer of its Test button."""
    source = create_source(admin)
    integration = create_integration(admin, source["id"], config={"access_token": access_token,
                                                                   "conversion_token": conversion_token})
    return integration, admin.post(f"/integrations/{integration['id']}/test").json()


def test_the_test_button_explains_a_bad_token(edge, fake_pinterest):
    with edge.admin() as admin:
        integration, result = press_test(admin, "pina_OLD", "ct_OLD")
        assert result["ok"] is False
        assert result["message"] == "The conversion token and the API access token failed."
        assert [(c["credential"], c["ok"]) for c in result["checks"]] == [("conversion_token", False),
                                                                          ("access_token", False)]
        assert all(c["message"].startswith("refused: 401 ") for c in result["checks"])
        health = admin.get(f"/integrations/{integration['id']}").json()["health"]
        assert health["status"] == "unhealthy" and health["problem"] == "unauthorized"
        assert health["message"].startswith("401 Unauthorized: the access token has expired or been revoked")


def test_the_test_button_tries_every_credential_and_names_the_one_that_fails(edge, fake_pinterest):
    fake_pinterest.sandbox.add_token("ct_GOOD")
    with edge.admin() as admin:
        integration, result = press_test(admin, "pina_REVOKED", "ct_GOOD")
        assert result["ok"] is False
        assert result["message"].startswith("The API access token failed. Delivery goes on with the credential")
        assert [(c["credential"], c["ok"]) for c in result["checks"]] == [("conversion_token", True),
                                                                          ("access_token", False)]
        assert admin.get(f"/integrations/{integration['id']}").json()["health"]["status"] == "healthy"
        fake_pinterest.sandbox.add_token("pina_REVOKED")
        result = admin.post(f"/integrations/{integration['id']}/test").json()
        assert result["ok"] is True and "with the conversion token and the API access token" in result["message"]
    tokens = sorted(r.token for r in fake_pinterest.sandbox.recorded())
    assert tokens == ["ct_GOOD", "ct_GOOD", "pina_REVOKED"]  # each one tried on its own


def test_no_response_log_record_or_file_holds_a_full_token(edge_factory, fake_pinterest):
    access, conversion = "pina_SECRETaccess0123456789wxyz", "ct_SECRETconversion0123456789abcd"
    edge = edge_factory(env={"SIGNAL_LOG_LEVEL": "debug"})
    fake_pinterest.sandbox.add_token(access)
    seen: list[str] = []
    with edge.admin() as admin:
        source = create_source(admin)
        created = admin.post("/integrations", json={
            "source_id": source["id"], "vendor": "pinterest", "name": "P",
            "config": {"ad_account_id": "549764982399", "access_token": access, "conversion_token": conversion}})
        seen.append(created.text)
        integration = created.json()["id"]
        assert created.json()["config"]["access_token"] == "pina_****wxyz"
        assert created.json()["config"]["conversion_token"] == "ct_****abcd"
        post_batch(edge.url, source["pipeline_key"], [{"type": "track", "event": "Signed Up"}])
        wait_for(lambda: stats(admin, integration)["delivered"] == 1, what="a delivery")
        seen.append(admin.post(f"/integrations/{integration}/test").text)
        patched = admin.patch(f"/integrations/{integration}", json={"name": "renamed", "config": {"test_mode": True}})
        seen.append(patched.text)
        for path in ("/integrations", f"/integrations/{integration}", "/audit-log", "/debugger/events",
                     f"/integrations/{integration}/dead-letters", "/sources", "/catalog/pinterest", "/openapi.json"):
            seen.append(admin.get(path).text)
        seen.append(httpx.get(edge.admin_url + "/metrics").text)
        # The omitted secrets were kept: delivery still authenticates with them.
        post_batch(edge.url, source["pipeline_key"], [{"type": "track", "event": "Lead Generated"}])
        wait_for(lambda: stats(admin, integration)["delivered"] == 2, what="delivery after the PATCH")
    edge.stop()
    seen.append(edge.output())
    files = b"".join(p.read_bytes() for p in edge.db.parent.glob(edge.db.name + "*"))
    for secret in (access, conversion):
        core = secret.split("_", 1)[1]
        assert not any(core in text for text in seen), f"{secret[:5]}... leaked"
        assert core.encode() not in files, "a token is stored in clear"
    assert "debug" in edge.output().lower() or "DEBUG" in edge.output()


def test_patch_keeps_omitted_secrets_and_audits_with_redaction(edge):
    with edge.admin() as admin:
        source = create_source(admin)
        integration = create_integration(admin, source["id"])
        iid = integration["id"]
        patched = admin.patch(f"/integrations/{iid}", json={"variant": "media", "consent_categories": ["advertising"],
                                                            "config": {"event_map": {"Video Watched": "watch_video"}}})
        assert patched.status_code == 200
        body = patched.json()
        assert body["variant"] == "media" and body["config"]["event_map"] == {"Video Watched": "watch_video"}
        assert body["config"]["access_token"] == integration["config"]["access_token"]
        assert body["updated_at"] > body["created_at"]
        renamed = admin.patch(f"/sources/{source['id']}", json={"name": "Renamed", "default_country": "gb"})
        assert renamed.json()["name"] == "Renamed" and renamed.json()["default_country"] == "GB"
        rotated = admin.post(f"/sources/{source['id']}/rotate-key").json()
        assert rotated["pipeline_key"] != source["pipeline_key"] and rotated["pipeline_key"] in rotated["snippet"]
        assert admin.delete(f"/integrations/{iid}").status_code == 204
        assert admin.delete(f"/sources/{source['id']}").status_code == 204
        log = admin.get("/audit-log", params={"limit": 100}).json()["data"]
        actions = [(a["action"], a["object_type"]) for a in log]
        assert actions == [("delete", "source"), ("delete", "integration"), ("rotate-key", "source"),
                           ("update", "source"), ("update", "integration"), ("create", "integration"),
                           ("create", "source")]
        update = log[4]
        assert update["old"]["variant"] == "default" and update["new"]["variant"] == "media"
        assert update["new"]["config"]["access_token"] == "[redacted]"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", update["at"])


def test_conventions_404_409_415_and_pagination(edge):
    with edge.admin() as admin:
        assert admin.get("/sources/src_nope").json()["error"]["code"] == "not_found"
        assert admin.get("/sources/src_nope").status_code == 404
        assert admin.delete("/integrations/int_nope").status_code == 404
        assert admin.get("/no/such/path").status_code == 404
        form = admin.post("/sources", content=b"name=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert form.status_code == 415 and form.json()["error"]["code"] == "unsupported_media_type"
        created = [create_source(admin, name=f"s{i}") for i in range(5)]
        assert admin.post("/sources", json={"name": "dup", "id": created[0]["id"]}).status_code == 409
        integration = create_integration(admin, created[0]["id"])
        conflict = admin.delete(f"/sources/{created[0]['id']}")
        assert conflict.status_code == 409 and "integrations" in conflict.json()["error"]["message"]
        pages, cursor = [], None
        while True:
            page = admin.get("/sources", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
            pages.append([s["id"] for s in page["data"]])
            if not page["has_more"]:
                assert page["next_cursor"] is None
                break
            cursor = page["next_cursor"]
        assert pages == [[s["id"] for s in created[i:i + 2]] for i in (0, 2, 4)]
        assert admin.get("/sources", params={"limit": 0}).json()["error"]["field"] == "limit"
        assert admin.get("/sources", params={"cursor": "bogus"}).status_code == 400
        # Digits that are not ASCII ("²".isdigit() is True, int("²") raises): found by the fuzz test.
        for params, field in (({"cursor": "²"}, "cursor"), ({"limit": "²"}, "limit")):
            answer = admin.get("/audit-log", params=params)
            assert answer.status_code == 400 and answer.json()["error"]["field"] == field, answer.text
        assert admin.get("/integrations", params={"source_id": created[1]["id"]}).json()["data"] == []
        assert [i["id"] for i in admin.get("/integrations", params={"source_id": created[0]["id"]}).json()["data"]] \
            == [integration["id"]]


@pytest.mark.parametrize("body,field,code", [
    ({"config": {"ad_account_id": "act_549764982399"}}, "config.ad_account_id", "invalid_field"),
    ({"config": {"ad_account_id": "1234567890123456789"}}, "config.ad_account_id", "invalid_field"),
    ({"config": {"conversion_token": ""}}, "config.conversion_token", "invalid_field"),
    ({"config": {"rate_limit_per_second": 0}}, "config.rate_limit_per_second", "invalid_field"),
    ({"config": {"event_map": {"Video Watched": "watched_video"}}}, "config.event_map.Video Watched", "invalid_field"),
    ({"config": {"surprise": True}}, "config.surprise", "unknown_field"),
    ({"variant": "fashion"}, "variant", "invalid_field"),
    ({"consent_categories": ["ads"]}, "consent_categories[0]", "invalid_field"),
    ({"enabled": "yes"}, "enabled", "invalid_field"),
    ({"extra": 1}, "extra", "unknown_field"),
])
def test_every_validation_error_names_its_field(edge, body, field, code):
    with edge.admin() as admin:
        source = create_source(admin)
        base = {"source_id": source["id"], "vendor": "pinterest", "name": "P",
                "config": {"ad_account_id": "549764982399", "access_token": "pina_x", "conversion_token": "ct_y"}}
        merged = {**base, **body, "config": {**base["config"], **body.get("config", {})}}
        response = admin.post("/integrations", json=merged)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["field"], error["code"]) == (field, code), error
        assert error["message"].startswith(field + ":")


def test_unusual_token_prefixes_warn_but_are_accepted(edge):
    with edge.admin() as admin:
        source = create_source(admin)
        created = create_integration(admin, source["id"], config={"access_token": "abc", "conversion_token": "xyz"})
        assert len(created["warnings"]) == 2 and "pina_" in created["warnings"][0] and "ct_" in created["warnings"][1]


@pytest.mark.process
def test_credentials_missing_wrong_or_rotated_get_401(tmp_path, fake_pinterest):
    edge = SignalEdge(tmp_path, fake_pinterest.url)
    edge.env.pop("SIGNAL_ADMIN_TOKEN")
    edge.start()
    # Not a terminal: the generated token went to a 0600 file beside the database, not to the output.
    printed = edge.db.with_suffix(".admin-token").read_text().strip()
    assert printed not in edge.output()
    url = edge.admin_url + "/v1/admin/sources"
    assert httpx.get(url, headers={"Authorization": f"Bearer {printed}"}).status_code == 200
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer " + printed[:-1] + "x"}).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Token " + printed}).status_code == 401
    assert "WWW-Authenticate" in httpx.get(url).headers

    rotated = subprocess.run([sys.executable, "-m", "collector", "admin-token", "--rotate", "--db", str(edge.db)],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert rotated.startswith("sea_") and rotated != printed
    wait_for(lambda: httpx.get(url, headers={"Authorization": f"Bearer {rotated}"}).status_code == 200,
             what="the rotated token to work")
    expired = httpx.get(url, headers={"Authorization": f"Bearer {printed}"})
    assert expired.status_code == 401 and "rotated" in expired.json()["error"]["message"]
    edge.stop()

    again = SignalEdge(tmp_path, fake_pinterest.url, db=edge.db)
    again.env.pop("SIGNAL_ADMIN_TOKEN")
    again.start()
    assert "admin token (shown once" not in again.output()  # printed only when it was generated
    assert httpx.get(again.admin_url + "/v1/admin/sources", headers={"Authorization": f"Bearer {rotated}"}).status_code == 200
    again.stop()
    db = edge.db.read_bytes()
    assert printed.encode() not in db and rotated.encode() not in db  # only hashes are stored


def test_match_quality_counts_the_signals_delivered_and_names_the_weakest(edge, shop, fake_pinterest):
    source, integration = shop
    email, phone = {"email": "ana@example.com"}, {"phone": "+44 7700 900123"}
    visitors = [  # four browsers (no cookie jar), each event with its own identity
        {"traits": {**email, **phone}, "page": {"url": "https://shop.example/p?epik=dj0yJnU9QQ"}},
        {"traits": {**email, **phone}},
        {"traits": email},
        {},
    ]
    for context in visitors:
        event = {"type": "track", "event": "Product Added", "properties": {"product_id": "A"}, "context": context}
        assert post_batch(edge.url, source["pipeline_key"], [event]).status_code == 200
    with edge.admin() as admin:
        wait_for(lambda: stats(admin, integration["id"])["delivered"] == 4, what="four deliveries")
        response = admin.get(f"/integrations/{integration['id']}/match-quality")
    assert response.status_code == 200
    quality = response.json()
    shares = {s["signal"]: (s["count"], s["share"]) for s in quality["signals"]}
    assert quality["events"] == 4
    assert shares == {"click_id": (1, 0.25), "em": (3, 0.75), "ph": (2, 0.5),
                      "external_id": (4, 1.0), "ip_and_user_agent": (4, 1.0)}
    assert quality["weakest"] == "click_id"
    assert [a["signal"] for a in quality["advice"]] == ["click_id"]  # only what is weak (under half)
    assert "epik" in quality["hint"] and "hashed email" not in quality["hint"]
    assert "ana@example.com" not in response.text


def test_debugger_stream_shows_events_live(edge, fake_pinterest):
    with edge.admin() as admin:
        source = create_source(admin)
        integration = create_integration(admin, source["id"])
    received: list[dict] = []

    def listen():
        with httpx.stream("GET", edge.admin_url + "/v1/admin/debugger/stream",
                          params={"integration_id": integration["id"]},
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10) as stream:
            for line in stream.iter_lines():
                connected.set()  # the stream's first line comes once it is subscribed
                if line.startswith("data: "):
                    received.append(json.loads(line[6:]))
                    if received[-1]["status"] == "delivered":
                        return

    connected = threading.Event()
    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert connected.wait(10), "the debugger stream did not start"
    post_batch(edge.url, source["pipeline_key"], [{"type": "track", "event": "Order Completed", "messageId": "live-1",
                                                    "properties": {"total": 10, "currency": "USD"}}])
    listener.join(10)
    delivered = received[-1]
    assert delivered["event_id"] == "live-1" and delivered["pinterest_event"] == "checkout"
    assert delivered["payload"]["custom_data"]["value"] == "10"
    assert delivered["incoming"]["name"] == "Order Completed"
