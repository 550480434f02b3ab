"""Attribution that survives the real web (issue 25), at the edge in process: a source's own names
with and without its prefix, the cookies every response renews, consent before advertising
identifiers, Global Privacy Control, key rotation with overlap, refusals a page can read, and how
browsers' requests arrive."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime

import httpx
import msgspec
import pytest

from collector.admin.deployment import deployment
from collector.admin.metrics import render
from collector.edge.arrival import arrival
from collector.edge.identity import without_epik
from collector.edge.serving import FORBIDDEN_WORDS, RESERVED, conflict, default_serving, own_paths
from delivery.config import ConsentSettings, PrivacySettings, RetiredKey, Serving, Source
from tests.support import create_integration, create_source, edge_in_process, post_batch, queued, wait_for

SERVING = Serving("/sig", "k3v9q2mx.js", "w8r2p4nz")
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
SAME_ORIGIN = {"Origin": "https://www.shop.test", "Host": "www.shop.test", "Sec-Fetch-Site": "same-origin",
               "User-Agent": UA}
DAY = 86400


def batch(*events: dict, key: str = "dk_live_inproc") -> str:
    return json.dumps({"pipeline_key": key, "batch": list(events)})


def page(url: str = "https://www.shop.test/landing", categories: list[str] | None = None) -> dict:
    context: dict = {"page": {"url": url}}
    if categories is not None:
        context["consent"] = {"categories": categories}
    return {"type": "page", "context": context}


def set_cookies(response) -> dict[str, str]:
    return {header.split("=", 1)[0]: header for header in response.headers.get_list("set-cookie")}


def jar(response) -> str:
    """The Cookie header a browser sends back after `response`."""
    return "; ".join(header.split(";", 1)[0] for header in response.headers.get_list("set-cookie"))


def in_process(tmp_path, test, **source_fields):
    async def main():
        async with edge_in_process(tmp_path, **source_fields) as (services, source, client):
            await test(services, source, client)
    asyncio.run(main())


# --- same-origin serving -----------------------------------------------------------------------


def test_a_sources_tag_and_ingestion_answer_on_its_names_with_or_without_its_prefix(tmp_path):
    async def test(services, source, client):
        kept = await client.get("/sig/k3v9q2mx.js")  # the proxy kept the prefix (Caddy's handle)
        stripped = await client.get("/k3v9q2mx.js", headers={"Accept-Encoding": "gzip"})  # handle_path
        plain = await client.get("/d.js")
        assert kept.status_code == stripped.status_code == plain.status_code == 200
        assert kept.content == stripped.content and kept.headers["etag"] != plain.headers["etag"]
        assert kept.headers["content-type"].startswith("application/javascript")
        assert '"e":"w8r2p4nz"' in kept.text and "/*config*/{}" in plain.text
        # Served without its comment lines and indentation.
        assert not any(line.startswith((" ", "//")) for line in kept.text.splitlines())
        for path in ("/sig/w8r2p4nz", "/w8r2p4nz", "/v1/batch", "/sig/v1/batch"):
            answer = await client.post(path, content=batch(page()), headers=SAME_ORIGIN)
            assert answer.status_code == 200 and answer.json()["accepted"] == 1, path
        assert len(await queued(services)) == 4
        assert (await client.get("/sig/other.js")).status_code == 404
        assert (await client.post("/sig/other", content=batch(page()))).status_code == 404
        # The routes follow the source's names as soon as they change.
        await services.store.put_source(msgspec.structs.replace(source, serving=Serving("/s2", "a1.js", "b1")), None)
        assert (await client.get("/sig/k3v9q2mx.js")).status_code == 404
        assert (await client.get("/s2/a1.js")).status_code == 200
        assert (await client.post("/s2/b1", content=batch(page()))).status_code == 200
        assert (await client.post("/w8r2p4nz", content=batch(page()))).status_code == 404
    in_process(tmp_path, test, serving=SERVING)


def test_a_sources_tag_carries_its_endpoint_consent_and_the_mapping_in_effect(tmp_path):
    def config(response) -> dict:
        line = response.text.rstrip().splitlines()[-1]
        return json.loads(line[line.index("document, ") + len("document, "):-2])

    async def test(services, source, client):
        served = config(await client.get("/k3v9q2mx.js"))
        assert served["e"] == "w8r2p4nz" and "b" not in served and "c" not in served
        # Pinterest Tag names of the events the mapping sends as standard events; custom ones are left out.
        assert served["m"][""] == "pagevisit" and served["m"]["product added"] == "addtocart"
        assert served["m"]["order completed"] == "checkout" and "cart viewed" not in served["m"]
        integration = services.store.integration("int_inproc")
        await services.store.put_integration(msgspec.structs.replace(integration, config=msgspec.structs.replace(
            integration.config, event_map={"Order Completed": "lead", "Video Watched": "watch_video"})), None)
        await services.store.put_source(msgspec.structs.replace(
            source, pintrk_bridge=True, consent=ConsentSettings(True)), None)
        served = config(await client.get("/k3v9q2mx.js"))
        assert served["b"] == 1 and served["c"] == 1
        assert served["m"]["order completed"] == "lead" and served["m"]["video watched"] == "watchvideo"
        await services.store.put_integration(msgspec.structs.replace(integration, enabled=False), None)
        assert "m" not in config(await client.get("/k3v9q2mx.js"))
    in_process(tmp_path, test, serving=SERVING)


def test_default_names_are_opaque_stable_and_distinct():
    names = [default_serving(f"src_{n}") for n in range(300)]
    assert default_serving("src_7") == names[7]
    for serving in names:
        text = (serving.prefix + serving.script + serving.endpoint).lower()
        assert not any(word in text for word in FORBIDDEN_WORDS)
        assert not set(own_paths(serving)) & RESERVED
    paths = [path for serving in names for path in own_paths(serving)]
    assert len(set(paths)) == len(paths)


@pytest.mark.parametrize("serving,field,says", [
    (Serving("/analytics", "a.js", "b"), "prefix", "'analytics'"),
    (Serving("/sig", "pixel.js", "b"), "script", "'pixel'"),
    (Serving("/sig", "a.js", "Collect"), "endpoint", "'collect'"),
    (Serving("/sig", "a.js", "a"), "endpoint", "differ"),
    (Serving("/sig", "d.js", "b"), "script", "/d.js"),
    (Serving("/sig", "a.js", "healthz"), "endpoint", "/healthz"),
    (Serving("/v1", "a.js", "b"), "prefix", "the edge answers itself"),
    (Serving("/other", "theirs.js", "b"), "script", "src_other already answers on /theirs.js"),
])
def test_names_that_cannot_be_served_are_refused_naming_the_field(serving, field, says):
    other = Source(id="src_other", name="Other", pipeline_key="dk_2", created_at=0, updated_at=0,
                   serving=Serving("/x", "theirs.js", "their"))
    found = conflict(serving, "src_me", [other])
    assert found.field == field and says in found.message and found.taken == ("already answers" in says)


# --- cookies -------------------------------------------------------------------------------------


def test_the_first_response_of_a_day_renews_the_identity_cookies_host_only_and_secure_behind_tls(tmp_path):
    async def test(services, source, client):
        first = await client.post("/w8r2p4nz", content=batch(page("https://www.shop.test/?epik=dj0yJnU9QQ")),
                                  headers={**SAME_ORIGIN, "X-Forwarded-Proto": "https"})
        made = set_cookies(first)
        assert set(made) == {"_dfid", "_pin_unauth", "_epik"}
        for name, days in (("_dfid", 400), ("_pin_unauth", 365), ("_epik", 365)):
            assert f"Max-Age={days * DAY}" in made[name] and "Secure" in made[name], name
            assert "Domain=" not in made[name], name  # host-only: the site's own host
        anonymous_id, day = made["_dfid"].split(";")[0].removeprefix("_dfid=").split(".")
        assert day == str(int(time.time() // DAY))
        # Later the same day: nothing new, nothing sent (the hot path stays as it was).
        same_day = await client.post("/w8r2p4nz", content=batch(page()), headers={**SAME_ORIGIN, "Cookie": jar(first)})
        assert same_day.headers.get_list("set-cookie") == []
        # The first response of another day sets them all again, same values, a whole lifetime ahead;
        # and so does a browser whose _dfid is from before renewals were dated.
        yesterday = jar(first).replace(f".{day}", f".{int(day) - 1}")
        for cookie in (yesterday, jar(first).replace(f".{day}", "")):
            renewed = set_cookies(await client.post("/w8r2p4nz", content=batch(page()),
                                                    headers={**SAME_ORIGIN, "Cookie": cookie}))
            assert {n: v.split(";")[0] for n, v in renewed.items()} == {n: v.split(";")[0] for n, v in made.items()}
            assert f"Max-Age={365 * DAY}" in renewed["_epik"] and "Secure" not in renewed["_epik"]  # plain http
        assert {e.anonymous_id for e in await queued(services)} == {anonymous_id}
    in_process(tmp_path, test, serving=SERVING)


def test_with_consent_enforced_no_advertising_identifier_is_written_before_the_grant(tmp_path):
    landing = "https://www.shop.test/landing?utm_source=pin&epik=dj0yJnU9QQ"

    async def test(services, source, client):
        before = await client.post("/v1/batch", content=batch(page(landing)), headers=SAME_ORIGIN)
        assert set(set_cookies(before)) == {"_dfid"}
        granted = await client.post("/v1/batch", content=batch(page(landing, ["advertising"])),
                                    headers={**SAME_ORIGIN, "Cookie": jar(before)})
        assert set(set_cookies(granted)) == {"_pin_unauth", "_epik"}
        cookies = "; ".join((jar(before), jar(granted)))
        silent = await client.post("/v1/batch", content=batch(page()), headers={**SAME_ORIGIN, "Cookie": cookies})
        assert set_cookies(silent) == {}  # no answer on this page: left alone
        refused = await client.post("/v1/batch", content=batch(page(categories=["!advertising", "analytics"])),
                                    headers={**SAME_ORIGIN, "Cookie": cookies})
        deleted = set_cookies(refused)
        assert "Max-Age=0" in deleted["_pin_unauth"] and "Max-Age=0" in deleted["_epik"]
        events = await queued(services)
        assert [e.click_id for e in events] == [None, "dj0yJnU9QQ", None, None]
        assert [bool(e.pin_unauth) for e in events] == [False, True, False, False]
        assert events[0].page_url == "https://www.shop.test/landing?utm_source=pin"  # the click id left the URL
        assert events[1].page_url == landing
        assert "epik" not in msgspec.json.encode([events[0], events[2], events[3]]).decode()
    in_process(tmp_path, test, consent=ConsentSettings(True, []))


def test_advertising_granted_by_default_writes_the_identifiers(tmp_path):
    async def test(services, source, client):
        answer = await client.post("/v1/batch", content=batch(page("https://www.shop.test/?epik=abc")))
        assert set(set_cookies(answer)) == {"_dfid", "_pin_unauth", "_epik"}
        assert (await queued(services))[0].click_id == "abc"
    in_process(tmp_path, test, consent=ConsentSettings(True, ["advertising"]))


def test_the_click_id_leaves_only_its_own_parameter():
    assert without_epik("https://s.test/p?a=1&epik=x&b=2#top") == "https://s.test/p?a=1&b=2#top"
    assert without_epik("https://s.test/p?epik=x") == "https://s.test/p"
    assert without_epik("https://s.test/p?epikx=1") == "https://s.test/p?epikx=1"
    assert without_epik(None) is None


@pytest.mark.parametrize("mode,opted_out", [("opt_out", True), ("no_delivery", False)])
def test_global_privacy_control_follows_the_sources_setting(tmp_path, mode, opted_out):
    async def test(services, source, client):
        await client.post("/v1/batch", content=batch(page()), headers={**SAME_ORIGIN, "Sec-GPC": "1"})
        await client.post("/v1/batch", content=batch(page()), headers=SAME_ORIGIN)
        with_gpc, without = await queued(services)
        assert (with_gpc.gpc, with_gpc.opt_out) == (True, opted_out)
        assert (without.gpc, without.opt_out) == (False, False)
    in_process(tmp_path, test, privacy=PrivacySettings(gpc=mode))


# --- keys and refusals -------------------------------------------------------------------------


def test_a_rotated_key_works_through_its_overlap_then_is_refused_and_counted_on_its_source(tmp_path):
    now = time.time()
    retired = [RetiredKey("dk_live_previous", now + 60), RetiredKey("dk_live_ancient", now - 1)]

    async def test(services, source, client):
        inside = await client.post("/v1/batch", content=batch(page(), key="dk_live_previous"), headers=SAME_ORIGIN)
        assert inside.status_code == 200
        after = await client.post("/v1/batch", content=batch(page(), key="dk_live_ancient"), headers=SAME_ORIGIN)
        assert after.status_code == 401 and after.json()["error"]["code"] == "expired_pipeline_key"
        assert "stopped working at" in after.json()["error"]["message"]
        assert after.headers["access-control-allow-origin"] == "https://www.shop.test"
        assert services.activity.totals[(source.id, "expired_pipeline_key")] == 1
        unknown = await client.post("/v1/batch", content=batch(page(), key="dk_live_nobody"), headers=SAME_ORIGIN)
        assert unknown.status_code == 401 and unknown.headers["access-control-allow-credentials"] == "true"
        malformed = await client.post("/v1/batch", content="{", headers=SAME_ORIGIN)
        assert malformed.status_code == 400 and malformed.headers["access-control-allow-origin"]
    in_process(tmp_path, test, retired_keys=retired)


# --- how requests arrive -----------------------------------------------------------------------


@pytest.mark.parametrize("fetch_site,origin,host,expected", [
    ("same-origin", "https://www.shop.test", "www.shop.test", "same-origin"),
    ("cross-site", "https://www.shop.test", "www.shop.test", "cross-site"),  # the browser's word wins
    ("none", None, None, None),
    (None, "http://www.shop.test:8000", "www.shop.test:8000", "same-origin"),
    (None, "http://www.shop.test:8000", "data.shop.test:8080", "same-site"),
    (None, "http://www.shop.test", "edge.other.test", "cross-site"),
    (None, None, "edge.other.test", None),  # a server: no Origin
])
def test_how_a_request_arrived(fetch_site, origin, host, expected):
    assert arrival(fetch_site, origin, host) == expected


def test_cross_site_arrival_is_a_warning_on_the_source_and_in_metrics(tmp_path):
    async def test(services, source, client):
        assert deployment(source, services.activity).status == "unknown"
        await client.post("/v1/batch", content=batch(page()), headers=SAME_ORIGIN)
        check = deployment(source, services.activity)
        assert (check.status, check.warning, check.fix) == ("same-origin", False, None)
        await client.post("/v1/batch", content=batch(page()), headers={
            **SAME_ORIGIN, "Host": "data.shop.test", "Sec-Fetch-Site": "same-site"})
        check = deployment(source, services.activity)
        assert check.status == "same-site" and "7 days" in check.safari and "/sig" in check.fix
        await client.post("/v1/batch", content=batch(page()), headers={
            **SAME_ORIGIN, "Host": "edge.other.test", "Sec-Fetch-Site": "cross-site"})
        check = deployment(source, services.activity)
        assert check.status == "cross-site" and check.warning
        assert "edge.other.test" in check.summary and "https://www.shop.test" in check.summary
        assert {a.arrival: a.requests for a in check.arrivals} == {"same-origin": 1, "same-site": 1, "cross-site": 1}
        metrics = await render(services)
        assert f'signal_edge_cross_site_warning{{source="{source.id}"}} 1' in metrics
        assert f'signal_edge_requests_arrived_total{{source="{source.id}",arrival="cross-site"}} 1' in metrics
        # A day later without another cross-site request, the warning is down.
        later = deployment(source, services.activity, now=time.time() + 2 * 86400)
        assert not later.warning and later.status == "same-site"
    in_process(tmp_path, test, serving=SERVING)


# --- through the admin API, on a real server ---------------------------------------------------


def test_names_keys_and_gpc_through_the_admin_api(edge, fake_pinterest):
    with edge.admin() as admin:
        source = create_source(admin, domain="shop.test")
        other = create_source(admin, name="Other")
        serving = source["serving"]
        assert serving["snippet"].endswith(
            f'<script async src="{serving["prefix"]}/{serving["script"]}" '
            f'data-pipeline-key="{source["pipeline_key"]}"></script>')
        assert f"handle_path {serving['prefix']}/*" in serving["caddy"] and f"127.0.0.1:{edge.port}" in serving["caddy"]
        moved = admin.patch(f"/sources/{source['id']}", json={"serving": {"prefix": "/sig"}})
        assert moved.status_code == 200 and moved.json()["serving"]["script_path"] == f"/sig/{serving['script']}"
        assert httpx.get(f"{edge.url}/sig/{serving['script']}").status_code == 200
        blocked = admin.patch(f"/sources/{source['id']}", json={"serving": {"script": "tracker.js"}})
        assert blocked.status_code == 400 and blocked.json()["error"]["field"] == "serving.script"
        assert "'track'" in blocked.json()["error"]["message"]
        taken = admin.patch(f"/sources/{other['id']}", json={"serving": {"endpoint": serving["endpoint"]}})
        assert taken.status_code == 409 and taken.json()["error"]["field"] == "serving.endpoint"

        # Rotation: the old key keeps working for its overlap (7 days by default), then not.
        old_key = source["pipeline_key"]
        rotated = admin.post(f"/sources/{source['id']}/rotate-key").json()
        (previous,) = rotated["previous_keys"]
        until = datetime.fromisoformat(previous["until"].replace("Z", "+00:00")).timestamp()
        assert previous["pipeline_key"] == old_key and abs(until - (time.time() + 7 * DAY)) < 60
        assert post_batch(edge.url, old_key, [{"type": "page"}]).status_code == 200
        again = admin.post(f"/sources/{source['id']}/rotate-key", json={"overlap_days": 0}).json()
        assert [p["pipeline_key"] for p in again["previous_keys"]] == [rotated["pipeline_key"], old_key]
        refused = post_batch(edge.url, rotated["pipeline_key"], [{"type": "page"}])
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "expired_pipeline_key"
        assert admin.get(f"/sources/{source['id']}").json()["rejected"] == {"expired_pipeline_key": 1}
        wrong = admin.post(f"/sources/{source['id']}/rotate-key", json={"overlap_days": 400})
        assert wrong.status_code == 400 and wrong.json()["error"]["field"] == "overlap_days"

        # Global Privacy Control, delivered nowhere: filtered, and the debugger says why.
        gpc = create_source(admin, privacy={"gpc": "no_delivery"})
        integration = create_integration(admin, gpc["id"])
        events = [{"type": "track", "event": "Signed Up", "messageId": "gpc-1"}]
        assert post_batch(edge.url, gpc["pipeline_key"], events, headers={"Sec-GPC": "1"}).status_code == 200
        record = wait_for(lambda: admin.get("/debugger/events", params={"integration_id": integration["id"]})
                          .json()["data"], what="the filtered event")[0]
    assert record["status"] == "filtered" and "Sec-GPC: 1" in record["message"]
    assert fake_pinterest.sandbox.events() == []
