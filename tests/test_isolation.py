"""One integration's trouble stays its own (issue 16): hanging ad accounts, shutdown while a
request is in flight, and disable / pause / delete that keep their word."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter

import pytest

from delivery.pinterest.sandbox import Fault
from tests.support import create_integration, create_source, post_batch, stats, wait_for


def events(ids, name="Signed Up"):
    return [{"type": "track", "event": name, "messageId": i} for i in ids]


def arrived(fake, event_id):
    return any(e["event_id"] == event_id for e in fake.sandbox.events(include_test=False))


@pytest.mark.timed
def test_30_hanging_ad_accounts_do_not_delay_a_healthy_integration(edge_factory, fake_pinterest):
    flush = 0.2
    edge = edge_factory(env={"SIGNAL_FLUSH_INTERVAL": str(flush), "SIGNAL_REQUEST_TIMEOUT": "20"})
    admin = edge.admin()
    troubled = create_source(admin)
    for n in range(30):
        account = f"7000000000{n:02d}"
        fake_pinterest.sandbox.add_fault(Fault(200, count=0, delay=30, ad_account_id=account))
        create_integration(admin, troubled["id"], config={"ad_account_id": account})
    healthy = create_source(admin)
    create_integration(admin, healthy["id"])
    for i in range(6):  # every troubled integration fills its 4 request slots, each hanging
        assert post_batch(edge.url, troubled["pipeline_key"], events([f"hang-{i}"])).status_code == 200
        time.sleep(0.1)
    time.sleep(1)
    started = time.monotonic()
    assert post_batch(edge.url, healthy["pipeline_key"], events(["healthy-1"])).status_code == 200
    wait_for(lambda: arrived(fake_pinterest, "healthy-1"), timeout=10, interval=0.02, what="the healthy event")
    took = time.monotonic() - started
    # Its flush interval plus one request (a local request takes milliseconds; a second is generous).
    assert took < flush + 1.0, f"the healthy integration waited {took:.2f}s behind the hanging ones"
    edge.kill()


def test_sigterm_lets_a_request_in_flight_finish_instead_of_sending_it_twice(edge_factory, fake_pinterest):
    env = {"SIGNAL_SHUTDOWN_GRACE": "1", "SIGNAL_REQUEST_TIMEOUT": "10", "SIGNAL_FLUSH_INTERVAL": "0.1"}
    edge = edge_factory(env=env)
    with edge.admin() as admin:
        source = create_source(admin)
        integration = create_integration(admin, source["id"])
    fake_pinterest.sandbox.add_fault(Fault(200, count=1, delay=4))  # Pinterest is slow, then answers
    ids = [f"slow-{i}" for i in range(500)]
    assert post_batch(edge.url, source["pipeline_key"], events(ids)).status_code == 200
    wait_for(lambda: fake_pinterest.sandbox.state.arrivals, what="the request at Pinterest")
    stopping = time.monotonic()
    assert edge.stop(signal.SIGTERM) == 0
    assert 2 < time.monotonic() - stopping < 12  # it waited for Pinterest's answer, within the request's timeout
    again = edge_factory(db=edge.db, env=env)
    with again.admin() as admin:
        wait_for(lambda: stats(admin, integration["id"])["delivered"] == 500, what="the answer to be recorded")
    time.sleep(1)  # a resend would arrive meanwhile
    received = Counter(e["event_id"] for e in fake_pinterest.sandbox.events())
    assert set(received) == set(ids) and max(received.values()) == 1, "events were sent twice"


def test_a_disabled_integration_counts_what_it_skips(edge_factory, fake_pinterest):
    edge = edge_factory()
    admin = edge.admin()
    source = create_source(admin)
    integration = create_integration(admin, source["id"], enabled=False)
    assert post_batch(edge.url, source["pipeline_key"], events(["off-1", "off-2", "off-3"])).status_code == 200
    counts = stats(admin, integration["id"])
    assert counts["skipped_disabled"] == 3 and counts["accepted"] == 0 and counts["queued"] == 0
    assert f'signal_edge_events_skipped_disabled_total{{integration="{integration["id"]}"}} 3' in \
        admin.get(edge.admin_url + "/metrics").text
    admin.patch(f"/integrations/{integration['id']}", json={"enabled": True})
    assert post_batch(edge.url, source["pipeline_key"], events(["on-1"])).status_code == 200
    wait_for(lambda: arrived(fake_pinterest, "on-1"), what="delivery once enabled")
    assert not any(arrived(fake_pinterest, f"off-{i}") for i in (1, 2, 3))


def test_pause_keeps_queueing_and_sends_nothing_until_resumed(edge_factory, fake_pinterest):
    edge = edge_factory(env={"SIGNAL_FLUSH_INTERVAL": "0.1"})
    admin = edge.admin()
    source = create_source(admin)
    integration = create_integration(admin, source["id"])
    paused = admin.patch(f"/integrations/{integration['id']}", json={"paused": True}).json()
    assert paused["paused"] is True and paused["enabled"] is True
    ids = [f"held-{i}" for i in range(20)]
    assert post_batch(edge.url, source["pipeline_key"], events(ids)).status_code == 200
    time.sleep(1)
    assert stats(admin, integration["id"])["queued"] == 20 and not fake_pinterest.sandbox.events()
    assert f'signal_edge_integration_paused{{integration="{integration["id"]}"}} 1' in \
        admin.get(edge.admin_url + "/metrics").text
    admin.patch(f"/integrations/{integration['id']}", json={"paused": False})
    wait_for(lambda: all(arrived(fake_pinterest, i) for i in ids), what="the held events after resuming")


def test_deleting_moves_queued_events_to_dead_letters_that_stay_readable_and_replayable(edge_factory, fake_pinterest):
    edge = edge_factory(env={"SIGNAL_FLUSH_INTERVAL": "0.1"})
    admin = edge.admin()
    source = create_source(admin)
    doomed = create_integration(admin, source["id"], name="Old pixel")
    admin.patch(f"/integrations/{doomed['id']}", json={"paused": True})
    ids = [f"orphan-{i}" for i in range(30)]
    assert post_batch(edge.url, source["pipeline_key"], events(ids)).status_code == 200
    assert admin.delete(f"/integrations/{doomed['id']}").status_code == 204  # no "disable it and wait"
    assert admin.get(f"/integrations/{doomed['id']}").status_code == 404

    listed = admin.get(f"/integrations/{doomed['id']}/dead-letters", params={"limit": 100}).json()["data"]
    assert {d["event_id"] for d in listed} == set(ids)
    assert all("integration was deleted" in d["reason"] for d in listed)
    export = admin.get(f"/integrations/{doomed['id']}/dead-letters/export")
    assert export.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in export.text.splitlines()]
    assert {line["event_id"] for line in lines} == set(ids) and lines[0]["event"]["name"] == "Signed Up"

    nowhere = admin.post(f"/integrations/{doomed['id']}/dead-letters/replay", json={})
    assert nowhere.status_code == 409 and "into" in nowhere.json()["error"]["message"]
    successor = create_integration(admin, source["id"], name="New pixel")
    replayed = admin.post(f"/integrations/{doomed['id']}/dead-letters/replay", json={"into": successor["id"]})
    assert replayed.json() == {"replayed": 30}
    wait_for(lambda: all(arrived(fake_pinterest, i) for i in ids), what="the replayed events")
    counts = stats(admin, successor["id"])
    wait_for(lambda: stats(admin, successor["id"])["delivered"] == 30, what="the successor's accounting")
    assert counts["accepted"] == 30
    assert admin.get(f"/integrations/{doomed['id']}/dead-letters").status_code == 404  # nothing left of it


def test_deleting_an_integration_lets_its_batch_in_flight_finish(edge_factory, fake_pinterest):
    """Its connections close after its batches in flight have ended, not under them. CI met a
    batch whose conversion token was refused and whose second try, with the access token, found
    its client closed: "Cannot send a request, as the client has been closed", and a traceback."""
    fake_pinterest.sandbox.add_fault(Fault(401, delay=1.0))  # the first try is refused, a second later
    edge = edge_factory(env={"SIGNAL_FLUSH_INTERVAL": "0.1"})
    admin = edge.admin()
    source = create_source(admin)
    doomed = create_integration(admin, source["id"])
    assert post_batch(edge.url, source["pipeline_key"], events(["inflight"])).status_code == 200
    wait_for(lambda: fake_pinterest.sandbox.state.arrivals, what="the batch in flight")
    assert admin.delete(f"/integrations/{doomed['id']}").status_code == 204
    wait_for(lambda: len(fake_pinterest.sandbox.request_log()) == 2, 10, what="the access token's try")
    assert [r.status for r in fake_pinterest.sandbox.request_log()] == [401, 200]
    time.sleep(0.5)  # the batch settles and the connections close
    log = edge.output()
    assert "Traceback" not in log and "failed" not in log, log[-3000:]
