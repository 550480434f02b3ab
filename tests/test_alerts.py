"""Alerts (issue 27): the silent-drop arithmetic, and a real signal-edge whose webhook destinations
(a generic JSON one and a Slack one, on a local receiver) get exactly one alert and one recovery
for each incident: an integration paused by a 401, delivery failing, dead letters above the
threshold, a silent drop of one event type, and storage degraded."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import httpx
import pytest

from delivery.alerts import AlertSettings, drops
from delivery.pinterest.sandbox import Fault
from tests.support import (
    AD_ACCOUNT,
    FakePinterest,
    ServerThread,
    SignalEdge,
    create_integration,
    create_source,
    post_batch,
    wait_for,
)


def test_a_drop_is_judged_against_the_type_s_own_baseline():
    s = AlertSettings(drop_window=60, drop_baseline=600, drop_fraction=0.25, drop_min_events=20)  # 5 s buckets
    now = 10_000.0  # the window: [9940, 10000); its baseline: [9340, 9940)
    steady = [("int_a", "Signed Up", b, 10) for b in range(9340, 9940, 5)]  # 120 a window
    assert drops(steady + [("int_a", "Signed Up", b, 10) for b in range(9940, 10000, 5)], now, s) == (
        {}, {("int_a", "Signed Up"): (120, 120.0)})
    low, normal = drops(steady + [("int_a", "Signed Up", 9940, 29)], now, s)
    assert low == {("int_a", "Signed Up"): (29, 120.0)} and normal == {}
    assert drops(steady + [("int_a", "Signed Up", 9940, 30)], now, s) == ({}, {})  # between the two levels
    rare = [("int_a", "Lead", b, 1) for b in range(9340, 9940, 5)]  # 12 a window: fewer than 20 expected
    assert drops(rare, now, s) == ({}, {})
    young = [("int_a", "New", b, 50) for b in range(9900, 9940, 5)]  # a baseline shorter than the window
    assert drops(young, now, s) == ({}, {})
    current = [("int_a", "Signed Up", 10_000, 500)]  # the bucket still filling does not count
    assert drops(steady + current, now, s)[0] == {("int_a", "Signed Up"): (0, 120.0)}


class Receiver:
    """A webhook receiver: records every POST (path, JSON body, when); fails the first Slack alert
    that is not a test (the sender must retry it)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict, float]] = []
        self.failed_once = False

    async def __call__(self, scope, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status = 200
        if scope["path"] == "/slack" and not self.failed_once and "test alert" not in body.decode():
            self.failed_once, status = True, 503
        else:
            self.calls.append((scope["path"], json.loads(body), time.time()))
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def alerts(self, path: str = "/hook") -> list[dict]:
        return [body for where, body, _ in self.calls if where == path and body.get("state") != "test"]


@pytest.mark.process
@pytest.mark.slow
def test_each_incident_gets_one_alert_and_one_recovery(tmp_path):
    receiver = Receiver()
    hook = ServerThread(receiver).start()
    fake = FakePinterest().start()
    accounts = {"paused": "111", "failing": "222", "dead": "333", "drop": AD_ACCOUNT}
    for name in ("paused", "failing", "dead"):
        fake.sandbox.add_token(f"pina_{name.upper()}_TOKEN_1234", ad_accounts=[accounts[name]])
    edge = SignalEdge(tmp_path, fake.url, env={
        "SIGNAL_ALERT_INTERVAL": "0.5", "SIGNAL_ALERT_FAILING_MINUTES": "0.05", "SIGNAL_ALERT_DEAD_LETTERS": "2",
        "SIGNAL_ALERT_DROP_WINDOW": "3", "SIGNAL_ALERT_DROP_BASELINE": "12", "SIGNAL_ALERT_DROP_MIN_EVENTS": "5",
        "SIGNAL_DEAD_LETTER_RETENTION_DAYS": str(8 / 86400), "SIGNAL_RETENTION_INTERVAL": "1",
        "SIGNAL_RETRY_DELAYS": ",".join(["0.5"] * 30)}).start()
    stop_stream = threading.Event()
    try:
        with edge.admin() as admin:
            made = {}
            for name in ("paused", "failing", "dead", "drop"):
                source = create_source(admin, name=name)
                token = f"pina_{name.upper()}_TOKEN_1234" if name != "drop" else None
                config = {"ad_account_id": accounts[name], **({"access_token": token, "conversion_token": None}
                                                                if token else {})}
                made[name] = (source["pipeline_key"], create_integration(admin, source["id"], name=name,
                                                                         config=config)["id"])
            for kind, path in (("webhook", "/hook"), ("slack", "/slack")):
                created = admin.post("/alerts/destinations", json={"name": kind, "kind": kind, "url": hook.url + path})
                assert created.status_code == 201, created.text
                assert "****" in created.json()["url"]
                tested = admin.post(f"/alerts/destinations/{created.json()['id']}/test").json()
                assert tested["ok"] and "accepted the test alert" in tested["message"], tested
            assert receiver.calls[0][1]["state"] == "test" and "test alert" in receiver.calls[1][1]["text"]

            def stream() -> None:  # the drop integration's steady Product Viewed events
                with httpx.Client() as client:
                    while not stop_stream.is_set():
                        if not streaming.is_set():
                            time.sleep(0.05)
                            continue
                        post_batch(edge.url, made["drop"][0], [{"type": "track", "event": "Product Viewed"}], client)
                        time.sleep(0.1)

            streaming = threading.Event()
            streaming.set()
            threading.Thread(target=stream, daemon=True).start()

            def one_each(rule: str, subject: str) -> list[str]:
                return [b["state"] for b in receiver.alerts() if (b["rule"], b["subject"]) == (rule, subject)]

            # Paused by a 401, resumed by fixed credentials (the test button).
            fake.sandbox.remove_token("pina_PAUSED_TOKEN_1234")
            post_batch(edge.url, made["paused"][0], [{"type": "track", "event": "Signed Up"}])
            wait_for(lambda: one_each("integration_paused", made["paused"][1]) == ["firing"], 60, what="paused")
            fake.sandbox.add_token("pina_PAUSED_TOKEN_1234", ad_accounts=[accounts["paused"]])
            assert admin.post(f"/integrations/{made['paused'][1]}/test").json()["ok"]
            wait_for(lambda: one_each("integration_paused", made["paused"][1]) == ["firing", "resolved"], 60,
                     what="paused, resolved")

            # Failing: Pinterest answers 500 for more than the threshold, then delivers.
            fake.sandbox.add_fault(Fault(500, count=0, ad_account_id=accounts["failing"]))
            post_batch(edge.url, made["failing"][0], [{"type": "track", "event": "Signed Up"}])
            wait_for(lambda: one_each("delivery_failing", made["failing"][1]) == ["firing"], 60, what="failing")
            fake.sandbox.clear_faults()
            wait_for(lambda: one_each("delivery_failing", made["failing"][1]) == ["firing", "resolved"], 60,
                     what="failing, resolved")

            # Dead letters above 2 (events too old for Pinterest), until retention deletes them.
            old = "2020-01-01T00:00:00Z"
            post_batch(edge.url, made["dead"][0], [{"type": "track", "event": "Signed Up", "timestamp": old}] * 3)
            wait_for(lambda: one_each("dead_letters", made["dead"][1]) == ["firing"], 60, what="dead letters")
            wait_for(lambda: one_each("dead_letters", made["dead"][1]) == ["firing", "resolved"], 60,
                     what="dead letters expired")

            # A silent drop: the stream stops, then comes back.
            drop = f"{made['drop'][1]}/Product Viewed"
            streaming.clear()
            wait_for(lambda: one_each("silent_drop", drop) == ["firing"], 60, what="the drop")
            streaming.set()
            wait_for(lambda: one_each("silent_drop", drop) == ["firing", "resolved"], 60, what="the drop, resolved")
            stop_stream.set()  # and the integration goes: the stream's end is no incident
            assert admin.delete(f"/integrations/{made['drop'][1]}").status_code == 204

            # Storage degraded: a backup tool holds the database's write lock for longer than the
            # server waits for it.
            with sqlite3.connect(edge.db, timeout=10, isolation_level=None) as lock:
                lock.execute("BEGIN EXCLUSIVE")
                wait_for(lambda: [b["state"] for b in receiver.alerts() if b["rule"] == "storage_degraded"]
                         == ["firing"], 60, what="storage degraded")
                lock.execute("ROLLBACK")
            wait_for(lambda: [b["state"] for b in receiver.alerts() if b["rule"] == "storage_degraded"]
                     == ["firing", "resolved"], 60, what="storage back")
            lock.close()

            time.sleep(2)  # nothing more comes
            alerts = receiver.alerts()
            incidents = {(b["rule"], b["subject"]) for b in alerts}
            assert len(incidents) == 5, incidents
            for rule, subject in incidents:
                assert one_each(rule, subject) == ["firing", "resolved"], (rule, subject)
            assert all(b["source"] == "signal-edge" and b["message"] for b in alerts)
            slack = receiver.alerts("/slack")
            assert len(slack) == len(alerts) + 1 and all(set(b) == {"text"} for b in slack)  # and the test
            history = admin.get("/alerts/history?limit=100").json()["data"]
            sent = [h for h in history if h["state"] != "test"]
            assert len(sent) == 10 and all({d["status"] for d in h["deliveries"]} == {"sent"} for h in sent)
            assert sorted(d["attempts"] for h in sent for d in h["deliveries"]) == [1] * 19 + [2]  # one retry
            assert admin.get("/alerts/incidents").json()["data"] == []
    finally:
        stop_stream.set()
        log = edge.output()
        edge.stop()
        fake.stop()
        hook.stop()
    assert "Traceback" not in log, log[-3000:]
