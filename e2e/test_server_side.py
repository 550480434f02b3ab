"""A server-side event that went without the visitor's User-Agent (issue 26): the debugger's detail
says so, in plain words, rather than leaving it to be found in the JSON."""

from __future__ import annotations

from playwright.sync_api import expect

from e2e.ui import login
from tests.support import create_integration, create_source, post_batch


def test_the_debugger_says_why_a_server_event_has_no_user_agent(page, edge, fake_pinterest):
    with edge.admin() as api:
        source = create_source(api)
        create_integration(api, source["id"])
        key = api.post(f"/sources/{source['id']}/rotate-server-key").json()["server_key"]
    order = {"type": "track", "event": "Order Completed", "messageId": "srv-order", "properties": {"total": 5},
             "context": {"ip": "198.51.100.1", "traits": {"email": "pat@example.com"}}}
    assert post_batch(edge.url, "", [order], headers={"Authorization": f"Bearer {key}"}).status_code == 200
    login(page, edge.admin_url, "/debugger?status=delivered")
    row = page.locator("#events tr[data-status=delivered]", has_text="Order Completed")
    expect(row).to_be_visible(timeout=10_000)
    row.get_by_role("button").click()
    expect(page.locator("#detail")).to_contain_text(
        "Note: client_user_agent not sent: a server-side call (server key) gave no context.userAgent")
