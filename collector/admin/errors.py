"""Admin API errors: `{"error": {"code", "message", "field"}}` with stable codes."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import msgspec.inspect
from starlette.responses import Response

from collector.admin.schemas import ErrorDetail, ErrorResponse

_encoder = msgspec.json.Encoder()
_FIELD_IN_MESSAGE = re.compile(r"(?:unknown|missing required) field `([^`]+)`")

# Plain-words hints for the fields people most often get wrong.
HINTS = {
    "config.ad_account_id": ("the numeric Ad Account ID from Ads Manager, digits only, such as 549764982399, "
                             "or the Ads Manager URL that holds it"),
    "config.access_token": "the Pinterest API access token (it usually starts with pina_)",
    "config.conversion_token": "the Conversion Access Token from Ads Manager (it usually starts with ct_)",
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


_WORDS = {"str": "text", "int": "a whole number", "float": "a number", "bool": "true or false", "array": "a list",
          "object": "an object ({...})", "null": "null"}
_BOUNDS = {">=": "at least", ">": "more than", "<=": "at most", "<": "less than"}


def _plain(message: str, described: str | None, choices: tuple | None, empty: bool) -> str:
    """msgspec's message in plain words ("Expected `str` of length >= 1" -> "is empty")."""
    if empty or message.startswith("Expected `str` of length >= 1"):
        return f"is empty: fill in {described}" if described else "is empty: fill it in"
    if m := re.match(r"Expected `str` of length ([<>]=) (\d+)", message):
        return f"is too {'long' if m[1] == '<=' else 'short'}: {_BOUNDS[m[1]]} {m[2]} characters"
    if m := re.match(r"Expected `(?:array|object)` of length ([<>]=) (\d+)", message):
        return f"has too {'many' if m[1] == '<=' else 'few'} entries: {_BOUNDS[m[1]]} {m[2]}"
    if message.startswith("Expected `str` matching regex"):
        return "has the wrong format" + (f": {described}" if described else "")
    if m := re.match(r"Expected `(\w+)`, got `(\w+)`", message):
        return f"must be {_WORDS.get(m[1], m[1])}, not {_WORDS.get(m[2], m[2])}"
    if m := re.match(r"Expected `(?:int|float)` (>=|>|<=|<) (\S+)", message):
        bound = m[2][:-2] if m[2].endswith(".0") else m[2]
        return f"must be {_BOUNDS[m[1]]} {bound}"
    if (m := re.match(r"Invalid enum value (.*)", message)) and choices:
        return f"{m[1][:100]} is not allowed: use one of {', '.join(map(str, choices))}"
    return message[:1].lower() + message[1:]


def _unwrap(info: Any) -> tuple[Any, str | None]:
    """An optional or annotated type's inner type, and its description."""
    described = None
    while isinstance(info, (msgspec.inspect.UnionType, msgspec.inspect.Metadata)):
        if isinstance(info, msgspec.inspect.Metadata):
            described = described or (info.extra_json_schema or {}).get("description")
            info = info.type
        else:
            info = next((x for x in info.types if not isinstance(x, msgspec.inspect.NoneType)), None)
    return info, described


def _describe(type_: Any, path: str) -> tuple[str | None, tuple | None]:
    """The description and the allowed values of the field at `path` ("config.event_map.x",
    "consent.default_categories[0]") of `type_`, from its msgspec type."""
    info, described = _unwrap(msgspec.inspect.type_info(type_) if type_ is not None else None)
    for part in re.findall(r"[^.\[\]]+|\[[^\]]*\]", path):
        if isinstance(info, msgspec.inspect.StructType):
            info = next((f.type for f in info.fields if f.name == part), None)
        elif isinstance(info, msgspec.inspect.ListType):
            info = info.item_type
        elif isinstance(info, msgspec.inspect.DictType):
            info = info.value_type
        else:
            return None, None
        info, described = _unwrap(info)
    return described, info.values if isinstance(info, msgspec.inspect.LiteralType) else None


def _value_at(body: bytes, path: str) -> Any:
    try:
        node = msgspec.json.decode(body)
        for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
            node = node[int(part[1:-1])] if part.startswith("[") else node[part]
        return node
    except (msgspec.DecodeError, KeyError, IndexError, TypeError, ValueError):
        return None


def from_validation(exc: msgspec.ValidationError, body: bytes = b"", type_: Any = None) -> ApiError:
    """msgspec's message as plain words that name the field (`config.ad_account_id: is empty`)."""
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
    described, choices = _describe(type_, path) if path else (None, None)
    described = HINTS.get(re.sub(r"\[\d+\]", "", path)) or described
    if "missing required field" in message:
        return ApiError(400, "missing_field", f"{field}: is required" + (f": fill in {described}" if described else ""),
                        field)
    detail = _plain(message, described, choices, _value_at(body, path) == "" if path else False)
    return ApiError(400, "invalid_field", f"{field or 'body'}: {detail}", field)
