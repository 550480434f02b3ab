"""Hostile events through the whole pipeline (issue 16): ingestion -> queue -> mapping -> the
fake Pinterest, over real sockets. Huge exponents and digit strings in every numeric field,
deep nesting, giant strings, odd Unicode, wrong types, mixed into batches with legitimate
orders. Every accepted event ends delivered (perhaps without the bad field) or dead-lettered
with a reason, in bounded time; the legitimate neighbours are always delivered; and the
server's event loop never stalls (its own lag probe, read from /metrics)."""

from __future__ import annotations

import json
import re
import uuid

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import create_integration, create_source, stats, wait_for

NUMERIC_FIELDS = ("value", "total", "revenue", "price", "quantity")
PRODUCT_FIELDS = ("price", "quantity", "product_id", "name", "brand", "category")

huge_text_numbers = st.one_of(
    st.builds(lambda m, e: f"{m}e{e}", st.integers(-9, 9), st.integers(-10**20, 10**20)),
    st.builds(lambda n: "9" * n, st.integers(1, 20_000)),
    st.builds(lambda n: "0." + "0" * n + "1", st.integers(1, 5_000)),
    st.sampled_from(["NaN", "-Infinity", "inf", "1_000", " 1e3 ", "0x10", "--1", "1e", "", "١٢٣"]),
)
json_numbers = st.one_of(
    st.integers(-10**40, 10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**30, 1e308, -1e308, 5e-324]),
)
odd_text = st.one_of(
    st.text(max_size=50),
    st.text(alphabet=st.characters(min_codepoint=0x300, max_codepoint=0x36F), max_size=200),  # combining marks
    st.builds(lambda n: "\U0001F600" * n, st.integers(1, 2000)),
    st.sampled_from(["\u202e", "\x00", "\ufeff", "\ud7ff", "<script>", "'; DROP TABLE queue; --"]),
)
wrong_types = st.one_of(st.none(), st.booleans(), st.lists(st.integers(), max_size=3),
                        st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))
hostile_value = st.one_of(huge_text_numbers, json_numbers, odd_text, wrong_types)


def deep_json(match: re.Match) -> str:
    depth = int(match.group(1))
    return '{"k":' * depth + "1" + "}" * depth


def nested(depth: int) -> object:
    value: object = 1
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


@st.composite
def hostile_event(draw) -> dict:
    """A track event whose fields are the worst a stranger could send."""
    props: dict = {"currency": draw(st.one_of(st.just("USD"), hostile_value))}
    for field in draw(st.lists(st.sampled_from(NUMERIC_FIELDS + ("order_id", "query")), max_size=5, unique=True)):
        props[field] = draw(hostile_value)
    if draw(st.booleans()):
        props["products"] = draw(st.lists(
            st.dictionaries(st.sampled_from(PRODUCT_FIELDS), hostile_value, max_size=6), max_size=20))
    shape = draw(st.sampled_from(["flat", "deep", "very deep", "giant", "pii"]))
    if shape == "deep":
        props["nested"] = nested(draw(st.integers(1, 60)))
    elif shape == "very deep":  # as JSON text: Python's own tools recurse on such a value
        props["nested"] = f"__DEEP_{draw(st.integers(900, 2500))}__"
    elif shape == "giant":
        props["blob"] = "x" * draw(st.integers(1000, 40_000))
    elif shape == "pii":
        props["email"] = draw(hostile_value)
        props["phone"] = draw(hostile_value)
    return {"type": "track", "event": draw(st.sampled_from(["Order Completed", "Product Added", "x" * 200])),
            "messageId": f"hostile-{uuid.uuid4()}", "properties": props}


def order(event_id: str) -> dict:
    return {"type": "track", "event": "Order Completed", "messageId": event_id,
            "properties": {"order_id": event_id, "total": 129.99, "currency": "USD",
                           "products": [{"product_id": "SKU-A", "price": 49.99, "quantity": 2}]},
            "context": {"traits": {"email": "jane.doe@example.com"}}}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from tests.support import FakePinterest, SignalEdge

    fake = FakePinterest().start()
    edge = SignalEdge(tmp_path_factory.mktemp("hostile"), fake.url,
                      env={"SIGNAL_FLUSH_INTERVAL": "0.05", "SIGNAL_RETRY_DELAYS": "0.1,0.1,0.1,0.1,0.1,0.1,0.1"})
    edge.start()
    admin = edge.admin()
    source = create_source(admin)
    integration = create_integration(admin, source["id"], variant="retail")
    yield edge, fake, admin, source["pipeline_key"], integration["id"]
    log = edge.output()
    lag = re.search(r"^signal_edge_event_loop_lag_max_seconds (\S+)$", httpx.get(edge.admin_url + "/metrics").text,
                    re.M)
    edge.stop()
    fake.stop()
    assert "Traceback" not in log, log[-3000:]
    assert float(lag.group(1)) < 0.1, f"the event loop stalled for {lag.group(1)} s"


def dead_letter_reasons(admin, integration_id) -> dict[str, str]:
    found, cursor = {}, None
    while True:
        page = admin.get(f"/integrations/{integration_id}/dead-letters",
                         params={"limit": 100, **({"cursor": cursor} if cursor else {})}).json()
        found.update({d["event_id"]: d["reason"] for d in page["data"]})
        if not page["has_more"]:
            return found
        cursor = page["next_cursor"]


@pytest.mark.timed
@pytest.mark.process
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(hostile=st.lists(hostile_event(), min_size=1, max_size=3))
def test_hostile_events_cannot_stop_or_stall_delivery(pipeline, hostile):
    edge, fake, admin, key, integration_id = pipeline
    before, after = f"legit-{uuid.uuid4()}", f"legit-{uuid.uuid4()}"
    batch = [order(before), *hostile, order(after)]
    body = re.sub(r'"__DEEP_(\d+)__"', deep_json, json.dumps({"pipeline_key": key, "batch": batch}, allow_nan=False))
    if len(body) > 512 * 1024:
        body = json.dumps({"pipeline_key": key, "batch": [order(before), order(after)]})
        hostile = []
    response = httpx.post(edge.url + "/v1/batch", content=body, timeout=30,
                          headers={"Content-Type": "text/plain", "User-Agent": "Mozilla/5.0 Test"})
    assert response.status_code == 200, response.text  # the legitimate orders are always taken
    answer = response.json()
    rejected = {r["index"] for r in answer.get("rejected", [])}
    assert 0 not in rejected and len(batch) - 1 not in rejected
    for r in answer.get("rejected", []):
        assert r["message"].startswith(f"batch[{r['index']}]"), r  # says which event and field
    accepted = [e["messageId"] for i, e in enumerate(batch) if i not in rejected]

    def settled():
        counts = stats(admin, integration_id)
        return counts["queued"] == 0 and counts["in_flight"] == 0 and \
            counts["accepted"] == counts["delivered"] + counts["dead_lettered"] + counts["filtered"]
    wait_for(settled, timeout=20, interval=0.05, what="the batch to settle")
    received = {e["event_id"]: e for e in fake.sandbox.events()}
    assert before in received and after in received, "a legitimate order next to a hostile event was lost"
    lettered = dead_letter_reasons(admin, integration_id) if set(accepted) - set(received) else {}
    for event_id in accepted:
        assert event_id in received or lettered.get(event_id), f"{event_id} was neither delivered nor dead-lettered"
    for event_id in set(accepted) & set(received):
        custom = received[event_id].get("custom_data") or {}
        for number in (custom.get("value"), *(c.get("item_price") for c in custom.get("contents", []))):
            assert number is None or len(number) <= 32  # money stayed in range
