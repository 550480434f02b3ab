"""The adversarial corpus (issue 24): the worst values a stranger can put in each field kind.

Shared by tests/test_adversarial.py, which sends every one through the whole pipeline on both
backends, and bench/hostile.py, which prints what each kind's worst value costs against a
normal event. Each value is as large as an event allows (32 KB), in the shapes that make
matching backtrack (long runs of whitespace, "@", "+", "<", dots and digits), nested
encodings, NUL and lone surrogates, and values exactly at and just over their kind's bound.
"""

from __future__ import annotations

from delivery.pii import MAX_LENGTH

RUN = 15_000  # characters in a run: two of them fit an event's 32 KB


def shapes(bound: int) -> dict[str, str]:
    """Pathological text values, by name; `bound` is the field's own length limit."""
    return {
        "spaces then a letter": "+1" + " " * RUN + "a",
        "at-runs": "a" * RUN + "@" + "a" * RUN,
        "at-repeats": "a@" * RUN,
        "plus-runs": "+" * (2 * RUN),
        "plus-digits": "+1" + "1" * (2 * RUN),
        "angles": "<" * RUN + "a@b.co" + ">" * RUN,
        "angle-at": "<a@" * (RUN // 2),
        "dots": "a@" + "." * (2 * RUN) + "a",
        "dotted-domain": "a@b" + ".c" * RUN,
        "digits": "9" * (2 * RUN),
        "tabs and newlines": "\t\n " * (RUN // 3) + "x",
        "nested percent": "jane" + "%25" * 300 + "40example.com",
        "percent-run": "%" * (2 * RUN),
        "escaped letters": "%41" * (RUN // 3) + "%40" + "%41" * (RUN // 3) + "%2Ecom",
        "escaped at-repeats": "%2540" * (RUN // 5),
        "at the bound": "a" * bound,
        "over the bound": "b" * (bound + 1),
        "named address": "Jane " + "<" * 100 + "jane@example.com" + ">" * 100,
        "extension words": "+1 415 555 2671" + " ext" * 5000 + " 12",
    }


# Where each field kind sits in an event: a function from a value to the event that carries it.
def _trait(name: str):
    return lambda v: {"type": "identify", "userId": "u-corpus", "traits": {name: v}}


def _address(name: str):
    return lambda v: {"type": "identify", "userId": "u-corpus", "traits": {"address": {name: v}}}


def _page(name: str):
    return lambda v: {"type": "page", "context": {"page": {name: v[:8192]}}}


KINDS = {
    "email": (_trait("email"), MAX_LENGTH["em"]),
    "phone": (_trait("phone"), MAX_LENGTH["ph"]),
    "first name": (_trait("firstName"), MAX_LENGTH["fn"]),
    "full name": (_trait("name"), MAX_LENGTH["name"]),
    "gender": (_trait("gender"), MAX_LENGTH["ge"]),
    "birthday": (_trait("birthday"), MAX_LENGTH["db"]),
    "city": (_address("city"), MAX_LENGTH["ct"]),
    "state": (_address("state"), MAX_LENGTH["st"]),
    "postal code": (_address("postalCode"), MAX_LENGTH["zp"]),
    "country": (_address("country"), MAX_LENGTH["country"]),
    "advertising id": (lambda v: {"type": "track", "event": "Product Added",
                                  "context": {"device": {"advertisingId": v[:256]}}}, MAX_LENGTH["hashed_maids"]),
    "value under any key": (lambda v: {"type": "track", "event": "Product Added", "properties": {"note": v}}, 32_000),
    "value in a list": (lambda v: {"type": "track", "event": "Product Added", "properties": {"notes": [v]}}, 32_000),
    "property key": (lambda v: {"type": "track", "event": "Product Added", "properties": {v: 1}}, MAX_LENGTH["key"]),
    "page url": (_page("url"), 8192),
    "referrer": (_page("referrer"), 8192),
    "title": (_page("title"), 8192),
    "product name": (lambda v: {"type": "track", "event": "Order Completed",
                                "properties": {"products": [{"product_id": "p1", "name": v, "price": 1}]}}, 32_000),
}


def corpus() -> list[tuple[str, str, dict]]:
    """(kind, shape, event) for every kind and shape."""
    found = []
    for kind, (place, bound) in KINDS.items():
        for shape, value in shapes(bound).items():
            found.append((kind, shape, place(value)))
    return found


# Raw JSON fragments that json.dumps cannot write: a lone surrogate, NUL in an identifier and
# elsewhere, an address written with JSON escapes. Each is an event's JSON text.
RAW_EVENTS = {
    "lone surrogate in a title": '{"type":"page","context":{"page":{"title":"Sale \\ud83d ends"}}}',
    "lone low surrogate in a value": '{"type":"track","event":"Product Added","properties":{"n":"x\\ude00y"}}',
    "NUL in a value": '{"type":"track","event":"Product Added","properties":{"n":"a\\u0000b"}}',
    "NUL in a key": '{"type":"track","event":"Product Added","properties":{"a\\u0000b":1}}',
    "escaped address": '{"type":"track","event":"Product Added","properties":{"n":"jane\\u0040example.com"}}',
    "escaped plus number": '{"type":"track","event":"Product Added","properties":{"n":"\\u002b1 415 555 2671"}}',
}
# Refused with a 400 that names the field: NUL cannot be kept in what names something.
REFUSED_RAW_EVENTS = {
    "NUL in userId": ('{"type":"track","event":"Product Added","userId":"u\\u0000"}', "userId"),
    "NUL in messageId": ('{"type":"track","event":"Product Added","messageId":"m\\u0000"}', "messageId"),
    "NUL in the event name": ('{"type":"track","event":"Product\\u0000Added"}', "event"),
    "NUL in properties.event_id": ('{"type":"track","event":"Product Added","properties":{"event_id":"e\\u0000"}}',
                                   "properties.event_id"),
}


def normal_event() -> dict:
    """What the tag sends for an add to cart: the yardstick the corpus is measured against."""
    return {"type": "track", "event": "Product Added",
            "properties": {"product_id": "SKU-1", "name": "Blue shoes", "price": 29.99, "quantity": 1,
                           "currency": "USD"},
            "context": {"page": {"url": "https://shop.example/products/sku-1?utm_source=pinterest",
                                 "referrer": "https://www.pinterest.com/", "title": "Blue shoes"},
                        "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120 Safari/537.36", "locale": "en-US"}}
