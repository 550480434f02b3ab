"""Connect with Pinterest in Debian's Chromium (issue 20): the Add Integration form takes the
app's id and secret, the browser signs in at the sandbox's authorize page, comes back to the
admin app's callback, and the integration is connected: healthy, a test event accepted, a
conversion token minted. And as with the real pinterest.com (issue 24): the sign-in page on
another site than the admin app, where the admin clicks to allow access."""

from __future__ import annotations

import re
from html import escape
from urllib.parse import urlencode

from playwright.sync_api import expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from e2e.test_admin_ui import login, shot
from tests.support import ServerThread, create_integration, create_source

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
    expect(page).to_have_url(re.compile(r"/integrations/int_[a-z0-9]+$"))
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


class SignInPage(ServerThread):
    """Pinterest's sign-in page as pinterest.com serves it: on a site of its own, where the admin
    clicks to allow access; the click goes to the sandbox's authorize endpoint (on that site
    too), which sends the browser back to the admin app with a code."""

    def __init__(self, sandbox_port: int) -> None:
        async def authorize(request: Request) -> HTMLResponse:
            target = f"http://www.pinterest.test:{sandbox_port}/oauth/?{urlencode(dict(request.query_params))}"
            return HTMLResponse(f'<!doctype html><title>Pinterest</title><h1>Allow access?</h1>'
                                f'<a href="{escape(target)}" role="button">Give access</a>')

        super().__init__(Starlette(routes=[Route("/oauth/", authorize)]))


def test_connect_with_pinterest_signed_in_on_another_site(page, edge_factory, fake_pinterest):
    """The UI's session cookie is SameSite=Strict: the browser does not send it on the way back
    from another site. The connection still completes, bound to the browser that started it."""
    fake_pinterest.sandbox.add_app(APP_ID, APP_SECRET)
    sign_in = SignInPage(fake_pinterest.port).start()
    try:
        edge = edge_factory(env={"SIGNAL_PINTEREST_OAUTH_URL": f"http://www.pinterest.test:{sign_in.port}/oauth/",
                                 "SIGNAL_ADMIN_HOSTS": "admin.shop.test"})
        with edge.admin() as admin:
            source = create_source(admin, name="Cross-site shop")
            integration = create_integration(admin, source["id"], config={
                "access_token": None, "conversion_token": None, "app_id": APP_ID, "app_secret": APP_SECRET})
        admin_url = f"http://admin.shop.test:{edge.admin_port}"
        login(page, admin_url, f"/integrations/{integration['id']}")
        page.get_by_role("link", name="Connect with Pinterest").click()
        expect(page).to_have_url(re.compile(r"^http://www\.pinterest\.test:\d+/oauth/\?"))
        page.get_by_role("button", name="Give access").click()

        expect(page).to_have_url(f"{admin_url}/integrations/{integration['id']}")
        expect(page.get_by_role("status").filter(has_text="Connected")).to_be_visible()
        expect(page.get_by_text(re.compile(r"The access token expires"))).to_be_visible()
        with edge.admin() as admin:
            assert admin.get(f"/integrations/{integration['id']}").json()["config"]["connected"] is True

        # The same sign-in replayed in another browser (its state taken from this one) is refused.
        state = fake_pinterest.sandbox.state
        assert state.refresh_tokens
        other = page.context.browser.new_context()
        try:
            stranger = other.new_page()
            login(stranger, admin_url)
            page.get_by_role("link", name="Connect again").click()
            expect(page).to_have_url(re.compile(r"^http://www\.pinterest\.test"))
            link = page.get_by_role("button", name="Give access").get_attribute("href")
            stranger.goto(link)
            expect(stranger.get_by_role("alert")).to_contain_text("was not started here")
        finally:
            other.close()
    finally:
        sign_in.stop()
