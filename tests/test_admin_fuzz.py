"""Schemathesis against the admin API's own OpenAPI document, with and without the admin token:
no 5xx anywhere, and every answer matches what the document promises (issue 6)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from collector.admin.openapi import build
from tests.support import ADMIN_TOKEN, shop_running

# The live stream never ends by design; it has its own test.
schema = schemathesis.openapi.from_dict(build()).exclude(path="/v1/admin/debugger/stream")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def admin_url(tmp_path_factory):
    with shop_running(tmp_path_factory.mktemp("fuzz"), id="src_fuzz01") as (edge, _):
        yield edge.admin_url


FUZZ = settings(max_examples=30, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.filter_too_much])


@pytest.mark.process
@schema.parametrize()
@FUZZ
def test_with_the_admin_token(case, admin_url):
    response = case.call(base_url=admin_url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    case.validate_response(response, checks=CHECKS)


@pytest.mark.process
@schema.parametrize()
@FUZZ
def test_without_it_everything_is_401(case, admin_url):
    """401, or 429 once this address has sent too many wrong tokens (the fuzzer sends hundreds)."""
    response = case.call(base_url=admin_url)
    case.validate_response(response, checks=CHECKS)
    documented = case.method.upper() == case.operation.method.upper()
    if documented and response.status_code == 429:
        assert response.json()["error"]["code"] == "too_many_failures" and response.headers["retry-after"]
    else:
        assert response.status_code == (401 if documented else 405), (case.as_curl_command(), response.text[:300])
