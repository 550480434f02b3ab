"""The management API's half of the admin UI fixes (issue 30, item 5), in process: what the pages
show comes from these answers (e2e/test_admin_defects.py shows each in Chromium)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import msgspec
import pytest

from collector.admin import schemas as s
from collector.admin.api import live_out
from collector.admin.views import health_view
from delivery.events import EdgeEvent, event_encoder
from delivery.store import DebugRecord
from tests.support import admin_in_process, asgi_client

BASE = {"vendor": "pinterest", "name": "P", "config": {"access_token": "pina_TEST_TOKEN_1234"}}


async def created(api, ad_account_id: str, **config):
    source = (await api.post("/v1/admin/sources", json={"name": "Shop"})).json()
    return await api.post("/v1/admin/integrations", json={
        **BASE, "source_id": source["id"], "config": {**BASE["config"], "ad_account_id": ad_account_id, **config}})


@pytest.mark.parametrize("pasted,kept", [
    ("https://ads.pinterest.com/advertiser/549764982399/conversions/?tab=tag", "549764982399"),
    ("ads.pinterest.com/advertiser/549764982399/", "549764982399"),
    (" 549764982399 ", None),  # not a URL: the format check answers, as before
    ("https://ads.evil.example/advertiser/549764982399/", None),  # only Pinterest's own address is read
    ("https://ads.pinterest.com/advertiser/act_1/", None),
])
def test_the_ads_manager_url_gives_the_ad_account_id(tmp_path, pasted, kept):
    async def main():
        async with admin_in_process(tmp_path) as (_, app), asgi_client(app) as api:
            answer = await created(api, pasted)
            if kept is None:
                assert answer.status_code == 400 and answer.json()["error"]["field"] == "config.ad_account_id"
                return
            assert answer.status_code == 201, answer.text
            assert answer.json()["config"]["ad_account_id"] == kept
            patched = await api.patch(f"/v1/admin/integrations/{answer.json()['id']}",
                                      json={"config": {"ad_account_id": pasted.replace("5497", "1234")}})
            assert patched.json()["config"]["ad_account_id"] == kept.replace("5497", "1234")

    asyncio.run(main())


def test_overrides_that_differ_only_in_case_or_spaces_are_refused_naming_the_second(tmp_path):
    async def main():
        async with admin_in_process(tmp_path) as (_, app), asgi_client(app) as api:
            twins = {"Lead Form Sent": "lead", " lead form SENT": "signup"}
            refused = (await created(api, "549764982399", event_map=twins)).json()["error"]
            assert refused["field"] == "config.event_map. lead form SENT"
            assert "differ only in case or spaces" in refused["message"]
            integ = (await created(api, "549764982399", event_map={"Lead Form Sent": "lead"})).json()
            url = f"/v1/admin/integrations/{integ['id']}"
            assert (await api.patch(url, json={"config": {"event_map": twins}})).status_code == 400
            assert (await api.patch(url, json={"config": {"event_map": {" ": "lead"}}})).status_code == 400
            assert (await api.get(url)).json()["config"]["event_map"] == {"Lead Form Sent": "lead"}
            renamed = await api.patch(url, json={"config": {"event_map": {"lead form sent": "signup"}}})
            assert renamed.json()["config"]["event_map"] == {"lead form sent": "signup"}  # one name, respelt

    asyncio.run(main())


def test_the_preview_of_an_event_over_7_days_old_says_it_is_not_sent(tmp_path):
    async def main():
        async with admin_in_process(tmp_path) as (_, app), asgi_client(app) as api:
            integ = (await created(api, "549764982399")).json()
            preview = lambda days: api.post(f"/v1/admin/integrations/{integ['id']}/preview", json={  # noqa: E731
                "type": "track", "event": "Signed Up",
                "timestamp": (datetime.now(timezone.utc) - timedelta(days=days)).isoformat()})
            old, recent = (await preview(8)).json(), (await preview(6)).json()
            assert (old["sent"], old["pinterest_event"], old.get("payload")) == (False, "signup", None)
            assert old["reason"].startswith("not sent: older than 7 days")
            assert recent["sent"] and recent["payload"]["data"][0]["event_name"] == "signup"

    asyncio.run(main())


def record(type_: str, integration_id: str | None = None) -> DebugRecord:
    """As the edge publishes what it queued: the event as the queue holds it (an array)."""
    ev = EdgeEvent("m-1", type_, "src_1", time.time(), time.time(), "Signed Up" if type_ == "track" else None)
    return DebugRecord(at=time.time(), source_id="src_1", event_id="m-1", event=type_, status="queued",
                       incoming=msgspec.Raw(event_encoder.encode(ev)), integration_id=integration_id)


def test_the_live_debugger_shows_queued_events_by_field_name_and_leaves_identify_and_group_out():
    shown = live_out(record("track"))
    assert shown is not None and msgspec.json.decode(msgspec.json.encode(shown.incoming))["message_id"] == "m-1"
    assert live_out(record("identify")) is None and live_out(record("group")) is None
    # an outcome for one integration is the record as delivery wrote it
    kept = live_out(record("identify", "int_1"))
    assert kept is not None and isinstance(msgspec.json.decode(msgspec.json.encode(kept.incoming)), list)


def test_the_health_card_under_a_refusal_tells_only_the_refusal(tmp_path):
    async def main():
        async with admin_in_process(tmp_path) as (_, app), asgi_client(app) as api:
            integ = msgspec.convert((await created(api, "549764982399")).json(), s.IntegrationOut)
        delivery = msgspec.structs.replace(integ.delivery, last_error="event_time is invalid.", last_error_at="x")
        fine = msgspec.structs.replace(integ, delivery=delivery)
        assert health_view(fine).last_error == "event_time is invalid."
        refused = msgspec.structs.replace(fine, health=msgspec.structs.replace(
            integ.health, status="unhealthy", message="The token has expired or been revoked."))
        view = health_view(refused)
        assert (view.status, view.explanation, view.last_error) == ("unhealthy", refused.health.message, None)
        disabled = health_view(msgspec.structs.replace(fine, enabled=False))
        assert (disabled.status, disabled.pausable) == ("disabled", False)

    asyncio.run(main())
