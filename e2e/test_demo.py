"""`signal-edge demo` (what `make serve` runs): a visit to the shop shows up at the sandbox."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import expect

from tests.support import SignalEdge, free_port, wait_for


def demo_of(tmp_path) -> tuple[SignalEdge, int, int]:
    """`signal-edge demo` as `make serve` runs it (its own sandbox, a printed admin token)."""
    sandbox_port, shop_port = free_port(), free_port()
    demo = SignalEdge(tmp_path, pinterest_url="unused", command="demo",
                      extra_args=("--sandbox-port", str(sandbox_port), "--shop-port", str(shop_port)))
    demo.env.pop("SIGNAL_PINTEREST_API_BASE")
    demo.env.pop("SIGNAL_ADMIN_TOKEN")
    return demo.start(), sandbox_port, shop_port


def test_demo_shop_visit_reaches_the_sandbox(page, tmp_path):
    demo, sandbox_port, shop_port = demo_of(tmp_path)
    try:
        assert "admin token:" in demo.output() and f"http://localhost:{shop_port}/" in demo.output()
        page.goto(f"http://localhost:{shop_port}/?epik=dj0yJnU9ZGVtbw")
        page.click("#login")
        assert page.inner_text("#who") == "Logged in as Jane"
        page.click("#add")
        assert page.inner_text("#cart") == "2 items"
        page.click("#buy")
        assert re.fullmatch(r"Thank you! Order ORD-\d+ is placed: find it in the debugger\.", page.inner_text("#done"))
        assert page.inner_text("#cart") == "0 items"
        sandbox = f"http://127.0.0.1:{sandbox_port}/_sandbox/events"

        def names():
            got = {e["event"]["event_name"] for e in httpx.get(sandbox).json()["data"]}
            return got if {"page_visit", "add_to_cart", "checkout"} <= got else None

        wait_for(names, timeout=15, what="the demo's events at the sandbox")
        events = httpx.get(sandbox).json()["data"]
        assert all(e["event"]["user_data"]["click_id"] == "dj0yJnU9ZGVtbw" for e in events)
        assert "checkout" in httpx.get(f"http://127.0.0.1:{sandbox_port}/").text
        # Pinterest's Event Quality Score of what the sandbox received, as the integration's page shows it
        token = re.search(r"admin token:\s+(sea_\S+)", demo.output()).group(1)
        with httpx.Client(base_url=demo.admin_url + "/v1/admin", headers={"Authorization": f"Bearer {token}"}) as api:
            [integration] = api.get("/integrations").json()["data"]
            quality = api.get(f"/integrations/{integration['id']}/event-quality").json()
        assert quality["problem"] is None, quality["message"]
        [web] = quality["periods"][0]["scores"]
        assert web["quality_components"]["click_id_epik"]["checkout"]["coverage"] == 100
    finally:
        assert demo.stop() == 0


def test_the_seeds_own_flow_in_the_demo_ends_healthy_and_the_token_outlives_a_restart(page, tmp_path):
    """Add Integration with the seed's example values (549764982399, pina_ABC123..., ct_ABC123...)
    gives a healthy integration and a delivered test event; a restart keeps the admin token."""
    demo, sandbox_port, _ = demo_of(tmp_path)
    try:
        token = re.search(r"admin token:\s+(sea_\S+)", demo.output()).group(1)
        assert demo.output().count("listening on") == 4 and "Started server process" not in demo.output()
        page.goto(f"{demo.admin_url}/integrations/new")
        page.get_by_label("Admin token").fill(token)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(re.compile(r"/integrations/new$"))  # back where the login started
        page.get_by_label("Ad Account ID").fill("549764982399")
        page.get_by_label("API access token").fill("pina_ABC123...")
        page.get_by_label("Conversion access token").fill("ct_ABC123...")
        page.get_by_role("button", name="Save").click()
        expect(page.locator(".badge.healthy")).to_be_visible(timeout=10_000)
        expect(page.locator("#test-result")).to_contain_text("Pinterest accepted the test event")
        sent = httpx.get(f"http://127.0.0.1:{sandbox_port}/_sandbox/events").json()["data"]
        tests = [e for e in sent if e["test"] and e["event"]["event_id"].startswith("signal-edge-test-")]
        assert len(tests) == 2 and all(e["ad_account_id"] == "549764982399" for e in tests)
    finally:
        assert demo.stop() == 0
    demo.start()  # the same token still logs in; --rotate issues another
    try:
        assert f"admin token:        {token}" in demo.output().split("signal-edge demo is running")[-1]
    finally:
        assert demo.stop() == 0
    demo.extra_args += ("--rotate",)
    demo.start()
    try:
        fresh = re.findall(r"admin token:\s+(sea_\S+)", demo.output())[-1]
        assert fresh != token
        assert httpx.get(demo.admin_url + "/v1/admin/sources", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    finally:
        assert demo.stop() == 0
