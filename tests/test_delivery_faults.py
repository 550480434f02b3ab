"""Delivery under faults, against the fake Pinterest over real sockets (issue 5).

Every scenario ends with the same exact accounting: accepted = delivered + dead-lettered +
filtered, nothing queued or in flight, every accepted event either at Pinterest or in the
dead-letter store (never both, never neither), and duplicates at Pinterest only where a
request was in flight when it failed.
"""

from __future__ import annotations

import time
from collections import Counter

import httpx
import pytest

from delivery.pinterest.catalog import TROUBLESHOOTING
from delivery.pinterest.sandbox import Fault
from delivery.retry import LAST_CALL, send_by
from tests.support import ACCESS_TOKEN, create_integration, create_source, post_batch, stats, wait_for

FAST = {"SIGNAL_RETRY_DELAYS": "0.1,0.1,0.1,0.1,0.1,0.1,0.1", "SIGNAL_FLUSH_INTERVAL": "0.1"}


def send(edge, source, ids, name="Signed Up", **extra):
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        response = post_batch(edge.url, source["pipeline_key"],
                              [{"type": "track", "event": name, "messageId": i, **extra} for i in chunk])
        assert response.status_code == 200 and response.json()["accepted"] == len(chunk), response.text


def dead_letters(admin, integration_id) -> dict[str, dict]:
    found, cursor = {}, None
    while True:
        page = admin.get(f"/integrations/{integration_id}/dead-letters",
                         params={"limit": 100, **({"cursor": cursor} if cursor else {})}).json()
        found.update({d["event_id"]: d for d in page["data"]})
        if not page["has_more"]:
            return found
        cursor = page["next_cursor"]


def settle(admin, integration_id, accepted, timeout=30) -> dict:
    def done():
        c = stats(admin, integration_id)
        return c if c["accepted"] == accepted and c["queued"] == 0 and c["in_flight"] == 0 else None
    return wait_for(done, timeout=timeout, interval=0.1, what=f"{accepted} events to settle")


def assert_accounting(admin, integration_id, ids, fake, dead=frozenset(), duplicates_ok=frozenset(), timeout=30):
    counts = settle(admin, integration_id, len(ids), timeout)
    assert counts["accepted"] == counts["delivered"] + counts["dead_lettered"] + counts["filtered"]
    received = Counter(e["event_id"] for e in fake.sandbox.events(include_test=False))
    lettered = dead_letters(admin, integration_id)
    assert set(lettered) == set(dead), "dead letters"
    assert set(received) | set(lettered) == set(ids), "an accepted event is missing"
    assert not set(received) & set(lettered), "an event both delivered and dead-lettered"
    assert counts["delivered"] == len(set(received)) and counts["dead_lettered"] == len(lettered)
    duplicated = {i for i, n in received.items() if n > 1}
    assert duplicated <= set(duplicates_ok), f"duplicates outside in-flight requests: {duplicated - set(duplicates_ok)}"
    return counts, lettered


@pytest.fixture
def setup(edge_factory, fake_pinterest):
    def make(env=None, **integration):
        edge = edge_factory(env={**FAST, **(env or {})})
        admin = edge.admin()
        source = create_source(admin)
        created = create_integration(admin, source["id"], **integration)
        return edge, admin, source, created["id"]
    return make


def ids_for(prefix, n):
    return [f"{prefix}-{i:04d}" for i in range(n)]


def test_runs_of_500s_are_retried(setup, fake_pinterest):
    fake_pinterest.sandbox.add_fault(Fault(500, count=3))
    edge, admin, source, integration = setup()
    ids = ids_for("e500", 50)
    send(edge, source, ids)
    assert_accounting(admin, integration, ids, fake_pinterest)
    assert [r.status for r in fake_pinterest.sandbox.request_log()][:4] == [500, 500, 500, 200]


def test_timeouts_are_retried_and_only_in_flight_events_may_repeat(setup, fake_pinterest):
    fake_pinterest.sandbox.add_fault(Fault(200, count=1, delay=1.5))  # answers after our 0.5 s timeout
    edge, admin, source, integration = setup(env={"SIGNAL_REQUEST_TIMEOUT": "0.5"})
    ids = ids_for("slow", 40)
    send(edge, source, ids)
    assert_accounting(admin, integration, ids, fake_pinterest, duplicates_ok=ids)
    assert "timeout" in stats(admin, integration)["last_error"]


def test_a_429_storm_is_waited_out_as_pinterest_asks(setup, fake_pinterest):
    fake_pinterest.sandbox.add_fault(Fault(429, count=4, retry_after=0.5))
    edge, admin, source, integration = setup()
    ids = ids_for("storm", 30)
    send(edge, source, ids)
    assert_accounting(admin, integration, ids, fake_pinterest)
    log = fake_pinterest.sandbox.request_log()
    assert [r.status for r in log][:5] == [429, 429, 429, 429, 200]
    gaps = [b.at - a.at for a, b in zip(log, log[1:5])]
    assert min(gaps) >= 0.45, gaps  # Retry-After honoured every time


def test_422_failed_events_are_dead_lettered_with_pinterests_message(setup, fake_pinterest):
    ids = ids_for("part", 20)
    bad = {ids[3]: "event_time is invalid.", ids[11]: "user_data.em is invalid."}
    httpx.post(fake_pinterest.url + "/_sandbox/faults", json={"failing_event_ids": bad})
    edge, admin, source, integration = setup()
    send(edge, source, ids)
    _, lettered = assert_accounting(admin, integration, ids, fake_pinterest, dead=set(bad))
    assert {i: d["reason"] for i, d in lettered.items()} == {i: f"Pinterest: {m}" for i, m in bad.items()}
    assert all(d["event"]["message_id"] == i for i, d in lettered.items())


def test_a_poisoned_event_among_999_good_ones_is_isolated(setup, fake_pinterest):
    ids = ids_for("bulk", 1000)
    httpx.post(fake_pinterest.url + "/_sandbox/faults", json={"poison_event_ids": [ids[617]]})
    edge, admin, source, integration = setup()
    send(edge, source, ids)
    _, lettered = assert_accounting(admin, integration, ids, fake_pinterest, dead={ids[617]})
    assert lettered[ids[617]]["reason"] == "Pinterest rejected it: HTTP 400: The request was invalid."
    requests = fake_pinterest.sandbox.request_log()
    assert len(requests) <= 2 * 10 + 2  # bisection: about two requests per halving


def test_401_keeps_events_until_the_credentials_are_corrected(setup, fake_pinterest):
    edge, admin, source, integration = setup(config={"access_token": "pina_EXPIRED", "conversion_token": "ct_REVOKED"})
    ids = ids_for("auth", 25)
    send(edge, source, ids)
    unhealthy = wait_for(lambda: (i := admin.get(f"/integrations/{integration}").json())["health"]["status"]
                         == "unhealthy" and i, what="unhealthy")
    assert unhealthy["health"]["problem"] == "unauthorized"
    assert unhealthy["health"]["message"] == TROUBLESHOOTING["unauthorized"]
    assert unhealthy["health"]["pinterest_message"] == "Authentication failed."
    time.sleep(0.5)
    counts = stats(admin, integration)
    assert counts["delivered"] == counts["dead_lettered"] == 0 and counts["queued"] == 25
    tried = len(fake_pinterest.sandbox.request_log())
    time.sleep(0.5)
    assert len(fake_pinterest.sandbox.request_log()) == tried  # paused, not hammering Pinterest

    fixed = admin.patch(f"/integrations/{integration}", json={"config": {"access_token": ACCESS_TOKEN}})
    assert fixed.status_code == 200 and fixed.json()["config"]["conversion_token"].startswith("ct_")
    assert_accounting(admin, integration, ids, fake_pinterest)
    # The conversion token still fails, so the access token carried them.
    assert {r.token for r in fake_pinterest.sandbox.recorded()} == {ACCESS_TOKEN}
    wait_for(lambda: admin.get(f"/integrations/{integration}").json()["health"]["status"] == "healthy",
             what="healthy again")


def test_403_marks_the_integration_unhealthy_with_the_scope_advice(setup, fake_pinterest):
    fake_pinterest.sandbox.add_token("pina_READONLY", scopes=("ads:read",))
    edge, admin, source, integration = setup(config={"access_token": "pina_READONLY", "conversion_token": "ct_gone"})
    send(edge, source, ids_for("scope", 3))
    health = wait_for(lambda: (h := admin.get(f"/integrations/{integration}").json()["health"])["status"]
                      == "unhealthy" and h, what="unhealthy")
    assert health["problem"] == "forbidden" and "ads:write" in health["message"]
    assert stats(admin, integration)["queued"] == 3


def test_pinterest_unreachable_for_a_while(setup, fake_pinterest):
    edge, admin, source, integration = setup()
    port = fake_pinterest.port
    fake_pinterest.stop()
    ids = ids_for("down", 60)
    send(edge, source, ids)
    wait_for(lambda: "could not reach Pinterest" in (stats(admin, integration)["last_error"] or ""), what="failures")
    time.sleep(0.5)
    fake_pinterest.port = port
    fake_pinterest.start()
    assert_accounting(admin, integration, ids, fake_pinterest)


def test_retries_go_on_until_pinterests_window_closes_then_dead_letter(setup, fake_pinterest):
    """A failure that does not end is retried while Pinterest would still take the event (7 days
    less the margin), however many attempts that takes; then the event is dead-lettered as too
    old. Here the window of these events closes 6 s after they are sent."""
    fake_pinterest.sandbox.add_fault(Fault(502, count=0))  # forever
    edge, admin, source, integration = setup()
    ids = ids_for("closing", 5)
    closes_at = time.time() + 6
    send(edge, source, ids, timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                    time.gmtime(closes_at + LAST_CALL - send_by(0.0))))
    _, lettered = assert_accounting(admin, integration, ids, fake_pinterest, dead=set(ids))
    attempts = {d["attempts"] for d in lettered.values()}
    assert len(attempts) == 1 and min(attempts) >= 2, attempts  # no cap of attempts: the window decides
    assert all(d["reason"].startswith(f"gave up after {d['attempts']} attempts: Pinterest's 7-day window for it "
                                      "closes before another attempt; the last error: HTTP 502")
               for d in lettered.values())
    assert all(r.at < closes_at + LAST_CALL for r in fake_pinterest.sandbox.request_log())  # none sent late


def test_events_older_than_7_days_are_not_sent(setup, fake_pinterest):
    edge, admin, source, integration = setup()
    old = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 8 * 86400))
    send(edge, source, ["old-1"], timestamp=old)
    send(edge, source, ["new-1"])
    _, lettered = assert_accounting(admin, integration, ["old-1", "new-1"], fake_pinterest, dead={"old-1"})
    assert "older than 7 days" in lettered["old-1"]["reason"]


def test_replayed_dead_letters_keep_their_event_ids(setup, fake_pinterest):
    ids = ids_for("replay", 6)
    httpx.post(fake_pinterest.url + "/_sandbox/faults", json={"failing_event_ids": {i: "temporary" for i in ids[:4]}})
    edge, admin, source, integration = setup()
    send(edge, source, ids)
    _, lettered = assert_accounting(admin, integration, ids, fake_pinterest, dead=set(ids[:4]))
    fake_pinterest.sandbox.state.failing_event_ids.clear()
    one = admin.post(f"/integrations/{integration}/dead-letters/replay", json={"ids": [lettered[ids[0]]["id"]]})
    assert one.json() == {"replayed": 1}
    wait_for(lambda: ids[0] in {e["event_id"] for e in fake_pinterest.sandbox.events()}, what="the replayed one")
    rest = admin.post(f"/integrations/{integration}/dead-letters/replay")
    assert rest.json() == {"replayed": 3}
    assert_accounting(admin, integration, ids, fake_pinterest)
    audit = admin.get("/audit-log").json()["data"]
    assert [a["action"] for a in audit[:2]] == ["replay", "replay"]


def test_test_mode_sends_test_true(setup, fake_pinterest):
    edge, admin, source, integration = setup(config={"test_mode": True})
    send(edge, source, ["t-1"])
    settle(admin, integration, 1)
    assert [r.test for r in fake_pinterest.sandbox.recorded()] == [True]


def test_the_rate_limit_holds_under_a_burst(setup, fake_pinterest):
    rate, burst = 5, 2
    edge, admin, source, integration = setup(env={"SIGNAL_BATCH_SIZE": "10"},
                                             config={"rate_limit_per_second": rate, "rate_limit_burst": burst})
    ids = ids_for("burst", 150)  # 15 requests of 10
    send(edge, source, ids)
    assert_accounting(admin, integration, ids, fake_pinterest)
    times = sorted(r.at for r in fake_pinterest.sandbox.request_log())
    assert len(times) == 15
    # A token bucket: in any window of w seconds at most burst + rate * w requests.
    for i, start in enumerate(times):
        in_window = sum(1 for t in times[i:] if t < start + 1.0)
        assert in_window <= burst + rate, (in_window, times)
    sustained = (len(times) - burst) / (times[-1] - times[0])
    assert sustained <= rate * 1.1, sustained


def test_priority_events_go_first_when_the_rate_limit_binds(setup, fake_pinterest):
    edge, admin, source, integration = setup(env={"SIGNAL_BATCH_SIZE": "10", "SIGNAL_MAX_IN_FLIGHT": "1"},
                                             variant="retail", config={"rate_limit_per_second": 2, "rate_limit_burst": 1})
    slow = ids_for("signup", 60)  # not a retail priority event
    send(edge, source, slow)
    wait_for(lambda: len(fake_pinterest.sandbox.request_log()) >= 1, what="the first request")
    urgent = ids_for("order", 10)
    send(edge, source, urgent, name="Order Completed", properties={"total": 5, "currency": "USD"})
    assert_accounting(admin, integration, slow + urgent, fake_pinterest)
    order = [e["event_id"] for e in fake_pinterest.sandbox.events()]
    last_urgent = max(order.index(i) for i in urgent)
    assert last_urgent < 40, order  # the orders overtook most of the 60 sign-ups still queued


def test_metrics_expose_the_accounting(setup, fake_pinterest):
    ids = ids_for("m", 4)
    httpx.post(fake_pinterest.url + "/_sandbox/faults", json={"failing_event_ids": {ids[0]: "bad"}})
    edge, admin, source, integration = setup()
    send(edge, source, ids)
    assert_accounting(admin, integration, ids, fake_pinterest, dead={ids[0]})
    text = httpx.get(edge.admin_url + "/metrics").text
    assert f'signal_edge_events_accepted_total{{integration="{integration}"}} 4' in text
    assert f'signal_edge_events_delivered_total{{integration="{integration}"}} 3' in text
    assert f'signal_edge_events_dead_lettered_total{{integration="{integration}"}} 1' in text
    assert f'signal_edge_events_queued{{integration="{integration}"}} 0' in text


def test_a_passing_test_event_resumes_a_paused_integration(setup, fake_pinterest):
    fake_pinterest.sandbox.add_token("pina_SCOPED", scopes=("ads:read",))
    edge, admin, source, integration = setup(config={"access_token": "pina_SCOPED", "conversion_token": "ct_gone"})
    ids = ids_for("resume", 5)
    send(edge, source, ids)
    wait_for(lambda: admin.get(f"/integrations/{integration}").json()["health"]["problem"] == "forbidden",
             what="paused on 403")
    # The scope is granted in Pinterest; nothing changes here, the operator presses "Send test event".
    fake_pinterest.sandbox.add_token("pina_SCOPED", scopes=("ads:write",))
    result = admin.post(f"/integrations/{integration}/test").json()
    assert [(c["credential"], c["ok"]) for c in result["checks"]] == [("conversion_token", False), ("access_token", True)]
    assert result["ok"] is False and "Delivery goes on with the credential that works" in result["message"]
    assert_accounting(admin, integration, ids, fake_pinterest, timeout=8)  # well before the 30 s recheck
