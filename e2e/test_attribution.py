"""Attribution that survives the real web (issue 25), in Debian's Chromium through real Caddy: the
site block of the shipped Caddyfile (the edge under /sig/ of www.shop.test, `tls internal` for
the public name), the same mount with its prefix kept (/kept/), and the edge on another site
(data.other.test). One edge, one site and one Caddy serve the whole module; each test has its
sources and a fresh browser context."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import httpx
import pytest
from playwright.sync_api import expect

from e2e.conftest import STUB, USER_AGENT, Site
from e2e.ui import login
from tests.support import (
    ADMIN_TOKEN,
    ROOT,
    FakePinterest,
    SignalEdge,
    create_integration,
    create_source,
    free_port,
    wait_for,
)

pytestmark = pytest.mark.skipif(shutil.which("caddy") is None, reason="caddy is installed by `make test`")
GLOBALS = "{\n\tadmin off\n\tskip_install_trust\n\tauto_https disable_redirects\n\tstorage file_system {$CADDY_STORAGE}\n}\n"
PINTRK_STUB = "<script>window.calls = []; window.pintrk = function () { calls.push([].slice.call(arguments)) }</script>"


def caddyfile(port: int, site_port: int, edge_port: int) -> str:
    """The shipped site block with this machine's names, ports and `tls internal`; a second mount
    of the edge that keeps its prefix; and the edge on another site."""
    text = (ROOT / "Caddyfile").read_text()
    start = text.index("www.example.com {")
    block = text[start:text.index("\n}\n", start) + 3]
    for shipped, here in (("www.example.com {", f"https://www.shop.test:{port} {{\n\ttls internal"),
                          ("127.0.0.1:8080", f"127.0.0.1:{edge_port}"), ("127.0.0.1:3000", f"127.0.0.1:{site_port}"),
                          ("\t# The site itself, as before.",
                           f"\thandle /kept/* {{\n\t\treverse_proxy 127.0.0.1:{edge_port}\n\t}}\n\n\t# The site itself.")):
        assert block.count(shipped) == 1, shipped
        block = block.replace(shipped, here)
    other = f"https://data.other.test:{port} {{\n\ttls internal\n\treverse_proxy 127.0.0.1:{edge_port}\n}}\n"
    return GLOBALS + block + other


class World:
    def __init__(self, tmp) -> None:
        self.fake = FakePinterest().start()
        self.edge = SignalEdge(tmp, self.fake.url).start()
        self.site = Site().start()
        self.port = free_port()
        self.base = f"https://www.shop.test:{self.port}"
        config = tmp / "Caddyfile"
        config.write_text(caddyfile(self.port, self.site.port, self.edge.port))
        env = {**os.environ, "HOME": str(tmp), "XDG_DATA_HOME": str(tmp / "data"),
               "XDG_CONFIG_HOME": str(tmp / "config"), "CADDY_STORAGE": str(tmp / "caddy")}
        self.log = open(tmp / "caddy.log", "wb")
        self.caddy = subprocess.Popen(["caddy", "run", "--config", str(config), "--adapter", "caddyfile"], env=env,
                                      stdout=self.log, stderr=subprocess.STDOUT)
        with httpx.Client(verify=False) as client:  # to 127.0.0.1, as www.shop.test
            probe = client.build_request("GET", f"https://127.0.0.1:{self.port}/sig/d.js",
                                         headers={"Host": f"www.shop.test:{self.port}"},
                                         extensions={"sni_hostname": "www.shop.test"})
            wait_for(lambda: client.send(probe).status_code == 200, timeout=30,
                     what="Caddy in front of the site and the edge")

    def stop(self) -> str:
        self.caddy.terminate()
        self.caddy.wait(10)
        self.log.close()
        output = self.edge.output()
        self.edge.stop()
        self.site.stop()
        self.fake.stop()
        return output

    def source(self, integration: dict | None = None, **fields) -> dict:
        fields.setdefault("serving", {"prefix": "/sig"})
        with self.edge.admin() as admin:
            source = create_source(admin, domain="shop.test", **fields)
            create_integration(admin, source["id"], **(integration or {}))
        return source

    def page(self, path: str, source: dict, src: str | None = None, head: str = "", key: str | None = None,
             **attrs) -> str:
        """A page of www.shop.test that loads the source's own tag (by default through /sig/)."""
        serving = source["serving"]
        src = src or f"{serving['prefix']}/{serving['script']}"
        extra = "".join(f' data-{k}="{v}"' for k, v in attrs.items())
        self.site.pages[path] = (f"<!doctype html><html><head><meta charset=utf-8><title>{path}</title>{head}{STUB}"
                                 f'<script async src="{src}" data-pipeline-key="{key or source["pipeline_key"]}"'
                                 f"{extra}></script></head><body><h1>{path}</h1></body></html>")
        return self.base + path

    def context(self, browser, **options):
        return browser.new_context(ignore_https_errors=True, user_agent=USER_AGENT, **options)

    def events(self, path: str) -> list[dict]:
        """What Pinterest received from pages at `path`."""
        return [e for e in self.fake.sandbox.events() if e.get("event_source_url", "").split("?")[0].endswith(path)]

    def wait(self, page, path: str, count: int = 1) -> list[dict]:
        return wait_for(lambda: self.events(path) if len(self.events(path)) >= count else None, timeout=15,
                        what=f"{count} events from {path} at Pinterest", sleep=pump(page))


def pump(page):
    """Sleep that lets the browser run meanwhile."""
    return lambda seconds: page.wait_for_timeout(seconds * 1000)


def posts(page, url: str) -> list[int]:
    """The status of every answer the page gets from `url`."""
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status) if r.url == url and r.request.method == "POST" else None)
    return statuses


def answered(page, statuses: list[int], count: int = 1) -> list[int]:
    """`statuses` once it holds `count` answers: Pinterest may receive an event before the
    browser's response event for it has reached this process."""
    return wait_for(lambda: statuses if len(statuses) >= count else None, what=f"{count} answers", sleep=pump(page))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    world = World(tmp_path_factory.mktemp("attribution"))
    yield world
    log = world.stop()
    assert "Traceback" not in log, log[-3000:]


def test_the_edge_under_a_prefix_of_the_site_keeps_its_cookies_and_the_click(browser, world):
    source = world.source()
    endpoint = f"{world.base}/sig/{source['serving']['endpoint']}"
    context = world.context(browser)
    page = context.new_page()
    answers = posts(page, endpoint)
    page.goto(world.page("/landing", source) + "?epik=dj0yJnU9U2ln")
    landing = world.wait(page, "/landing")[0]
    assert landing["user_data"]["click_id"] == "dj0yJnU9U2ln"
    assert answered(page, answers) == [200]
    jar = {c["name"]: c for c in context.cookies()}
    for name in ("_dfid", "_pin_unauth", "_epik"):
        assert jar[name]["domain"] == "www.shop.test", name  # host-only, on the site itself
        assert jar[name]["secure"] is True and jar[name]["sameSite"] == "Lax", name
    page.goto(world.page("/next", source))
    assert page.evaluate('_df.track("Signed Up")')  # the id it sends
    later = world.wait(page, "/next", 2)
    assert {e["event_name"] for e in later} == {"page_visit", "signup"}
    assert {e["user_data"]["click_id"] for e in later} == {"dj0yJnU9U2ln"}
    # The same, through a mount that keeps its prefix (Caddy's handle rather than handle_path).
    kept = world.source(serving={"prefix": "/kept"})
    kept_answers = posts(page, f"{world.base}/kept/{kept['serving']['endpoint']}")
    page.goto(world.page("/kept-page", kept))
    assert world.wait(page, "/kept-page")[0]["user_data"]["click_id"] == "dj0yJnU9U2ln"
    assert answered(page, kept_answers) == [200]
    # The plain tag, told where to send (data-endpoint): what existing pages can do under a prefix.
    before = len(answers)
    page.goto(world.page("/told", source, src="/sig/d.js", endpoint=f"/sig/{source['serving']['endpoint']}"))
    assert world.wait(page, "/told")[0]["user_data"]["click_id"] == "dj0yJnU9U2ln"
    assert answered(page, answers, before + 1)[before:] == [200]  # it went there, not to /sig/v1/batch beside the script
    context.close()


def test_an_edge_on_another_site_is_a_warning_on_the_source_page_and_in_metrics(browser, world):
    source = world.source()
    context = world.context(browser)
    page = context.new_page()
    elsewhere = f"https://data.other.test:{world.port}/{source['serving']['script']}"
    answers = posts(page, f"https://data.other.test:{world.port}/{source['serving']['endpoint']}")
    page.goto(world.page("/elsewhere", source, src=elsewhere))
    wait_for(lambda: answers, what="the edge's answer", sleep=pump(page))
    shown = time.monotonic()
    metric = f'signal_edge_cross_site_warning{{source="{source["id"]}"}} 1'
    wait_for(lambda: metric in httpx.get(world.edge.admin_url + "/metrics",
                                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).text,
             timeout=5, what="the warning in /metrics")
    admin = context.new_page()
    login(admin, world.edge.admin_url, f"/sources/{source['id']}")
    expect(admin.locator("#deployment-status")).to_contain_text("Warning: requests arrive cross-site",
                                                                timeout=max(0.5, 5 - (time.monotonic() - shown)) * 1000)
    expect(admin.locator("#deployment")).to_contain_text(f"data.other.test:{world.port}")
    # What the warning is about: the browser kept none of the cookies the edge set.
    assert answers[0] == 200 and [c for c in context.cookies() if c["domain"].endswith("other.test")] == []
    context.close()


def test_consent_before_advertising_identifiers(browser, world):
    source = world.source(consent={"enabled": True, "default_categories": []},
                          integration={"consent_categories": ["advertising"]})
    endpoint = f"{world.base}/sig/{source['serving']['endpoint']}"
    ads = {"_pin_unauth", "_epik"}

    # Enforced consent, no waiting: nothing advertising before the grant, gone on refusal.
    context = world.context(browser)
    page = context.new_page()
    answers = posts(page, endpoint)
    names = lambda: {c["name"] for c in context.cookies()}  # noqa: E731
    page.goto(world.page("/c-landing", source) + "?epik=dj0yJnU9Q29u")
    wait_for(lambda: answers, what="the page view's answer", sleep=pump(page))
    assert "_dfid" in names() and not ads & names()
    page.evaluate('_df.consent({advertising: true}); _df.track("Signed Up")')
    wait_for(lambda: ads <= names(), what="the advertising cookies after the grant", sleep=pump(page))
    assert world.wait(page, "/c-landing")[0]["user_data"]["click_id"] == "dj0yJnU9Q29u"  # the signup
    page.evaluate("_df.consent({advertising: false})")
    assert not ads & names()  # deleted at once
    page.evaluate('_df.track("Lead Generated")')
    wait_for(lambda: len(answers) == 3, what="the lead's answer", sleep=pump(page))
    assert not ads & names()
    context.close()

    # data-consent="wait": the landing page view and its click id go once consent is given, 3 s later.
    context = world.context(browser)
    page = context.new_page()
    answers = posts(page, endpoint)
    page.goto(world.page("/w-landing", source, consent="wait") + "?epik=dj0yJnU9V2FpdA")
    page.wait_for_timeout(3000)
    assert answers == [] and page.evaluate("localStorage.length") == 0
    page.evaluate("_df.consent({advertising: true})")
    view = world.wait(page, "/w-landing")[0]
    assert view["event_name"] == "page_visit" and view["user_data"]["click_id"] == "dj0yJnU9V2FpdA"
    context.close()

    # ... and nothing at all when it is refused.
    context = world.context(browser)
    page = context.new_page()
    answers = posts(page, endpoint)
    page.goto(world.page("/r-landing", source, consent="wait") + "?epik=dj0yJnU9UmVm")
    page.wait_for_timeout(1000)
    page.evaluate('_df.consent({advertising: false}); _df.track("Signed Up")')
    page.wait_for_timeout(2000)
    assert answers == [] and page.evaluate("localStorage.length") == 0 and world.events("/r-landing") == []
    context.close()

    # Global Privacy Control, on a source that sends such events with opt_out (its default).
    plain = world.source()
    context = world.context(browser, extra_http_headers={"Sec-GPC": "1"})
    page = context.new_page()
    page.goto(world.page("/gpc", plain))
    assert world.wait(page, "/gpc")[0]["opt_out"] is True
    context.close()


def test_pintrk_gets_the_event_ids_pinterest_gets_from_the_server(browser, world):
    source = world.source(pintrk_bridge=True)
    context = world.context(browser)
    page = context.new_page()
    page.goto(world.page("/bridge", source, head=PINTRK_STUB))
    ids = page.evaluate('[_df.track("Product Added", {product_id: "SKU-1", price: 5, quantity: 1}),'
                        ' _df.track("Order Completed", {order_id: "O-1", total: 5, currency: "USD"})]')
    server = {e["event_name"]: e["event_id"] for e in world.wait(page, "/bridge", 3)}
    calls = page.evaluate("calls")
    assert {name: data["event_id"] for _, name, data in calls} == {
        "pagevisit": server["page_visit"], "addtocart": server["add_to_cart"], "checkout": server["checkout"]}
    assert ids == [server["add_to_cart"], server["checkout"]]
    assert calls[-1] == ["track", "checkout", {"event_id": ids[1], "value": 5, "currency": "USD", "order_id": "O-1"}]
    context.close()


def test_a_rotated_key_works_inside_its_window_and_not_after(browser, world):
    source = world.source()
    window = 8.0  # time enough for a page load on a busy host
    with world.edge.admin() as admin:
        admin.post(f"/sources/{source['id']}/rotate-key", json={"overlap_days": window / 86400}).raise_for_status()
    rotated = time.monotonic()
    context = world.context(browser)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    answers = posts(page, f"{world.base}/sig/{source['serving']['endpoint']}")
    page.goto(world.page("/old-key", source))  # the snippet with the replaced key
    wait_for(lambda: answers, what="the page view's answer", sleep=pump(page))
    assert answers == [200] and time.monotonic() - rotated < window
    page.wait_for_timeout((window + 0.5 - (time.monotonic() - rotated)) * 1000)
    page.evaluate('_df.track("Signed Up"); _df.flush()')
    wait_for(lambda: len(answers) == 2, what="the refusal", sleep=pump(page))
    assert answers[1] == 401
    reason = wait_for(lambda: [m for m in console if m.startswith("signal-edge: ")], what="the reason in the console",
                      sleep=pump(page))
    assert "replaced and stopped working" in reason[0] and "copy the current snippet" in reason[0]
    with world.edge.admin() as admin:
        assert admin.get(f"/sources/{source['id']}").json()["rejected"] == {"expired_pipeline_key": 1}
    assert [e["event_name"] for e in world.wait(page, "/old-key")] == ["page_visit"]
    context.close()


def test_events_of_a_page_that_could_not_send_arrive_once_from_the_next(browser, world):
    source = world.source()
    endpoint = f"{world.base}/sig/{source['serving']['endpoint']}"
    context = world.context(browser)
    page = context.new_page()
    blocked: list[str] = []
    sent_by: dict[str, str] = {}  # event id -> the page whose request carried it

    def ingestion(route):  # blocked for page 1 (its beacons as it goes too), open for page 2
        sender = route.request.headers.get("referer", "").rsplit("/", 1)[-1]
        if sender == "p1":
            blocked.append(sender)
            route.abort("connectionrefused")
            return
        sent_by.update((event["messageId"], sender) for event in json.loads(route.request.post_data)["batch"])
        route.continue_()

    page.route(endpoint, ingestion)
    page.goto(world.page("/p1", source))
    ids = page.evaluate('[1, 2, 3].map(n => _df.track("Step " + n))')
    wait_for(lambda: blocked, what="a failed send", sleep=pump(page))
    page.goto(world.page("/p2", source))
    world.wait(page, "/p2")
    world.wait(page, "/p1", 4)
    page.wait_for_timeout(1500)  # time for a duplicate to show
    first = world.events("/p1")
    assert sorted(e["event_id"] for e in first if e["event_name"] == "custom") == sorted(ids)
    assert len(first) == 4 and len({e["event_id"] for e in first}) == 4
    assert {sent_by.get(e["event_id"]) for e in first} == {"p2"}  # kept in localStorage, sent by the next page
    assert page.evaluate("localStorage.getItem('_df_q')") is None
    context.close()
