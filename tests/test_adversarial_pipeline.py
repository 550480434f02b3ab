"""The adversarial corpus (tests/corpus.py) through the whole pipeline on both backends (issue 24):
a real `signal-edge serve` on SQLite and on PostgreSQL, the fake Pinterest, real sockets. Each
worst-case event rides between two ordinary orders. For every request: an answer (200, the
events refused by index with the field named); for every accepted event: delivered or
dead-lettered with a reason, nothing left in the queue; the neighbours always delivered; the
server's event loop never held for long (its own lag probe, as /healthz would feel it); no
traceback in its log."""

from __future__ import annotations

import json
import re
import uuid

import httpx
import pytest

from tests.corpus import RAW_EVENTS, REFUSED_RAW_EVENTS, corpus
from tests.support import create_integration, create_source, stats, wait_for

MAX_BODY = 500 * 1024


def order(event_id: str) -> str:
    return json.dumps({"type": "track", "event": "Order Completed", "messageId": event_id,
                       "properties": {"order_id": event_id, "total": 129.99, "currency": "USD"},
                       "context": {"traits": {"email": "jane.doe@example.com"}}})


def requests(key: str) -> list[tuple[str, list[str], int]]:
    """(body, the neighbours' ids, how many events it refuses) for the whole corpus, packed
    into bodies under the edge's limit, each worst-case event between two orders."""
    hostile = [json.dumps({**event, "messageId": f"corpus-{uuid.uuid4()}"}) for _, _, event in corpus()]
    hostile += list(RAW_EVENTS.values())
    out, events, neighbours, size = [], [], [], 0
    for event in hostile + [raw for raw, _ in REFUSED_RAW_EVENTS.values()]:
        ids = [f"order-{uuid.uuid4()}" for _ in range(2)]
        group = [order(ids[0]), event, order(ids[1])]
        grown = sum(len(e) + 1 for e in group)
        if events and size + grown > MAX_BODY:
            out.append((events, neighbours))
            events, neighbours, size = [], [], 0
        events += group
        neighbours += ids
        size += grown
    out.append((events, neighbours))
    refused = {raw for raw, _ in REFUSED_RAW_EVENTS.values()}
    return [('{"pipeline_key":"%s","batch":[%s]}' % (key, ",".join(events)), ids,
             sum(1 for e in events if e in refused)) for events, ids in out]


@pytest.mark.timed
@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_the_corpus_cannot_stall_jam_or_lose_anything(edge_factory, fake_pinterest, database, request):
    env = {"SIGNAL_FLUSH_INTERVAL": "0.05", "SIGNAL_RETRY_DELAYS": "0.1,0.1,0.1,0.1,0.1,0.1,0.1"}
    if database == "postgres":
        env["SIGNAL_DATABASE_URL"] = request.getfixturevalue("pg_url")
    edge = edge_factory(env=env)
    with edge.admin() as admin:
        source = create_source(admin, default_country="US")
        integration = create_integration(admin, source["id"], variant="media")["id"]
        neighbours = []
        for body, ids, refused in requests(source["pipeline_key"]):
            answer = httpx.post(edge.url + "/v1/batch", content=body, timeout=60,
                                headers={"Content-Type": "text/plain", "User-Agent": "Mozilla/5.0 Test"})
            assert answer.status_code == 200, answer.text[:500]
            rejected = answer.json().get("rejected", [])
            for r in rejected:
                assert re.match(rf"batch\[{r['index']}\]\.\w", r["message"]), r  # names the event and its field
            assert len([r for r in rejected if r["code"] == "unstorable_text"]) == refused
            neighbours += ids

        def settled():
            counts = stats(admin, integration)
            return counts["queued"] == 0 and counts["in_flight"] == 0 and \
                counts["accepted"] == counts["delivered"] + counts["dead_lettered"] + counts["filtered"] and counts
        counts = wait_for(settled, timeout=120, interval=0.2, what="every accepted event to be settled")
        received = {e["event_id"] for e in fake_pinterest.sandbox.events()}
        assert set(neighbours) <= received, "an order next to a worst-case event was not delivered"
        metrics = httpx.get(edge.admin_url + "/metrics").text
    lag = float(re.search(r"^signal_edge_event_loop_lag_max_seconds (\S+)$", metrics, re.M).group(1))
    assert lag < 0.1, f"the event loop was held for {lag:.3f} s"
    log = edge.output()
    assert "Traceback" not in log, log[-3000:]
    assert "jane.doe@example.com" not in log
