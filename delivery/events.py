"""The event as it sits in the queue: what the edge saw, with PII already hashed.

This is the hand-off between the web layer and delivery. It holds no raw PII: emails,
phones, names, addresses and birthdays arrive here only as SHA-256 hex digests in
`identity`; the edge strips them out of `properties` before building it.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Identity(msgspec.Struct, omit_defaults=True, gc=False):
    """Hashed identity signals, Pinterest's field names (lowercase hex SHA-256)."""

    em: list[str] = []
    ph: list[str] = []
    fn: list[str] = []
    ln: list[str] = []
    ge: list[str] = []
    db: list[str] = []
    ct: list[str] = []
    st: list[str] = []
    zp: list[str] = []
    country: list[str] = []
    hashed_maids: list[str] = []


IDENTITY_FIELDS: tuple[str, ...] = Identity.__struct_fields__
MAX_VALUES_PER_FIELD = 5


def merge_identity(newer: Identity, older: Identity) -> Identity:
    """Union per field, newest values first, a few values per field at most."""
    merged = {}
    for field in IDENTITY_FIELDS:
        values = list(dict.fromkeys(getattr(newer, field) + getattr(older, field)))
        if values:
            merged[field] = values[:MAX_VALUES_PER_FIELD]
    return Identity(**merged)


class AppDevice(msgspec.Struct, omit_defaults=True, gc=False):
    """The app and device of an event sent from a mobile app (Segment's context.app, .os,
    .device, .network), as Pinterest's app fields want them."""

    name: str | None = None
    version: str | None = None
    namespace: str | None = None  # the bundle id / package name (com.example.shop)
    os_name: str | None = None
    os_version: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    device_type: str | None = None
    carrier: str | None = None
    wifi: bool | None = None


class EdgeEvent(msgspec.Struct, gc=False, array_like=True):
    """Queued as a JSON array in field order: without the keys a queued event is a quarter
    smaller, and the bytes SQLite writes and checkpoints are most of the queue's cost. Add
    fields only at the end and with a default, so that events queued before still decode
    (a shorter array leaves the trailing fields at their defaults). `event_view` names them
    for people."""

    message_id: str
    type: str  # page | track | identify | group
    source_id: str
    received_at: float  # Unix seconds, server clock
    event_time: float  # Unix seconds, the browser's timestamp corrected for clock skew
    name: str | None = None  # the track event, or the page name
    properties: dict[str, Any] = {}
    user_id: str | None = None  # hashed when it looked like an email or phone
    anonymous_id: str | None = None  # the _dfid cookie
    group_id: str | None = None
    page_url: str | None = None
    referrer: str | None = None
    title: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    click_id: str | None = None  # Pinterest's epik
    pin_unauth: str | None = None
    locale: str | None = None
    consent: list[str] | None = None  # granted categories; None when the event carried none
    identity: Identity = msgspec.field(default_factory=Identity)
    notes: list[str] = []  # what ingestion left out, and why (never raw values)
    ldp: bool = False  # limited data processing (a US state privacy law): custom_data.opt_out_type
    opt_out: bool = False  # the person opted out of ads personalization: the event's opt_out
    action_source: str | None = None  # app_android | app_ios | offline; None: web
    app: AppDevice | None = None  # an app event's app and device
    gpc: bool = False  # the browser sent Sec-GPC: 1 (Global Privacy Control); the source says what it means


def event_view(ev: EdgeEvent) -> dict[str, Any]:
    """The event as a JSON object of its set fields (debugger, dead letters)."""
    return {name: value for name, value in zip(EdgeEvent.__struct_fields__, msgspec.to_builtins(ev), strict=True)
            if value is not None and value != [] and value != {}}


event_encoder = msgspec.json.Encoder()
event_decoder = msgspec.json.Decoder(EdgeEvent)


def queued_event_id(payload: bytes) -> str | None:
    """The message id of a queued event: the first element of its JSON array (None when the
    payload is not an event of ours)."""
    try:
        value = msgspec.json.decode(payload)
    except (msgspec.DecodeError, RecursionError):
        return None
    first = value[0] if isinstance(value, list) and value else None
    return first if isinstance(first, str) else None
