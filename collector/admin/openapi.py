"""The admin API's OpenAPI 3.1 document, generated from the route table and the same
msgspec Structs the handlers decode and encode."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from collector.admin.api import ROUTES
from collector.admin.schemas import ErrorResponse

PREFIX = "/v1/admin"
_ERRORS = {
    "400": "Invalid body or parameters; the message names the field",
    "401": "Missing, wrong or expired admin token",
    "404": "No such object",
    "409": "Conflict",
    "415": "The body must be JSON",
    "429": "Too many wrong admin tokens from this address: wait for Retry-After",
    "502": "Pinterest refused or did not answer (the message says which)",
    "503": "The database cannot store anything now (see /healthz): retry after Retry-After",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def build(routes=ROUTES) -> dict[str, Any]:
    types = [ErrorResponse] + [t for r in routes for t in (r.body, r.response) if t is not None]
    schemas, components = msgspec.json.schema_components(
        list(dict.fromkeys(types)), ref_template="#/components/schemas/{name}"
    )
    refs = dict(zip(dict.fromkeys(types), schemas, strict=True))
    paths: dict[str, Any] = {}
    for route in routes:
        params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                  for p in re.findall(r"{(\w+)}", route.path)]
        params += [{"name": q, "in": "query", "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 100} if q == "limit" else {"type": "string"}}
                   for q in route.query]
        ok: dict[str, Any] = {"description": "OK"}
        if route.response is not None:
            ok["content"] = {"application/json": {"schema": refs[route.response]}}
        elif route.media:
            ok["content"] = {route.media: {"schema": {"type": "string"}}}
        responses = {str(route.status): ok}
        error = {"application/json": {"schema": _ref("ErrorResponse")}}
        responses.update({code: {"description": text, "content": error} for code, text in _ERRORS.items()})
        operation: dict[str, Any] = {
            "operationId": route.handler,
            "summary": route.summary,
            "parameters": params,
            "responses": responses,
            "security": [{"bearer": []}],
        }
        if route.body is not None:
            operation["requestBody"] = {
                "required": route.handler != "replay",
                "content": {"application/json": {"schema": refs[route.body]}},
            }
        paths.setdefault(PREFIX + route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "signal-edge management API", "version": "1"},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
