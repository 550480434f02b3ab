"""Server-side and app events (issue 26): a server never passes for the visitor, action_source
follows the event, and a server's identify is remembered by userId for its later calls."""

from __future__ import annotations

import asyncio
import hashlib
import json

from collector.edge.ingest import NO_SERVER_IP, NO_SERVER_USER_AGENT
from tests.support import create_integration, create_source, edge_in_process, post_batch, queued, wait_for

KEY = "sk_live_" + "k" * 32
SERVER = {"Authorization": f"Bearer {KEY}", "User-Agent": "shop-backend/1.0"}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def server_shop(tmp_path):
    return edge_in_process(tmp_path, server_key_sha256=sha(KEY))


def batch(*events, pipeline_key: str | None = None) -> str:
    body = {"batch": list(events)}
    if pipeline_key:
        body["pipeline_key"] = pipeline_key
    return json.dumps(body)


def test_a_server_event_without_the_visitors_address_goes_without_the_servers(tmp_path):
    async def main():
        async with server_shop(tmp_path) as (services, _, client):
            given = {"type": "track", "event": "Order Completed", "messageId": "given",
                     "context": {"ip": "198.51.100.23", "userAgent": "Mozilla/5.0 (iPhone) Visitor/2.0"}}
            bare = {"type": "track", "event": "Order Completed", "messageId": "bare", "properties": {"total": 5}}
            answer = await client.post("/v1/batch", content=batch(given, bare), headers=SERVER)
            assert answer.status_code == 200, answer.text
            assert "set-cookie" not in answer.headers  # a server's HTTP client would send them back for everyone
            events = {ev.message_id: ev for ev in await queued(services)}
            assert (events["given"].ip, events["given"].user_agent) == ("198.51.100.23", "Mozilla/5.0 (iPhone) Visitor/2.0")
            assert events["given"].notes == []
            # The request came from 127.0.0.1 with the backend's own User-Agent: neither is the visitor's.
            assert events["bare"].ip is None and events["bare"].user_agent is None
            assert events["bare"].notes == [NO_SERVER_IP, NO_SERVER_USER_AGENT]
            assert events["bare"].pin_unauth is None
    asyncio.run(main())


def test_a_servers_identify_is_remembered_by_user_id_for_its_later_calls(tmp_path):
    async def main():
        async with server_shop(tmp_path) as (services, source, client):
            identify = {"type": "identify", "userId": "cust-42", "traits": {"email": "Ana@Example.com",
                                                                            "phone": "+1 415 555 0101"}}
            other = {"type": "identify", "userId": "cust-7", "traits": {"email": "bo@example.com"}}
            assert (await client.post("/v1/batch", content=batch(identify, other), headers=SERVER)).status_code == 200
            # Later calls, each without any cookie, as a backend makes them.
            later = [{"type": "track", "event": "Order Completed", "userId": "cust-42", "messageId": "ana-buys"},
                     {"type": "track", "event": "Order Completed", "userId": "cust-7", "messageId": "bo-buys"},
                     {"type": "track", "event": "Order Completed", "userId": "cust-99", "messageId": "nobody-buys"},
                     {"type": "track", "event": "Order Completed", "messageId": "anonymous"}]
            assert (await client.post("/v1/batch", content=batch(*later), headers=SERVER)).status_code == 200
            # A page names the same userId with the public pipeline key: it gets none of the server's memory.
            page = {"type": "track", "event": "Order Completed", "userId": "cust-42", "messageId": "page-claims"}
            assert (await client.post("/v1/batch", content=batch(page, pipeline_key=source.pipeline_key))).status_code == 200
            events = {ev.message_id: ev for ev in await queued(services)}
            assert events["ana-buys"].identity.em == [sha("ana@example.com")]
            assert events["ana-buys"].identity.ph == [sha("14155550101")]
            assert events["bo-buys"].identity.em == [sha("bo@example.com")]
            for nothing in ("nobody-buys", "anonymous", "page-claims"):
                assert events[nothing].identity.em == [], nothing
            assert events["ana-buys"].user_id == "cust-42"
        stored = b"".join(p.read_bytes() for p in tmp_path.glob("edge-*.db*"))
        assert b"Ana@Example.com" not in stored and b"ana@example.com" not in stored  # only hashes
        assert sha("ana@example.com").encode() in stored
    asyncio.run(main())


def test_a_servers_identify_and_track_in_one_request(tmp_path):
    async def main():
        async with server_shop(tmp_path) as (services, _, client):
            events = [{"type": "identify", "userId": "u1", "traits": {"email": "one@example.com"}},
                      {"type": "identify", "userId": "u2", "traits": {"email": "two@example.com"}},
                      {"type": "track", "event": "Signed Up", "userId": "u1", "messageId": "one"},
                      {"type": "track", "event": "Signed Up", "userId": "u2", "messageId": "two"}]
            assert (await client.post("/v1/batch", content=batch(*events), headers=SERVER)).status_code == 200
            found = {ev.message_id: ev for ev in await queued(services)}
            assert found["one"].identity.em == [sha("one@example.com")]
            assert found["two"].identity.em == [sha("two@example.com")]
    asyncio.run(main())


def test_app_and_offline_events_reach_pinterest_with_their_action_source(edge, fake_pinterest):
    """Through the real server to the sandbox, which validates every payload against
    Pinterest's schema: an iOS app's install, an Android app's purchase, an offline sale."""
    with edge.admin() as admin:
        source = create_source(admin)
        create_integration(admin, source["id"])
        key = admin.post(f"/sources/{source['id']}/rotate-server-key").json()["server_key"]
    ios = {"type": "track", "event": "Application Installed", "messageId": "install-1",
           "context": {"app": {"name": "Shop", "version": "4.2.0", "build": "420", "namespace": "com.example.shop"},
                       "os": {"name": "iOS", "version": "17.4"},
                       "device": {"manufacturer": "Apple", "model": "iPhone15,2", "type": "ios"},
                       "network": {"carrier": "T-Mobile", "wifi": True}}}
    android = {"type": "track", "event": "Order Completed", "messageId": "android-1", "properties": {"total": 3},
               "context": {"os": {"name": "Android", "version": "14"}, "device": {"model": "Pixel 8"}}}
    offline = {"type": "track", "event": "Order Completed", "messageId": "offline-1", "properties": {"total": 80},
               "context": {"offline": True, "traits": {"email": "pat@example.com"}}}
    assert post_batch(edge.url, source["pipeline_key"], [ios, android]).status_code == 200
    assert post_batch(edge.url, "", [offline], headers={"Authorization": f"Bearer {key}"}).status_code == 200

    def sent(event_id):
        return next((e for e in fake_pinterest.sandbox.events() if e["event_id"] == event_id), None)

    wait_for(lambda: all(sent(i) for i in ("install-1", "android-1", "offline-1")), what="the three events")
    install = sent("install-1")
    assert (install["event_name"], install["action_source"]) == ("app_install", "app_ios")
    assert install["app_info"] == {"app_name": "Shop", "app_package_name": "com.example.shop", "app_version": "4.2.0"}
    assert install["device_info"]["os_family"] == "ios" and install["device_info"]["network_type"] == "wifi"
    assert (install["device_model"], install["os_version"], install["wifi"]) == ("iPhone15,2", "17.4", True)
    assert sent("android-1")["action_source"] == "app_android"
    assert sent("android-1")["device_info"] == {"model": "Pixel 8", "os_family": "android", "os_version": "14"}
    sale = sent("offline-1")
    assert sale["action_source"] == "offline" and sale["user_data"]["em"] == [sha("pat@example.com")]
    assert "client_ip_address" not in sale["user_data"] and "client_user_agent" not in sale["user_data"]


def test_the_debugger_and_the_preview_say_why_a_server_event_went_without_an_address(edge, fake_pinterest):
    with edge.admin() as admin:
        source = create_source(admin)
        integration = create_integration(admin, source["id"])
        key = admin.post(f"/sources/{source['id']}/rotate-server-key").json()["server_key"]
        order = {"type": "track", "event": "Order Completed", "messageId": "srv-order", "properties": {"total": 5},
                 "context": {"ip": "198.51.100.1", "traits": {"email": "pat@example.com"}}}
        assert post_batch(edge.url, "", [order], headers={"Authorization": f"Bearer {key}"}).status_code == 200
        record = wait_for(lambda: admin.get("/debugger/events", params={"integration_id": integration["id"],
                                                                        "status": "delivered"}).json()["data"],
                          what="the delivered order")[0]
        assert record["incoming"]["notes"] == [NO_SERVER_USER_AGENT]
        assert record["payload"]["user_data"]["client_ip_address"] == "198.51.100.1"
        assert "client_user_agent" not in record["payload"]["user_data"]
        # The preview takes an event that names the visitor's address for a server's, and says the same.
        preview = admin.post(f"/integrations/{integration['id']}/preview", json=order).json()
        assert preview["sent"] and NO_SERVER_USER_AGENT in preview["warnings"]
        assert "client_user_agent" not in preview["payload"]["data"][0]["user_data"]
