"""Running it as a service, in the browser (issue 27): a whole run with JSON logs, every line of
which parses and none holds an email address, a phone number or a token; and the Alerts and
Erasure pages doing their work."""

from __future__ import annotations

import json
import re

from playwright.sync_api import expect

from delivery.pinterest.normalize import sha256
from e2e.conftest import STUB
from e2e.test_purchase_flow import PURCHASE_JS
from e2e.ui import login
from tests.support import (
    ACCESS_TOKEN,
    ADMIN_TOKEN,
    CONVERSION_TOKEN,
    ServerThread,
    create_integration,
    create_source,
    post_batch,
    wait_for,
)

EMAIL, PHONE = "jane.doe@example.com", "+44 7700 900123"


def test_a_whole_run_logs_json_lines_without_pii_or_tokens(page, site, edge_factory, fake_pinterest):
    edge = edge_factory(env={"SIGNAL_LOG_FORMAT": "json", "SIGNAL_ACCESS_LOG": "1", "SIGNAL_ALERT_INTERVAL": "0.5"})
    with edge.admin() as admin:
        source = create_source(admin)
        integration = create_integration(admin, source["id"])
        shop = site.page("/checkout", "<h1>Thanks</h1>", edge.url, source["pipeline_key"], head=STUB)
        page.goto(shop + "?email=" + EMAIL)  # a stranger's URL holds an address too
        page.wait_for_function("() => window._df && !Array.isArray(window._df)")
        page.evaluate(PURCHASE_JS)
        wait_for(lambda: any(e["event_name"] == "checkout" for e in fake_pinterest.sandbox.events()), 15,
                 what="the checkout at Pinterest")
        assert post_batch(edge.url, source["pipeline_key"], [{"type": "track"}]).status_code == 400
        assert admin.get("/sources", headers={"Authorization": "Bearer sea_wrong"}).status_code == 401
        # Pinterest refuses the tokens: the integration pauses, and says so in the log.
        fake_pinterest.sandbox.remove_token(ACCESS_TOKEN)
        fake_pinterest.sandbox.remove_token(CONVERSION_TOKEN)
        page.evaluate('_df.track("Signed Up", {email: "%s"}); _df.flush()' % EMAIL)
        wait_for(lambda: admin.get(f"/integrations/{integration['id']}").json()["health"]["status"] == "unhealthy",
                 15, what="the pause")
        # The person is erased through the UI; their next event is dropped.
        login(page, edge.admin_url, "/erasure")
        page.get_by_label("Email address").fill(EMAIL)
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Erase").click()
        expect(page.locator("#erasure-result")).to_contain_text("Deleted")
        assert post_batch(edge.url, source["pipeline_key"], [{"type": "identify", "traits": {"email": EMAIL}}]) \
            .json()["accepted"] == 1
    edge.stop()

    lines = edge.output().splitlines()
    parsed = [json.loads(line) for line in lines]  # every line is one JSON object
    assert len(parsed) > 20
    for line in parsed:
        assert {"time", "level", "logger", "message"} <= set(line), line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    text = "\n".join(lines)
    for secret in (EMAIL, "jane.doe%40example.com", PHONE, "447700900123", "7700 900123", sha256(EMAIL),
                   ADMIN_TOKEN, ACCESS_TOKEN, CONVERSION_TOKEN, "sea_wrong"):
        assert secret not in text, secret
    access = [line for line in parsed if line["logger"] == "signal_edge.access"]
    ingest = [line for line in access if line["path"] == "/v1/batch"]
    assert ingest and all(line["request_id"] and line["source"] == source["id"] for line in ingest)
    assert {line["status"] for line in access} >= {200, 400, 401}
    assert any(line.get("integration") == integration["id"] and "paused" in line["message"] for line in parsed)
    assert any(line["message"].startswith("alert firing") for line in parsed)


class Hook:
    def __init__(self) -> None:
        self.bodies: list[dict] = []

    async def __call__(self, scope, receive, send) -> None:
        message = await receive()
        self.bodies.append(json.loads(message.get("body") or b"{}"))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def test_the_alerts_page_adds_and_tests_a_destination(page, edge):
    hook = Hook()
    receiver = ServerThread(hook).start()
    try:
        login(page, edge.admin_url, "/alerts")
        expect(page.locator("#incidents")).to_contain_text("nothing is wrong now")
        page.get_by_label("Name").fill("Ops")
        page.get_by_label("Kind").select_option("slack")
        page.get_by_label("URL").fill(receiver.url + "/services/T000/B000/secret1234")
        page.get_by_role("button", name="Add destination").click()
        expect(page.locator("#destinations")).to_contain_text("****1234")
        expect(page.locator("#destinations")).not_to_contain_text("secret")
        page.get_by_role("button", name="Send test alert").click()
        expect(page.locator("#status")).to_contain_text("Ops accepted the test alert")
        assert "test alert" in hook.bodies[0]["text"]
        expect(page.locator("#history")).to_contain_text("sent")
    finally:
        receiver.stop()
