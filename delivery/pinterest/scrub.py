"""The one scrubbing pass: everything personal in an incoming event hashed or removed, in one place.

The edge calls `scrub_event` once per event, before anything is queued, logged or shown. It owns
every rule: identity values under known keys hashed into Pinterest's fields (identity.py),
addresses and numbers under other keys replaced by their digest, URLs without personal or
secret parts (delivery/urls.py), page titles without addresses and numbers, a userId that is an
address or a number hashed. And the bounds on all of it: lengths by field kind, a few values
per field, linear-time matching (delivery/pii.py), at most MAX_DEPTH levels of nesting.

Most events carry nothing personal: their properties are known plain keys with flat values
(`plain`, two set operations in C), and the pass returns them untouched.
"""

from __future__ import annotations

from typing import Any

import msgspec

from delivery.pii import redact_text
from delivery.pinterest.identity import IdentityBuilder, TooDeep, hashed_user_id, plain, scrub
from delivery.urls import scrub_url


class Scrubbed(msgspec.Struct, gc=False):
    """An event's personal parts after the pass. `builder` holds the person's hashed identity,
    the notes on what was left out and the normalised state; None when nothing identified
    anyone (most events)."""

    properties: dict[str, Any]
    builder: IdentityBuilder | None
    user_id: str | None
    page_url: str | None
    referrer: str | None
    title: str | None


def scrub_event(etype: str, properties: dict[str, Any] | None, traits: dict[str, Any] | None,
                context_traits: dict[str, Any] | None, advertising_id: str | None, user_id: str | None,
                page_url: str | None, referrer: str | None, title: str | None, default_country: str | None,
                url_params: list[str], suspect: bool) -> Scrubbed:
    """`suspect`: the request's body holds something that may be an address or a number ("@",
    "+", their percent- or JSON-escapes): only then are values under other keys and titles read.
    Raises TooDeep (with its field) past MAX_DEPTH levels."""
    properties = properties or {}
    builder = None
    if etype == "identify" or context_traits or advertising_id or not plain(properties, False, suspect):
        builder = IdentityBuilder(default_country, suspect=suspect, url_params=url_params)
        properties = _walk(properties, builder, False, "properties")
        if etype == "identify":
            properties = _walk(traits or {}, builder, True, "traits")
        if context_traits:
            _walk(context_traits, builder, True, "context.traits")
        if advertising_id:
            builder.add("hashed_maids", advertising_id)
    if etype == "group" and traits:
        # A group's traits describe the group (a company), not the person: hash any PII
        # they carry, but do not attach it to this browser's identity.
        group = IdentityBuilder(default_country, suspect=suspect, url_params=url_params)
        properties = {**properties, "traits": _walk(traits, group, False, "traits")}
    if title and suspect:
        title = redact_text(title)
    return Scrubbed(properties, builder, hashed_user_id(user_id, default_country) if user_id else user_id,
                    scrub_url(page_url, url_params), scrub_url(referrer, url_params), title)


def _walk(obj: dict[str, Any], builder: IdentityBuilder, traits: bool, root: str) -> dict[str, Any]:
    try:
        return scrub(obj, builder, traits)
    except TooDeep as exc:
        exc.root = root
        raise
