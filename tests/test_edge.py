"""The edge over real sockets: limits, errors, CORS, cookies, client address, the served tag (issue 4)."""

from __future__ import annotations

import ipaddress

import httpx
import msgspec
import pytest

from collector.edge.app import query_epik, queue_items
from collector.edge.identity import ProxyTrust, epik_from_query, epik_from_url
from collector.edge.ingest import RequestContext, build_event
from collector.edge.wire import event_decoder
from delivery.config import Source
from delivery.queue import QueueItem
from tests.support import create_integration, create_source, post_batch, stats, wait_for

TRUST = ProxyTrust([ipaddress.ip_network(c) for c in ("127.0.0.1/32", "::1/128", "10.0.0.0/8")])


@pytest.mark.parametrize("peer,xff,expected", [
    ("203.0.113.9", None, "203.0.113.9"),                      # direct client
    ("203.0.113.9", "6.6.6.6", "203.0.113.9"),                 # untrusted peer: its XFF is ignored
    ("127.0.0.1", "198.51.100.7", "198.51.100.7"),             # through a trusted proxy
    ("127.0.0.1", "6.6.6.6, 198.51.100.7", "198.51.100.7"),    # forged left hop, real right-most
    ("127.0.0.1", "198.51.100.7, 10.1.2.3", "198.51.100.7"),   # skip trusted proxies from the right
    ("127.0.0.1", "10.1.2.3", "10.1.2.3"),                     # every hop trusted: the left-most
    ("127.0.0.1", "not-an-ip", "127.0.0.1"),                   # garbage: the peer
    ("::ffff:127.0.0.1", "2001:db8::5", "2001:db8::5"),        # IPv4-mapped peer on a dual-stack socket
    ("127.0.0.1", "198.51.100.7:4711", "198.51.100.7"),        # hop with a port
])
def test_client_address(peer, xff, expected):
    assert TRUST.client_ip(peer, xff) == expected


@pytest.mark.parametrize("url,expected", [
    ("https://shop.example/p?epik=dj0yJnU9QQ", "dj0yJnU9QQ"),
    ("https://shop.example/p?a=1&epik=dj0y%2BJnU&b=2", "dj0y+JnU"),
    ("https://shop.example/p?epikx=1", None),
    ("https://shop.example/p#epik=frag", None),
    (None, None),
])
def test_epik_from_url(url, expected):
    assert epik_from_url(url) == expected


def test_epik_from_query():
    assert epik_from_query("?epik=abc") == "abc" and epik_from_query("utm=1") is None


def test_query_epik_is_only_a_value_safe_to_echo():
    assert query_epik(b"utm_source=pin&epik=dj0yJnU9QQ") == "dj0yJnU9QQ"
    assert query_epik(b"epik=a%3B%20Path%3D%2F") is None  # "a; Path=/" would inject a cookie attribute
    assert query_epik(b"") is None and query_epik(b"epikx=1") is None


@pytest.mark.parametrize("url,search,query,cookie,expected", [
    ("https://shop.example/p?epik=url", "?epik=search", "query", "cookie", "url"),
    ("https://shop.example/p", "?epik=search", "query", "cookie", "search"),
    ("https://shop.example/p?epik=", "?utm=1", "query", "cookie", "query"),  # empty value: not a click
    ("https://shop.example/p", None, None, "cookie", "cookie"),
    (None, None, None, None, None),
    ("https://shop.example/p?epik=a%3Bb", "?epik=search", "query", "cookie", "cookie"),  # unsafe: the cookie's
])
def test_click_id_precedence(url, search, query, cookie, expected):
    """The event's URL, then its search string, then the request's query, then the _epik cookie."""
    source = Source(id="src_1", name="Shop", pipeline_key="dk_1", created_at=0, updated_at=0)
    ctx = RequestContext(source, "203.0.113.9", "UA", "anon", "pin", cookie, query, 1764410000.0, 0.0)
    page = {key: value for key, value in (("url", url), ("search", search)) if value is not None}
    inc = event_decoder.decode(msgspec.json.encode({"type": "page", "context": {"page": page}}))
    assert build_event(inc, None, ctx, None)[0].click_id == expected


def test_hashed_identity_stays_with_its_event():
    """Each event's identity is built afresh: nothing hashed for one browser reaches another's event."""
    source = Source(id="src_1", name="Shop", pipeline_key="dk_1", created_at=0, updated_at=0)
    built = []
    for n, raw in enumerate([{"type": "identify", "traits": {"email": "ann@example.com"}, "userId": "u1"},
                             {"type": "track", "event": "Product Added", "properties": {"sku": "A"}},
                             {"type": "identify", "traits": {"email": "bob@example.com", "phone": "x"}}]):
        ctx = RequestContext(source, "203.0.113.9", "UA", f"anon-{n}", "pin", None, None, 1764410000.0, 0.0)
        built.append(build_event(event_decoder.decode(msgspec.json.encode(raw)), None, ctx, None)[0])
    ann, plain, bob = built
    assert len(ann.identity.em) == 1 and not ann.notes
    assert plain.identity.em == [] and plain.notes == [] and plain.properties == {"sku": "A"}
    assert bob.identity.em != ann.identity.em and len(bob.identity.em) == 1
    assert bob.notes and "ann" not in msgspec.json.encode(bob).decode()


@pytest.fixture
def source(edge):
    with edge.admin() as admin:
        src = create_source(admin, domain="shop.test", cookie_domain="shop.test", rate_limit_per_second=5,
                            rate_limit_burst=20)
        integration = create_integration(admin, src["id"])
    return src, integration


def test_oversized_body_is_413(edge, source):
    src, _ = source
    big = [{"type": "track", "event": "x", "properties": {"pad": "x" * 30000}} for _ in range(20)]
    response = post_batch(edge.url, src["pipeline_key"], big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


def test_bad_events_are_rejected_by_index_and_the_good_ones_kept(edge, source, fake_pinterest):
    src, integration = source
    batch = [
        {"type": "track", "event": "Signed Up", "messageId": "good-1"},
        {"type": "track", "messageId": "no-name"},
        {"type": "track", "event": "Lead Generated", "properties": "not an object"},
        {"type": "track", "event": "x", "properties": {"pad": "x" * 33000}},
        {"type": "track", "event": "Lead Generated", "messageId": "good-2", "timestamp": "yesterday"},
        {"type": "track", "event": "Lead Generated", "messageId": "good-3"},
    ]
    response = post_batch(edge.url, src["pipeline_key"], batch)
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 2
    rejected = {r["index"]: r for r in body["rejected"]}
    assert set(rejected) == {1, 2, 3, 4}
    assert rejected[1]["message"] == "batch[1].event: required for track events (the event name)"
    assert rejected[2]["message"].startswith("batch[2].properties: expected `object")
    assert rejected[3]["code"] == "event_too_large"
    assert rejected[4]["message"].startswith("batch[4].timestamp")
    ids = wait_for(lambda: sorted(e["event_id"] for e in fake_pinterest.sandbox.events())
                   if len(fake_pinterest.sandbox.events()) == 2 else None, what="the two good events")
    assert ids == ["good-1", "good-3"]


def test_one_bad_event_in_a_small_batch_is_rejected_alone(edge, source, fake_pinterest):
    """A small batch is decoded in one call; when that fails, event by event, as a big one is."""
    src, _ = source
    batch = [{"type": "track", "event": "Lead Generated", "messageId": "small-1"},
             {"type": "track", "event": "Lead Generated", "messageId": "small-2", "userId": [1]},
             {"type": "track", "event": "Lead Generated", "messageId": "small-3"}]
    response = post_batch(edge.url, src["pipeline_key"], batch)
    assert response.status_code == 200
    assert response.json()["accepted"] == 2
    [rejected] = response.json()["rejected"]
    assert rejected["index"] == 1 and rejected["message"] == "batch[1].userId: expected `int | str | null`, got `array`"
    ids = wait_for(lambda: sorted(e["event_id"] for e in fake_pinterest.sandbox.events())
                   if len(fake_pinterest.sandbox.events()) == 2 else None, what="the two good events")
    assert ids == ["small-1", "small-3"]


def test_a_request_queues_one_item_per_run_of_equal_priority():
    assert queue_items("int_a", b"a\nb\nc", [1, 1, 1], 5.0) == [QueueItem("int_a", b"a\nb\nc", 5.0, 1, 3)]
    assert queue_items("int_a", b"a\nb\nc\nd", [0, 1, 1, 0], 5.0) == [
        QueueItem("int_a", b"a", 5.0, 0, 1), QueueItem("int_a", b"b\nc", 5.0, 1, 2), QueueItem("int_a", b"d", 5.0, 0, 1)]


@pytest.mark.parametrize("body,code", [
    (b"{not json", "malformed_json"),
    (b'{"batch": {}}', "invalid_body"),
    (b'{"batch": []}', "empty_batch"),
    (b"[]", "invalid_body"),
])
def test_malformed_bodies_are_400_with_a_code(edge, source, body, code):
    src, _ = source
    response = httpx.post(edge.url + "/v1/batch", content=body,
                          headers={"Authorization": f"Bearer {src['pipeline_key']}"})
    assert response.status_code == 400 and response.json()["error"]["code"] == code


def test_unknown_key_is_401_and_a_foreign_origin_403(edge, source):
    src, _ = source
    unknown = post_batch(edge.url, "dk_live_nope", [{"type": "page"}], headers={"Origin": "https://www.shop.test"})
    assert unknown.status_code == 401
    denied = post_batch(edge.url, src["pipeline_key"], [{"type": "page"}], headers={"Origin": "https://evil.test"})
    assert denied.status_code == 403 and "not allowed" in denied.json()["error"]["message"]
    # Refusals carry CORS headers, so that the page's console can show their reason; they hold nothing else.
    for refusal, origin in ((unknown, "https://www.shop.test"), (denied, "https://evil.test")):
        assert refusal.headers["access-control-allow-origin"] == origin
        assert refusal.headers["access-control-allow-credentials"] == "true"
        assert "set-cookie" not in refusal.headers
    allowed = post_batch(edge.url, src["pipeline_key"], [{"type": "page"}],
                         headers={"Origin": "https://www.shop.test"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://www.shop.test"
    assert allowed.headers["access-control-allow-credentials"] == "true"
    preflight = httpx.options(edge.url + "/v1/batch", headers={"Origin": "https://www.shop.test",
                                                               "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 204 and preflight.headers["access-control-allow-origin"] == "https://www.shop.test"


def test_an_origin_is_judged_again_once_its_source_changes(edge, source):
    """The edge remembers each origin's verdict per source (one parse per origin, not per
    request); a change to the source's domain or allowed origins applies to the next request."""
    src, _ = source
    send = lambda origin: post_batch(edge.url, src["pipeline_key"], [{"type": "page"}],  # noqa: E731
                                     headers={"Origin": origin}).status_code
    assert (send("https://evil.test"), send("https://www.shop.test")) == (403, 200)
    with edge.admin() as admin:
        moved = admin.patch(f"/sources/{src['id']}",
                            json={"domain": "shop2.test", "allowed_origins": ["https://evil.test"]})
        assert moved.status_code == 200, moved.text
    wait_for(lambda: send("https://evil.test") == 200)
    assert send("https://www.shop.test") == 403 and send("https://www.shop2.test") == 200
    long_host = "https://" + "a" * 290 + ".shop2.test"  # longer than any kept: judged each time, alike
    assert send(long_host) == 200 and send(long_host.replace("shop2", "shop3")) == 403


def test_over_the_source_rate_is_429_with_retry_after(edge, source):
    src, _ = source
    # Burst 20 events, then 5 events/s: the third batch of 8 is over.
    responses = [post_batch(edge.url, src["pipeline_key"], [{"type": "page"}] * 8) for _ in range(4)]
    assert [r.status_code for r in responses[:2]] == [200, 200]
    limited = next(r for r in responses[2:] if r.status_code == 429)
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["code"] == "rate_limited"


def test_cookie_domain_and_secure_behind_a_trusted_proxy(edge, source):
    src, _ = source
    response = post_batch(edge.url, src["pipeline_key"], [{"type": "page"}],
                          headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.7"})
    cookies = response.headers.get_list("set-cookie")
    assert len(cookies) == 2
    assert all("Domain=shop.test" in c and "Secure" in c for c in cookies)


def test_queue_full_is_503_and_nothing_is_dropped(edge_factory, fake_pinterest):
    fake_pinterest.stop()  # nothing drains the queue
    edge = edge_factory(env={"SIGNAL_QUEUE_MAX": "5"})
    with edge.admin() as admin:
        src = create_source(admin)
        integration = create_integration(admin, src["id"])
        assert post_batch(edge.url, src["pipeline_key"], [{"type": "page"}] * 5).status_code == 200
        full = post_batch(edge.url, src["pipeline_key"], [{"type": "page"}])
        assert full.status_code == 503 and full.headers["retry-after"] == "5"
        assert stats(admin, integration["id"])["accepted"] == 5


def test_the_tag_is_served_compressed_with_a_strong_etag(edge):
    plain = httpx.get(edge.url + "/d.js", headers={"Accept-Encoding": "identity"})
    zipped = httpx.get(edge.url + "/d.js", headers={"Accept-Encoding": "gzip, br"})
    assert plain.status_code == zipped.status_code == 200
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.content == plain.content  # httpx decoded the gzip body
    etag = zipped.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/") and etag != plain.headers["etag"]
    assert "max-age=" in zipped.headers["cache-control"] and zipped.headers["vary"] == "Accept-Encoding"
    again = httpx.get(edge.url + "/datafly.js", headers={"Accept-Encoding": "gzip", "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert plain.headers["content-type"].startswith("application/javascript")
    assert len(zipped.headers["content-length"]) and int(zipped.headers["content-length"]) < 4096


def test_one_client_cannot_spend_the_sites_budget(edge):
    """Issue 16: a request of 30,000 events pushed every visitor into 429. Now a request holds at
    most 500 events, and each client (as seen through the trusted proxy) has its own bucket."""
    with edge.admin() as admin:
        src = create_source(admin, rate_limit_per_second=1000, rate_limit_burst=5000,
                            client_rate_limit_per_second=10, client_rate_limit_burst=500)
    key = src["pipeline_key"]

    def send(n, client_ip):
        return post_batch(edge.url, key, [{"type": "page"}] * n, headers={"X-Forwarded-For": client_ip})

    too_many = send(501, "198.51.100.7")
    assert too_many.status_code == 413 and too_many.json()["error"]["code"] == "too_many_events"
    assert "at most 500" in too_many.json()["error"]["message"]
    assert send(500, "198.51.100.7").status_code == 200
    flooded = send(500, "198.51.100.7")
    assert flooded.status_code == 429 and "from one client" in flooded.json()["error"]["message"]
    assert int(flooded.headers["retry-after"]) >= 1
    # Every other visitor of the site is unaffected, IPv6 ones by their /64.
    assert send(10, "198.51.100.8").status_code == 200
    assert send(500, "2001:db8:1:2::1").status_code == 200
    assert send(500, "2001:db8:1:2::ffff").status_code == 429
    assert send(10, "2001:db8:1:3::1").status_code == 200
