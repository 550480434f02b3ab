"""The fake Pinterest enforces Pinterest's schema, auth and error shapes (it is the only stand-in)."""

from __future__ import annotations

import time

import httpx
import jsonschema
import pytest

from delivery.pinterest.sandbox import Fault
from delivery.pinterest.schema_check import SCHEMA
from tests.support import ACCESS_TOKEN, AD_ACCOUNT, FakePinterest

ERROR = SCHEMA["$defs"]["Error"]
RESPONSE = {**SCHEMA["$defs"]["ConversionApiResponse"], "$defs": SCHEMA["$defs"]}


def event(**overrides):
    base = {"event_name": "checkout", "action_source": "web", "event_time": int(time.time()), "event_id": "e1",
            "user_data": {"client_ip_address": "203.0.113.5", "client_user_agent": "Mozilla/5.0"},
            "custom_data": {"value": "1.00", "currency": "USD"}}
    return {**base, **overrides}


@pytest.fixture
def fake():
    server = FakePinterest().start()
    yield server
    server.stop()


def post(fake, body, token=ACCESS_TOKEN, account=AD_ACCOUNT, query=""):
    return httpx.post(f"{fake.url}/v5/ad_accounts/{account}/events{query}", json=body,
                      headers={"Authorization": f"Bearer {token}"} if token else {})


def test_valid_events_get_per_event_results(fake):
    response = post(fake, {"data": [event(), event(event_id="e2", event_name="page_visit")]})
    assert response.status_code == 200
    jsonschema.validate(response.json(), RESPONSE)
    assert response.json()["num_events_processed"] == 2
    assert [e["event_id"] for e in fake.sandbox.events()] == ["e1", "e2"]


@pytest.mark.parametrize("token,status,code", [(None, 401, 2), ("pina_unknown", 401, 2)])
def test_unknown_or_missing_token_is_401(fake, token, status, code):
    response = post(fake, {"data": [event()]}, token=token)
    assert response.status_code == status and response.json()["code"] == code
    jsonschema.validate(response.json(), ERROR)


def test_missing_scope_or_foreign_ad_account_is_403(fake):
    fake.sandbox.add_token("pina_readonly", scopes=("ads:read",))
    fake.sandbox.add_token("pina_other", ad_accounts=("111",))
    for token in ("pina_readonly", "pina_other"):
        response = post(fake, {"data": [event()]}, token=token)
        assert response.status_code == 403 and response.json()["code"] == 29


def test_schema_violations_are_400_naming_the_path(fake):
    cases = [
        ({"data": [event(event_time="1706540000")]}, "data[0].event_time"),
        ({"data": [event(custom_data={"value": 129.99})]}, "data[0].custom_data.value"),
        ({"data": [event(user_data={"em": "not-a-list"})]}, "data[0].user_data"),
        ({"data": [event(partner_id="x")]}, "data[0]"),
        ({"data": [event(event_name="purchase")]}, "data[0].event_name"),
        ({"data": [event(user_data={"client_ip_address": "1.2.3.4"})]}, "data[0].user_data"),
        ({"data": []}, "data"),
        ({"events": [event()]}, "body"),
    ]
    for body, path in cases:
        response = post(fake, body)
        assert response.status_code == 400, (body, response.text)
        assert path in response.json()["message"], (path, response.json())
    assert fake.sandbox.events() == []


def test_old_events_fail_individually_with_422(fake):
    old = event(event_id="old", event_time=int(time.time()) - 8 * 24 * 3600)
    response = post(fake, {"data": [event(), old]})
    assert response.status_code == 422
    body = response.json()
    jsonschema.validate(body, SCHEMA["$defs"]["DetailedError"])
    assert [e["status"] for e in body["details"]["events"]] == ["processed", "failed"]
    assert "7 days" in body["details"]["events"][1]["error_message"]


def test_scripted_faults_and_test_mode(fake):
    fake.sandbox.add_fault(Fault(503, count=1, retry_after=2))
    first = post(fake, {"data": [event()]})
    assert first.status_code == 503 and first.headers["retry-after"] == "2"
    assert post(fake, {"data": [event()]}, query="?test=true").status_code == 200
    assert [r.test for r in fake.sandbox.recorded()] == [True]
    assert [r.status for r in fake.sandbox.request_log()] == [503, 200]


def test_rate_limit_answers_429_with_retry_after(fake):
    httpx.post(fake.url + "/_sandbox/faults", json={"rate_limit_per_second": 2})
    statuses = [post(fake, {"data": [event()]}).status_code for _ in range(4)]
    assert statuses[:2] == [200, 200] and 429 in statuses[2:]


# --- the fast validator gives the same verdict as jsonschema -------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from delivery.pinterest.schema_check import (  # noqa: E402
    fast_validator,
    schema_validator,
    validation_errors,
)

JSONSCHEMA, FAST = schema_validator(), fast_validator()
values = st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.lists(st.text(max_size=3), max_size=2)
user_keys = st.sampled_from(["em", "ph", "hashed_maids", "client_ip_address", "client_user_agent", "click_id",
                             "external_id", "partner_id", "fn", "zzz"])
custom_keys = st.sampled_from(["value", "currency", "num_items", "content_ids", "contents", "order_id", "zzz"])
event_keys = st.sampled_from(["event_name", "action_source", "event_time", "event_id", "event_source_url",
                              "opt_out", "language", "partner_name", "app_id", "zzz"])


@st.composite
def payloads(draw):
    base = event()
    for key in draw(st.lists(event_keys, max_size=3)):
        if draw(st.booleans()):
            base.pop(key, None)
        else:
            base[key] = draw(values)
    user = {k: draw(values | st.just(["ab"])) for k in draw(st.lists(user_keys, max_size=4))}
    base["user_data"] = draw(st.sampled_from([user, {**base["user_data"], **user}, "x"]))
    custom = {k: draw(values) for k in draw(st.lists(custom_keys, max_size=3))}
    base["custom_data"] = draw(st.sampled_from([custom, {"value": "1"}, None]))
    return {"data": [base] * draw(st.integers(0, 2))}


@settings(max_examples=1500, deadline=None)
@given(body=payloads())
def test_fast_and_reference_validators_agree(body):
    reference = not list(JSONSCHEMA.iter_errors(body))
    assert (validation_errors(JSONSCHEMA, body, FAST) == []) == (reference and validation_errors(JSONSCHEMA, body) == [])


@pytest.mark.process
def test_the_sandbox_is_for_the_demo_and_the_tests_only():
    """`serve` never loads the fake Pinterest: only `signal-edge demo` and the tests do."""
    import subprocess
    import sys

    probe = ("import sys, collector.cli, collector.runtime, collector.services, collector.admin.app, collector.edge.app; "
             "print(sorted(m for m in sys.modules if 'sandbox' in m))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]", loaded
