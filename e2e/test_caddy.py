"""Behind real Caddy with `tls internal` (issue 4): Secure cookies, the browser's own address,
and a forged X-Forwarded-For that nobody believes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from e2e.conftest import STUB, USER_AGENT, Site
from tests.support import ROOT, create_integration, create_source, free_port, wait_for

pytestmark = pytest.mark.skipif(shutil.which("caddy") is None, reason="caddy is installed by `make test`")


class Caddy:
    def __init__(self, tmp: Path, site_upstream: int, edge_upstream: int) -> None:
        self.site_port, self.edge_port = free_port(), free_port()
        self.env = {**os.environ, "HOME": str(tmp), "XDG_DATA_HOME": str(tmp / "data"),
                    "XDG_CONFIG_HOME": str(tmp / "config"), "CADDY_STORAGE": str(tmp / "caddy"),
                    "SITE_PORT": str(self.site_port), "EDGE_PORT": str(self.edge_port),
                    "SITE_UPSTREAM_PORT": str(site_upstream), "EDGE_UPSTREAM_PORT": str(edge_upstream)}
        self.log = open(tmp / "caddy.log", "wb")
        self.proc = subprocess.Popen(["caddy", "run", "--config", str(ROOT / "e2e" / "Caddyfile.test"),
                                      "--adapter", "caddyfile"], env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: httpx.get(f"{self.edge}/healthz", verify=False).status_code == 200, timeout=30,
                 what="Caddy to serve the edge over TLS")

    @property
    def edge(self) -> str:
        return f"https://[::1]:{self.edge_port}"

    @property
    def site(self) -> str:
        return f"https://[::1]:{self.site_port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


@pytest.fixture
def behind_caddy(tmp_path, edge_factory, fake_pinterest):
    # The edge listens dual-stack and believes only Caddy (127.0.0.1), not the browser (::1).
    edge = edge_factory(extra_args=("--host", "::"), env={"SIGNAL_TRUSTED_PROXIES": "127.0.0.1/32"})
    site = Site().start()
    caddy = Caddy(tmp_path, site.port, edge.port)
    with edge.admin() as admin:
        source = create_source(admin, allowed_origins=[caddy.site])
        create_integration(admin, source["id"])
    yield edge, site, caddy, source
    caddy.stop()
    site.stop()


def test_behind_caddy_cookies_are_secure_and_the_address_is_the_browsers(browser, behind_caddy, fake_pinterest):
    edge, site, caddy, source = behind_caddy
    context = browser.new_context(ignore_https_errors=True, user_agent=USER_AGENT)
    page = context.new_page()
    site.page("/shop", "<h1>Shop</h1>", caddy.edge, source["pipeline_key"], head=STUB)
    page.goto(caddy.site + "/shop?epik=dj0yJnU9Q2FkZHk")
    page.evaluate('_df.track("Signed Up")')
    pump = lambda s: page.wait_for_timeout(s * 1000)  # noqa: E731
    events = wait_for(lambda: fake_pinterest.sandbox.events() if len(fake_pinterest.sandbox.events()) >= 2 else None,
                      timeout=15, what="page view and signup", sleep=pump)
    assert {e["user_data"]["client_ip_address"] for e in events} == {"::1"}  # the browser, not Caddy's 127.0.0.1
    assert {e["user_data"]["click_id"] for e in events} == {"dj0yJnU9Q2FkZHk"}

    jar = {c["name"]: c for c in context.cookies()}
    for name in ("_dfid", "_pin_unauth", "_epik"):
        assert jar[name]["secure"] is True, name  # https, as Caddy told the edge with X-Forwarded-Proto
        assert jar[name]["sameSite"] == "Lax", name
    assert jar["_dfid"]["httpOnly"] is True and jar["_pin_unauth"]["httpOnly"] is False
    context.close()


def test_a_forged_forwarded_for_is_not_believed(behind_caddy, fake_pinterest):
    edge, _, caddy, source = behind_caddy
    forged = {"X-Forwarded-For": "6.6.6.6", "Authorization": f"Bearer {source['pipeline_key']}",
              "User-Agent": USER_AGENT}
    # Through Caddy: Caddy replaces the client's header with the real address.
    via_caddy = httpx.post(caddy.edge + "/v1/t", json={"event": "Signed Up", "messageId": "via-caddy"},
                           headers=forged, verify=False)
    # Straight at the edge from an address it does not trust: the header is ignored.
    direct = httpx.post(f"http://[::1]:{edge.port}/v1/t", json={"event": "Signed Up", "messageId": "direct"},
                        headers=forged)
    assert via_caddy.status_code == direct.status_code == 200
    events = wait_for(lambda: {e["event_id"]: e for e in fake_pinterest.sandbox.events()}
                      if len(fake_pinterest.sandbox.events()) >= 2 else None, what="both events")
    assert events["via-caddy"]["user_data"]["client_ip_address"] == "::1"
    assert events["direct"]["user_data"]["client_ip_address"] == "::1"
