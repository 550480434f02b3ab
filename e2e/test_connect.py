"""Connect with Pinterest in Debian's Chromium (issue 20): the Add Integration form takes the
app's id and secret, the browser signs in at the sandbox's authorize page, comes back to the
admin app's callback, and the integration is connected: healthy, a test event accepted, a
conversion token minted."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from e2e.test_admin_ui import login, shot
from tests.support import create_source

APP_ID, APP_SECRET = "1489999", "e2e-app-secret-0123456789"


def test_connect_with_pinterest_from_add_integration_to_a_test_event(page, edge_factory, fake_pinterest):
    fake_pinterest.sandbox.add_app(APP_ID, APP_SECRET)
    edge = edge_factory(env={"SIGNAL_PINTEREST_OAUTH_URL": fake_pinterest.url + "/oauth/"})
    with edge.admin() as admin:
        create_source(admin, name="Connected shop")
    login(page, edge.admin_url)
    page.get_by_role("link", name="Add Integration").click()
    page.get_by_label("Ad Account ID").fill("549764982399")
    page.get_by_label("Pinterest app id").fill(APP_ID)
    page.get_by_label("Pinterest app secret").fill(APP_SECRET)
    expect(page.locator("#redirect-uri")).to_have_text(f"{edge.admin_url}/oauth/pinterest/callback")
    shot(page, "connect-01-add-integration")
    page.get_by_role("button", name="Connect with Pinterest").click()

    # Through the sandbox's authorize page and the callback, back to the integration's page.
    expect(page).to_have_url(re.compile(r"/integrations/int_[a-z0-9]+\?connected="))
    expect(page.get_by_role("status").filter(has_text="Connected")).to_be_visible()
    expect(page.get_by_text(re.compile(r"The access token expires"))).to_be_visible()
    shot(page, "connect-02-connected")
    assert fake_pinterest.sandbox.state.refresh_tokens  # Pinterest issued the tokens

    page.get_by_role("button", name="Send test event").click()
    expect(page.locator("#test-result")).to_contain_text("Pinterest accepted the test event", timeout=10_000)
    page.get_by_role("button", name="Mint a conversion token").click()
    expect(page.get_by_label(re.compile("Conversion access token"))).to_be_visible()
    expect(page.get_by_text(re.compile(r"leave blank to keep ct_\*\*\*\*"))).to_be_visible(timeout=10_000)
    page.get_by_role("button", name="Send test event").click()
    expect(page.locator("#test-result")).to_contain_text("conversion token", timeout=10_000)
    shot(page, "connect-03-conversion-token")


def test_a_callback_that_this_session_did_not_start_is_refused(page, edge_factory, fake_pinterest):
    edge = edge_factory()
    login(page, edge.admin_url)
    page.goto(edge.admin_url + "/oauth/pinterest/callback?code=code_forged&state=made-up")
    expect(page.get_by_role("alert")).to_contain_text("was not started here")
