"""Property tests: arbitrary JSON-ish events through ingestion and mapping never raise; each
either becomes a schema-valid Pinterest event or carries a recorded reason."""

from __future__ import annotations

import json

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.edge.ingest import EventError, RequestContext, build_event, validation_message
from collector.edge.wire import event_decoder
from delivery.config import Source
from delivery.pinterest.mapping import Options, map_event
from delivery.pinterest.schema_check import schema_validator, validation_errors
from delivery.pinterest.variants import VARIANTS
from tests.support import shop_running

VALIDATOR = schema_validator()
scalars = st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=True) | st.text(max_size=40)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=20)
money = st.integers(-10**6, 10**9) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12) | st.none()
product = st.fixed_dictionaries({}, optional={
    "product_id": json_values, "sku": json_values, "id": json_values, "name": json_values,
    "price": money, "quantity": money, "brand": json_values, "category": json_values})
properties = st.fixed_dictionaries({}, optional={
    "value": money, "total": money, "revenue": money, "currency": json_values, "order_id": json_values,
    "products": st.lists(product, max_size=4) | json_values, "query": json_values, "email": json_values,
    "phone": json_values, "product_id": json_values, "price": money, "quantity": money, "event_id": json_values,
    "title": json_values, "destination": json_values, "category": json_values,
}) | json_values
traits = st.fixed_dictionaries({}, optional={
    "email": json_values, "phone": json_values, "firstName": json_values, "last_name": json_values,
    "name": json_values, "gender": json_values, "birthday": json_values,
    "address": st.fixed_dictionaries({}, optional={"city": json_values, "state": json_values,
                                                   "postalCode": json_values, "country": json_values}) | json_values,
}) | json_values
timestamps = st.datetimes().map(lambda d: d.isoformat() + "Z") | st.text(max_size=30) | json_values
events = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["page", "track", "identify", "group"]) | json_values,
    "event": st.sampled_from(["Order Completed", "Product Added", "Products Searched", "Anything"]) | json_values,
    "name": json_values, "properties": properties, "traits": traits,
    "userId": st.text(max_size=30) | json_values, "groupId": json_values, "messageId": st.text(max_size=30) | json_values,
    "timestamp": timestamps, "sentAt": timestamps,
    "context": st.fixed_dictionaries({}, optional={
        "page": st.fixed_dictionaries({}, optional={"url": st.text(max_size=60) | json_values,
                                                    "search": st.text(max_size=30) | json_values}) | json_values,
        "locale": json_values, "device": json_values, "consent": json_values, "traits": traits,
    }) | json_values,
})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=events, default_country=st.sampled_from([None, "US", "GB"]), variant=st.sampled_from(list(VARIANTS)),
       ip=st.sampled_from([None, "203.0.113.7"]))
def test_any_event_maps_to_a_valid_payload_or_a_reason(event, default_country, variant, ip):
    source = Source(id="src_p", name="p", pipeline_key="dk", created_at=0, updated_at=0, default_country=default_country)
    ctx = RequestContext(source, ip, "Mozilla/5.0" if ip else None, "anon", "pin", None, None, 1706540000.0, 0.0)
    try:
        incoming = event_decoder.decode(json.dumps(event))
        event, _ = build_event(incoming, None, ctx, None)
    except msgspec.ValidationError as exc:
        assert str(validation_message(exc, "body"))  # a readable, field-naming reason
        return
    except msgspec.DecodeError:  # NaN/Infinity are not JSON: the edge answers 400 "not valid JSON"
        return
    except EventError as exc:
        assert exc.field and str(exc)
        return
    mapped = map_event(event, Options(variant=variant))
    if mapped.event is None:
        assert mapped.reason
        return
    assert validation_errors(VALIDATOR, {"data": [msgspec.to_builtins(mapped.event)]}) == []
    assert all(isinstance(n, str) for n in event.notes + mapped.warnings)


@pytest.fixture(scope="module")
def live_edge(tmp_path_factory):
    with shop_running(tmp_path_factory.mktemp("edge"), default_country="US") as running:
        yield running


@pytest.mark.process
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(events, min_size=1, max_size=5))
def test_the_edge_answers_any_batch_without_a_server_error(live_edge, batch):
    edge, source = live_edge
    body = json.dumps({"pipeline_key": source["pipeline_key"], "batch": batch})  # NaN/Infinity stay in
    response = httpx.post(edge.url + "/v1/batch", content=body, headers={"User-Agent": "Mozilla/5.0"})
    assert response.status_code in (200, 400), response.text
    body = response.json()
    if response.status_code == 200:
        rejected = {r["index"] for r in body.get("rejected", [])}
        assert body["accepted"] + len(rejected) == len(batch)
    elif body["error"]["code"] == "malformed_json":
        assert "NaN" in response.request.content.decode() or "Infinity" in response.request.content.decode()
    else:
        assert body["error"]["message"].startswith("batch[")
        assert len(body["rejected"]) == len(batch)
