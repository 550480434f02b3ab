"""The seed's purchase flow in Debian's Chromium (issue 2)."""

from __future__ import annotations

import time

import jsonschema

from delivery.pinterest.normalize import sha256
from delivery.pinterest.schema_check import SCHEMA
from e2e.conftest import STUB, USER_AGENT
from tests.support import wait_for

PURCHASE_JS = """
_df.identify("user-123", {email: "jane.doe@example.com", phone: "+44 7700 900123"});
_df.track("Order Completed", {
  order_id: "ORD-001", total: 129.99, currency: "USD",
  products: [
    {product_id: "SKU-A", name: "Widget", price: 49.99, quantity: 2},
    {product_id: "SKU-B", name: "Gadget", price: 30.01, quantity: 1}
  ]
});
"""


def test_seed_purchase_from_the_browser_reaches_pinterest(page, site, edge, shop, fake_pinterest):
    source, _ = shop
    url = site.page("/checkout/confirmation", "<h1>Thanks</h1>", edge.url, source["pipeline_key"], head=STUB)
    page.goto(url + "?epik=dj0yJnU9YnJvd3Nlcg")
    page.wait_for_function("() => window._df && !Array.isArray(window._df)")
    page.evaluate(PURCHASE_JS)

    def checkout():
        return [e for e in fake_pinterest.sandbox.events() if e["event_name"] == "checkout"]

    event = wait_for(checkout, timeout=15, what="checkout at the fake Pinterest")[0]
    jsonschema.validate({"data": [event]}, SCHEMA)
    assert event["action_source"] == "web"
    assert isinstance(event["event_time"], int) and abs(event["event_time"] - time.time()) < 60
    assert event["event_id"] and event["event_source_url"].startswith(url)
    user = event["user_data"]
    assert user["em"] == [sha256("jane.doe@example.com")]
    assert user["client_ip_address"] == "127.0.0.1"
    assert user["client_user_agent"] == USER_AGENT
    assert user["click_id"] == "dj0yJnU9YnJvd3Nlcg"
    custom = event["custom_data"]
    assert custom["currency"] == "USD" and custom["value"] == "129.99" and custom["order_id"] == "ORD-001"
    assert custom["num_items"] == 3 and custom["content_ids"] == ["SKU-A", "SKU-B"]
    assert [c["item_price"] for c in custom["contents"]] == ["49.99", "30.01"]

    # The page view on load arrived too, with the click id.
    pages = [e for e in fake_pinterest.sandbox.events() if e["event_name"] == "page_visit"]
    assert pages and pages[0]["user_data"]["click_id"] == "dj0yJnU9YnJvd3Nlcg"

    # The identity cookies were set by the edge (Set-Cookie), not by the script.
    jar = {c["name"]: c for c in page.context.cookies()}
    assert jar["_dfid"]["httpOnly"] is True  # a script cannot set an HttpOnly cookie
    assert jar["_pin_unauth"]["httpOnly"] is False and len(jar["_pin_unauth"]["value"]) == 36
    assert jar["_epik"]["value"] == "dj0yJnU9YnJvd3Nlcg"
    script_cookies = page.evaluate("document.cookie")
    assert "_dfid" not in script_cookies
