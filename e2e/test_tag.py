"""The browser tag in Debian's Chromium: replay, SPA pages, click ids, beacons, consent, reset,
retries, and the identity cookies as the browser stores them (issue 4)."""

from __future__ import annotations

import json
import time

import pytest

from delivery.pinterest.normalize import sha256
from e2e.conftest import STUB
from tests.support import create_integration, create_source, stats, wait_for

DAY = 24 * 3600


class Shop:
    def __init__(self, site, edge, source, integration, fake, page):
        self.site, self.edge, self.source, self.integration, self.fake = site, edge, source, integration, fake
        self.edge_url = f"http://data.shop.test:{edge.port}"
        self.pump = lambda seconds: page.wait_for_timeout(seconds * 1000)  # lets the browser run while we wait

    def url(self, path: str, body: str = "", head: str = STUB, **attrs) -> str:
        self.site.page(path, body, self.edge_url, self.source["pipeline_key"], head=head, **attrs)
        return f"http://www.shop.test:{self.site.port}{path}"

    def events(self, name: str | None = None) -> list[dict]:
        return [e for e in self.fake.sandbox.events() if name is None or e["event_name"] == name]

    def wait(self, count: int, name: str | None = None) -> list[dict]:
        return wait_for(lambda: self.events(name) if len(self.events(name)) >= count else None, timeout=15,
                        what=f"{count} {name or 'events'} at Pinterest", sleep=self.pump)


def make_shop(page, site, edge, fake, source_fields=None, integration_fields=None) -> Shop:
    with edge.admin() as admin:
        source = create_source(admin, domain="shop.test", cookie_domain="shop.test", **(source_fields or {}))
        integration = create_integration(admin, source["id"], **(integration_fields or {}))
    return Shop(site, edge, source, integration, fake, page)


@pytest.fixture
def shop_site(page, site, edge, fake_pinterest):
    return make_shop(page, site, edge, fake_pinterest)


def sent_bodies(page) -> list[dict]:
    """Record every body the tag posts to the edge (fetch and sendBeacon)."""
    bodies: list[dict] = []
    page.on("request", lambda r: bodies.append(json.loads(r.post_data)) if r.url.endswith("/v1/batch") else None)
    return bodies


def test_calls_before_load_are_replayed_in_order(page, shop_site):
    early = STUB + """<script>
      _df.identify("user-9", {email: "early@example.com"});
      _df.track("Early One", {n: 1});
      _df.track("Early Two", {n: 2});
    </script>"""
    bodies = sent_bodies(page)
    page.goto(shop_site.url("/early", head=early))
    wait_for(lambda: bodies, what="the first batch", sleep=shop_site.pump)
    sent = [m for b in bodies for m in b["batch"]]
    assert [(m["type"], m.get("event")) for m in sent] == [
        ("page", None), ("identify", None), ("track", "Early One"), ("track", "Early Two")]
    assert all(m["userId"] == "user-9" for m in sent[1:])  # kept for the calls after identify
    assert all(b["sentAt"] and b["pipeline_key"] == shop_site.source["pipeline_key"] for b in bodies)
    customs = shop_site.wait(2, "custom")
    assert all(e["user_data"]["em"] == [sha256("early@example.com")] for e in customs)


def test_single_page_navigation_sends_page_views(page, shop_site):
    page.goto(shop_site.url("/spa"))
    shop_site.wait(1, "page_visit")
    page.evaluate("history.pushState({}, '', '/spa/products')")
    page.evaluate("history.replaceState({}, '', '/spa/products?sort=price')")
    page.evaluate("history.replaceState({}, '', '/spa/products?sort=price')")  # same URL: no new page view
    page.go_back()
    pages = shop_site.wait(4, "page_visit")
    shop_site.pump(1.5)
    urls = [e["event_source_url"].split(str(shop_site.site.port))[1] for e in shop_site.events("page_visit")]
    assert sorted(urls) == sorted(["/spa", "/spa/products", "/spa/products?sort=price", "/spa"])
    assert len(pages) == 4


def test_a_pinterest_click_id_stays_for_later_pages(page, shop_site):
    page.goto(shop_site.url("/landing") + "?epik=dj0yJnU9TGFuZA")
    shop_site.wait(1, "page_visit")
    page.goto(shop_site.url("/next"))
    page.evaluate('_df.track("Signed Up")')
    signup = shop_site.wait(1, "signup")[0]
    later_page = [e for e in shop_site.wait(2, "page_visit") if e["event_source_url"].endswith("/next")][0]
    assert later_page["user_data"]["click_id"] == "dj0yJnU9TGFuZA"
    assert signup["user_data"]["click_id"] == "dj0yJnU9TGFuZA"
    # A newer click replaces the older one.
    page.goto(shop_site.url("/again") + "?epik=dj0yJnU9TmV3ZXI")
    page.evaluate('_df.track("Lead Generated")')
    assert shop_site.wait(1, "lead")[0]["user_data"]["click_id"] == "dj0yJnU9TmV3ZXI"


def test_the_last_event_before_leaving_arrives_by_beacon(page, shop_site):
    page.goto(shop_site.url("/product"))
    shop_site.wait(1, "page_visit")
    # Tracked, then the visitor leaves at once: the 1 s batch timer dies with the page, so
    # only the pagehide flush (sendBeacon) can deliver it.
    page.evaluate('_df.track("Lead Generated", {form: "newsletter"})')
    page.goto("about:blank")
    assert shop_site.wait(1, "lead")


def test_consent_denied_sends_nothing_and_granted_delivers(page, site, edge, fake_pinterest):
    shop = make_shop(page, site, edge, fake_pinterest, source_fields={"consent": {"enabled": True, "default_categories": []}},
                     integration_fields={"consent_categories": ["advertising"]})
    consent_first = STUB + '<script>_df.consent({advertising: false, analytics: true});</script>'
    page.goto(shop.url("/c", head=consent_first))
    page.evaluate('_df.track("Signed Up")')
    with edge.admin() as admin:
        wait_for(lambda: stats(admin, shop.integration["id"])["filtered"] == 2, what="two filtered events",
                 sleep=shop.pump)
        assert shop.events() == []
        page.evaluate('_df.consent({advertising: true}); _df.track("Lead Generated")')
        lead = shop.wait(1, "lead")[0]
        assert shop.events("signup") == [] and lead
        # Pinterest has the lead; the worker settles it just after Pinterest answers.
        counts = wait_for(lambda: (c := stats(admin, shop.integration["id"]))["in_flight"] == 0 and c,
                          what="the lead settled", sleep=shop.pump)
        assert (counts["accepted"], counts["filtered"], counts["delivered"]) == (3, 2, 1)
    jar = {c["name"]: c for c in page.context.cookies()}
    assert jar["_df_consent"]["value"] == "advertising"


def test_reset_forgets_the_user(page, shop_site):
    page.goto(shop_site.url("/account"))
    page.evaluate('_df.identify("user-77", {email: "jane.doe@example.com"}); _df.track("Signed Up")')
    before = shop_site.wait(1, "signup")[0]
    dfid_before = next(c["value"] for c in page.context.cookies() if c["name"] == "_dfid")
    page.evaluate('_df.reset(); _df.track("Lead Generated")')
    after = shop_site.wait(1, "lead")[0]
    assert before["user_data"]["em"] == [sha256("jane.doe@example.com")]
    assert sha256("user-77") in before["user_data"]["external_id"]
    assert "em" not in after["user_data"]
    assert sha256("user-77") not in after["user_data"]["external_id"]
    dfid_after = next(c["value"] for c in page.context.cookies() if c["name"] == "_dfid")
    assert dfid_after != dfid_before
    assert page.evaluate("localStorage.getItem('_df_uid')") is None


def test_a_second_login_on_the_browser_carries_only_its_own_identity(page, shop_site):
    """Issue 18: Bo signs in after Ana on the same browser, without reset(); each purchase
    carries only its own person's hashes."""
    page.goto(shop_site.url("/login"))
    page.evaluate('_df.identify("ana", {email: "ana@example.com", phone: "+1 415 555 0101"});'
                  '_df.track("Order Completed", {order_id: "A-1", total: 5, currency: "USD"})')
    ana = shop_site.wait(1, "checkout")[0]
    page.evaluate('_df.identify("bo", {email: "bo@example.com"});'
                  '_df.track("Order Completed", {order_id: "B-1", total: 7, currency: "USD"})')
    bo = shop_site.wait(2, "checkout")[1]
    assert ana["user_data"]["em"] == [sha256("ana@example.com")] and ana["user_data"]["ph"] == [sha256("14155550101")]
    assert bo["user_data"]["em"] == [sha256("bo@example.com")] and "ph" not in bo["user_data"]
    assert sha256("bo") in bo["user_data"]["external_id"] and sha256("ana") not in bo["user_data"]["external_id"]


def test_refusing_ads_personalization_marks_the_visitors_events_opted_out(page, shop_site):
    page.goto(shop_site.url("/prefs"))
    page.evaluate('_df.track("Lead Generated")')
    assert "opt_out" not in shop_site.wait(1, "lead")[0]
    page.evaluate('_df.consent({advertising: true, ads_personalization: false}); _df.track("Signed Up")')
    assert shop_site.wait(1, "signup")[0]["opt_out"] is True
    jar = {c["name"]: c for c in page.context.cookies()}
    assert jar["_df_consent"]["value"] == "advertising%2C!ads_personalization"


def test_failed_sends_are_retried_without_loss_or_reordering(page, shop_site):
    failures = {"left": 2}
    delivered: list[str] = []

    def flaky(route):
        if failures["left"]:
            failures["left"] -= 1
            route.abort("connectionreset")
            return
        delivered.extend(m.get("event") or m["type"] for m in json.loads(route.request.post_data)["batch"])
        route.continue_()

    page.route("**/v1/batch", flaky)
    page.goto(shop_site.url("/flaky"))
    page.evaluate("for (let i = 0; i < 25; i++) _df.track('Step ' + i)")
    wait_for(lambda: len(delivered) >= 26, timeout=20, what="all events after the retries", sleep=shop_site.pump)
    assert delivered == ["page"] + [f"Step {i}" for i in range(25)]
    assert failures["left"] == 0


def test_event_id_becomes_the_message_id_and_data_global_renames(page, shop_site):
    stub = STUB.replace('"_df"', '"pinData"')
    page.goto(shop_site.url("/g", head=stub, data_global="pinData"))
    page.wait_for_function("() => window.pinData && !Array.isArray(window.pinData)")
    assert page.evaluate("typeof window._df") == "undefined"
    page.evaluate('pinData.track("Order Completed", {event_id: "shared-evt-1", total: 5, currency: "EUR"})')
    checkout = shop_site.wait(1, "checkout")[0]
    assert checkout["event_id"] == "shared-evt-1"


def test_identity_cookies_in_the_browser_jar(page, shop_site):
    page.goto(shop_site.url("/jar") + "?epik=dj0yJnU9SmFy")
    shop_site.wait(1, "page_visit")
    now = time.time()
    jar = {c["name"]: c for c in page.context.cookies()}
    expected = {"_dfid": (True, 400), "_pin_unauth": (False, 365), "_epik": (False, 365)}
    for name, (http_only, days) in expected.items():
        cookie = jar[name]
        assert cookie["httpOnly"] is http_only, name
        assert cookie["sameSite"] == "Lax" and cookie["path"] == "/" and cookie["secure"] is False, name
        assert cookie["domain"] == ".shop.test", name  # the source's cookie_domain: shared by www. and data.
        assert abs(cookie["expires"] - (now + days * DAY)) < 120, name
    assert jar["_epik"]["value"] == "dj0yJnU9SmFy"
    assert "_dfid" not in page.evaluate("document.cookie")
