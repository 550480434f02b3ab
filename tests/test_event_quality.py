"""Pinterest's Event Quality Score (issue 26): the sandbox serves `GET conversion_eqs` from what it
received, in the shape of Pinterest's OpenAPI description; signal-edge reads it on a schedule and
on demand, keeps it in the store, and says what to do when the token cannot read it."""

from __future__ import annotations

import asyncio
import time

import httpx
import jsonschema
import pytest

from collector.services import close_database, open_backend
from collector.settings import load_settings
from delivery.config import Integration, PinterestConfig
from delivery.pinterest.eqs import ON_DEMAND_GAP, PROBLEMS, RETRY_AFTER_FAULT, EqsReader
from delivery.pinterest.sandbox_eqs import EQS_SCHEMA
from delivery.pinterest.tokens import TokenKeeper
from delivery.secrets import SecretBox
from tests.support import (
    ACCESS_TOKEN,
    AD_ACCOUNT,
    CONVERSION_TOKEN,
    FakePinterest,
    create_integration,
    create_source,
    post_batch,
    wait_for,
)

READER = "pina_READS_AND_WRITES_0001"
ANSWER = jsonschema.Draft202012Validator(EQS_SCHEMA)  # Pinterest's, for the 200 answer (schema/SOURCE.md)


@pytest.fixture
def fake():
    server = FakePinterest().start()
    server.sandbox.add_token(READER, scopes=("ads:read", "ads:write"))
    yield server
    server.stop()


def event(event_id: str, name: str = "checkout", **user) -> dict:
    body = {"event_name": name, "action_source": "web", "event_time": int(time.time()), "event_id": event_id,
            "user_data": {"client_ip_address": "203.0.113.5", "client_user_agent": "Mozilla/5.0", **user}}
    if name == "checkout":
        body["custom_data"] = {"value": "10", "currency": "USD", "order_id": f"o-{event_id}"}
    return body


def send(fake, events, test: bool = False) -> None:
    answer = httpx.post(f"{fake.url}/v5/ad_accounts/{AD_ACCOUNT}/events" + ("?test=true" if test else ""),
                        json={"data": events}, headers={"Authorization": f"Bearer {ACCESS_TOKEN}"})
    assert answer.status_code == 200, answer.text


def eqs(fake, token=READER, **params) -> httpx.Response:
    return httpx.get(f"{fake.url}/v5/ad_accounts/{AD_ACCOUNT}/conversion_eqs",
                     params={"lookback_period": "1d", **params}, headers={"Authorization": f"Bearer {token}"})


# --- the sandbox --------------------------------------------------------------------------------

def test_the_sandbox_scores_what_it_received_in_pinterests_shape(fake):
    emails = {"em": ["a" * 64]}
    checkouts = [event("c0", **emails, click_id="dj0y"), event("c1", **emails), event("c2", **emails), event("c3")]
    send(fake, checkouts + [event("p1", "page_visit")])
    send(fake, [event("t1")], test=True)  # test events are not recorded, nor scored
    fake.sandbox.add_tag_events(AD_ACCOUNT, ["c0", "c1", "elsewhere"])
    answer = eqs(fake, ingestion_source="CONVERSIONS_API")
    assert answer.status_code == 200, answer.text
    assert list(ANSWER.iter_errors(answer.json())) == []
    [web] = answer.json()
    assert (web["source_platform"], web["lookback_period"], web["ingestion_source"]) == ("WEB", "1d", "CONVERSIONS_API")
    parts = web["quality_components"]
    assert parts["hashed_email"]["checkout"]["coverage"] == 75.0 and parts["hashed_email"]["page_visit"]["coverage"] == 0
    assert parts["click_id_epik"]["checkout"]["coverage"] == 25.0
    assert parts["order_id"]["checkout"]["coverage"] == 100.0 and parts["order_value"]["page_visit"]["coverage"] == 0
    assert parts["external_event_id"]["checkout"] == {"coverage": 100.0, "issues": [], "overlap": 50.0}
    low = parts["click_id_epik"]["checkout"]["issues"]
    assert [i["id"] for i in low] == ["LOW_COVERAGE_CLICK_ID_EPIK"] and "25%" in low[0]["reason"]
    assert parts["ip_address"]["checkout"]["issues"] == []  # one address on 4 events: too few to tell
    send(fake, [event(f"c{i}") for i in range(4, 8)])
    # 8 checkouts from one address: the mark of a server's own address sent as its visitors'
    shared = eqs(fake).json()[0]["quality_components"]["ip_address"]["checkout"]["issues"]
    assert [i["id"] for i in shared] == ["SHARED_IP_ADDRESS"] and "100%" in shared[0]["reason"]


def test_the_sandbox_answers_per_platform_and_refuses_what_pinterest_refuses(fake):
    app = {**event("a1", "app_install"), "action_source": "app_ios", "user_data": {"hashed_maids": ["b" * 64]}}
    send(fake, [event("w1", "page_visit"), app])
    both = eqs(fake, lookback_period="14d").json()
    assert [s["source_platform"] for s in both] == ["MOBILE_IOS", "WEB"]
    assert both[0]["quality_components"]["hashed_maid"]["app_install"]["coverage"] == 100.0
    assert [s["source_platform"] for s in eqs(fake, source_platform="MOBILE").json()] == ["MOBILE_IOS"]
    assert eqs(fake, ingestion_source="TAG").json() == []
    assert eqs(fake, token=ACCESS_TOKEN).status_code == 403  # ads:write only
    assert eqs(fake, token="pina_nobody").status_code == 401
    missing = httpx.get(f"{fake.url}/v5/ad_accounts/{AD_ACCOUNT}/conversion_eqs", headers={
        "Authorization": f"Bearer {READER}"})
    assert missing.status_code == 400 and "lookback_period" in missing.json()["message"]
    assert eqs(fake, lookback_period="7d").status_code == 400
    assert eqs(fake, source_platform="MARS").status_code == 400


# --- reading it: EqsReader over a real store and the sandbox -------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def integration(access_token: str | None = READER, conversion_token: str | None = CONVERSION_TOKEN) -> Integration:
    return Integration(id="int_eqs", source_id="src_eqs", name="Pinterest", created_at=0, updated_at=0,
                       config=PinterestConfig(AD_ACCOUNT, access_token, conversion_token))


def with_reader(tmp_path, fake, test):
    async def main():
        settings = load_settings({"db": str(tmp_path / "eqs.db")}, environ={})
        db, store, queue = await open_backend(settings, "node-a", serving=False)
        await store.open(SecretBox("k"))
        clock = Clock()
        async with httpx.AsyncClient(timeout=5) as http:
            try:
                await test(EqsReader(store, TokenKeeper(store, fake.url, http), fake.url, clock=clock), clock)
            finally:
                await queue.close()
                await close_database(db)
    asyncio.run(main())


def test_the_score_is_read_kept_and_read_again_only_when_due(tmp_path, fake):
    send(fake, [event("c1", em=["a" * 64])])

    async def test(reader: EqsReader, clock: Clock):
        reads = lambda: fake.sandbox.state.eqs_reads  # noqa: E731
        first = await reader.report(integration())
        assert first.problem is None and reads() == 2  # 1 day and 14 days
        assert first.scores["1d"][0].quality_components.hashed_email["checkout"].coverage == 100.0
        assert first.scores["14d"][0].lookback_period == "14d"
        assert await reader.report(integration()) == first and reads() == 2  # from the store
        assert await reader.report(integration(), refresh=True) == first and reads() == 2  # asked again too soon
        clock.now += ON_DEMAND_GAP
        again = await reader.report(integration(), refresh=True)
        assert reads() == 4 and again.checked_at == clock.now
        assert (await reader.refresh(integration())) == again and reads() == 4  # the schedule: not due yet
        clock.now = again.next_at
        latest = await reader.refresh(integration())
        assert reads() == 6 and await reader.cached("int_eqs") == latest  # kept in the store's meta
        moved = integration()
        moved.config.ad_account_id = "111222333"  # another ad account: its own score, read at once
        assert (await reader.report(moved)).ad_account_id == "111222333" and reads() == 8

    with_reader(tmp_path, fake, test)


def test_what_to_do_when_the_token_cannot_read_it(tmp_path, fake):
    async def test(reader: EqsReader, clock: Clock):
        only_conversion = await reader.report(integration(access_token=None))
        assert only_conversion.problem == "no_read_token" and only_conversion.scores == {}
        assert only_conversion.pinterest_message is None and fake.sandbox.state.eqs_reads == 0  # nothing to ask with
        assert "ads:read" in PROBLEMS["no_read_token"] and "Connect with Pinterest" in PROBLEMS["no_read_token"]
        clock.now += ON_DEMAND_GAP
        no_scope = await reader.report(integration(access_token=ACCESS_TOKEN), refresh=True)
        assert no_scope.problem == "needs_ads_read" and "not permitted" in no_scope.pinterest_message
        assert no_scope.next_at == clock.now + reader.refresh_every

    with_reader(tmp_path, fake, test)


def test_a_failed_read_keeps_the_last_scores_and_tries_again_sooner(tmp_path, fake):
    send(fake, [event("c1")])

    async def test(reader: EqsReader, clock: Clock):
        good = await reader.report(integration())
        clock.now += ON_DEMAND_GAP
        fake.stop()  # Pinterest does not answer
        failed = await reader.report(integration(), refresh=True)
        assert failed.problem == "unavailable" and failed.next_at == clock.now + RETRY_AFTER_FAULT
        assert failed.pinterest_message is None  # Pinterest said nothing
        assert failed.scores == good.scores and failed.scores_at == good.scores_at

    with_reader(tmp_path, fake, test)


def test_the_background_task_reads_every_enabled_integration_when_due(tmp_path, fake):
    async def test(reader: EqsReader, clock: Clock):
        from delivery.config import Source

        store = reader.store
        await store.put_source(Source(id="src_eqs", name="Shop", pipeline_key="dk_eqs", created_at=0, updated_at=0), None)
        await store.put_integration(integration(), None)
        off = integration()
        off.id, off.enabled = "int_off", False
        await store.put_integration(off, None)
        task = asyncio.create_task(reader.run(tick=0.01))
        try:
            for _ in range(500):
                if await reader.cached("int_eqs") is not None:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)  # more turns: nothing is read again before it is due
        finally:
            task.cancel()
        assert (await reader.cached("int_eqs")).problem is None and fake.sandbox.state.eqs_reads == 2
        assert await reader.cached("int_off") is None

    with_reader(tmp_path, fake, test)


# --- the admin API --------------------------------------------------------------------------------

def test_the_admin_api_shows_pinterests_score_and_reads_it_on_demand(edge, fake_pinterest):
    fake_pinterest.sandbox.add_token(READER, scopes=("ads:read", "ads:write"))
    with edge.admin() as api:
        source = create_source(api)
        reading = create_integration(api, source["id"], config={"access_token": READER})
        sending_only = create_integration(api, source["id"])  # the test tokens: ads:write only
        events = [{"type": "track", "event": "Order Completed", "messageId": f"o{i}", "properties": {"total": 5},
                   "context": {"traits": {"email": f"buyer{i}@example.com"}}} for i in range(3)]
        assert post_batch(edge.url, source["pipeline_key"], events).status_code == 200
        wait_for(lambda: len(fake_pinterest.sandbox.events()) == 6, what="both integrations' deliveries")
        shown = api.get(f"/integrations/{reading['id']}/event-quality?refresh=1").json()
        assert shown["problem"] is None and shown["scores_at"] and shown["next_refresh_at"] > shown["checked_at"]
        assert [p["lookback_period"] for p in shown["periods"]] == ["1d", "14d"]
        [web] = shown["periods"][0]["scores"]
        assert web["source_platform"] == "WEB" and web["quality_components"]["hashed_email"]["checkout"]["coverage"] == 100
        assert list(ANSWER.iter_errors(shown["periods"][1]["scores"])) == []
        refused = api.get(f"/integrations/{sending_only['id']}/event-quality").json()
        assert refused["problem"] == "needs_ads_read" and "ads:read" in refused["message"]
        assert refused["periods"] == [{"lookback_period": "1d", "scores": []}, {"lookback_period": "14d", "scores": []}]
        assert api.get("/integrations/int_nope/event-quality").status_code == 404
