"""`signal-edge demo` (what `make serve` runs): a visit to the shop shows up at the sandbox."""

from __future__ import annotations

import httpx

from tests.support import SignalEdge, free_port, wait_for


def test_demo_shop_visit_reaches_the_sandbox(page, tmp_path):
    sandbox_port, shop_port = free_port(), free_port()
    demo = SignalEdge(tmp_path, pinterest_url="unused", command="demo",
                      extra_args=("--sandbox-port", str(sandbox_port), "--shop-port", str(shop_port)))
    demo.env.pop("SIGNAL_PINTEREST_API_BASE")
    demo.env.pop("SIGNAL_ADMIN_TOKEN")
    demo.start()
    try:
        assert "admin token:" in demo.output() and f"http://localhost:{shop_port}/" in demo.output()
        page.goto(f"http://localhost:{shop_port}/?epik=dj0yJnU9ZGVtbw")
        page.click("#add")
        page.click("#buy")
        sandbox = f"http://127.0.0.1:{sandbox_port}/_sandbox/events"

        def names():
            got = {e["event"]["event_name"] for e in httpx.get(sandbox).json()["data"]}
            return got if {"page_visit", "add_to_cart", "checkout"} <= got else None

        wait_for(names, timeout=15, what="the demo's events at the sandbox")
        events = httpx.get(sandbox).json()["data"]
        assert all(e["event"]["user_data"]["click_id"] == "dj0yJnU9ZGVtbw" for e in events)
        assert "checkout" in httpx.get(f"http://127.0.0.1:{sandbox_port}/").text
    finally:
        assert demo.stop() == 0
