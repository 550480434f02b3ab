"""Admin API errors: `{"error": {"code", "message", "field"}}` with stable codes."""

from __future__ import annotations

import re

import msgspec
from starlette.responses import Response

from collector.admin.schemas import ErrorDetail, ErrorResponse

_encoder = msgspec.json.Encoder()
_FIELD_IN_MESSAGE = re.compile(r"(?:unknown|missing required) field `([^`]+)`")

# Plain-words hints for the fields people most often get wrong.
HINTS = {
    "config.ad_account_id": "use the numeric Ad Account ID from Ads Manager (e.g. 549764982399), digits only",
    "config.access_token": "paste the Pinterest API access token (it usually starts with pina_)",
    "config.conversion_token": "paste the Conversion Access Token from Ads Manager (it usually starts with ct_)",
    "vendor": "the only vendor is \"pinterest\"",
    "variant": "one of default, retail, travel, media",
}


def _bad_key(body: bytes, path: str, message: str) -> str:
    """The key (".key") under `path` whose value msgspec rejected, found in the raw body."""
    try:
        node = msgspec.json.decode(body)
        for part in path.split("."):
            node = node[part]
        value = re.search(r"'(.*)'", message)
        keys = [k for k, v in node.items() if value and str(v) == value.group(1)] if isinstance(node, dict) else []
    except (msgspec.DecodeError, KeyError, TypeError):
        keys = []
    return f".{keys[0]}" if len(keys) == 1 else "[...]"


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers or {}


def error_response(exc: ApiError) -> Response:
    body = _encoder.encode(ErrorResponse(ErrorDetail(exc.code, exc.message, exc.field)))
    return Response(body, exc.status, exc.headers, media_type="application/json")


def from_validation(exc: msgspec.ValidationError, body: bytes = b"") -> ApiError:
    """msgspec's message as an error that names the field (`config.ad_account_id`)."""
    text = str(exc)
    message, _, where = text.partition(" - at `")
    path = where.rstrip("`").removeprefix("$").lstrip(".") if where else ""
    if path.endswith("[...]"):  # a mapping's value: msgspec does not say which key
        path = path[:-5] + _bad_key(body, path[:-5], message)
    named = _FIELD_IN_MESSAGE.search(message)
    if named:
        path = f"{path}.{named.group(1)}" if path else named.group(1)
    field = path or None
    if "unknown field" in message:
        return ApiError(400, "unknown_field", f"{field}: unknown field; remove it", field)
    if "missing required field" in message:
        return ApiError(400, "missing_field", f"{field}: required", field)
    hint = HINTS.get(re.sub(r"\[\d+\]", "", path))
    detail = message[:1].lower() + message[1:]
    if "matching regex" in detail:
        detail = "has the wrong format" if hint else detail.replace("\\\\", "\\")
    return ApiError(400, "invalid_field", f"{field or 'body'}: {detail}" + (f": {hint}" if hint else ""), field)
