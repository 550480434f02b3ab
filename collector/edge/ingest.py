"""From one incoming event to the EdgeEvent that is queued (PII hashed on the way)."""

from __future__ import annotations

from datetime import datetime, timezone

import msgspec

from collector.edge import identity as edge_identity
from collector.edge.ids import uuid4
from collector.edge.wire import IncomingEvent
from delivery.config import Source
from delivery.events import EdgeEvent, merge_identity
from delivery.pinterest.identity import NO_IDENTITY, IdentityBuilder, TooDeep, hashed_user_id, plain, scrub
from delivery.store import StoredIdentity


class EventError(ValueError):
    def __init__(self, field: str, message: str, code: str = "invalid_event") -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.code = code


class RequestContext(msgspec.Struct, gc=False):
    """What every event of one request shares (a Struct: built in C, unlike a NamedTuple)."""

    source: Source
    ip: str | None
    user_agent: str | None
    anonymous_id: str
    pin_unauth: str
    cookie_epik: str | None
    query_epik: str | None  # only a value safe to echo into Set-Cookie
    received_at: float
    skew: float  # received_at - the batch's sentAt: how far the browser's clock is behind (0 without one)


def validation_message(exc: msgspec.ValidationError, prefix: str) -> EventError:
    """msgspec's "Expected `str`, got `int` - at `$.event`" as "batch[3].event: expected ..."."""
    text = str(exc)
    message, _, where = text.partition(" - at `")
    path = where.rstrip("`").replace("$", prefix, 1) if where else prefix
    return EventError(path, message[:1].lower() + message[1:])


def unix_seconds(moment: datetime) -> float:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def event_time(inc: IncomingEvent, ctx: RequestContext) -> float:
    """The browser's timestamp corrected for its clock skew, never later than its arrival."""
    stamp = inc.timestamp
    if stamp is None:
        return ctx.received_at
    skew = ctx.received_at - unix_seconds(inc.sentAt) if inc.sentAt else ctx.skew
    # unix_seconds() inline for the usual ISO time with an offset: this runs for every event
    moment = (stamp.timestamp() if stamp.tzinfo else unix_seconds(stamp)) + skew
    return moment if moment < ctx.received_at else ctx.received_at


def build_event(inc: IncomingEvent, implied: str | None, ctx: RequestContext,
                stored: StoredIdentity | None) -> tuple[EdgeEvent, StoredIdentity | None]:
    """The event to queue, and the identity memory to save when this event changed it."""
    etype = _event_type(inc, implied)
    properties, builder = _scrubbed(inc, etype, ctx.source.default_country)
    if etype == "group" and inc.traits:
        # A group's traits describe the group (a company), not the person: hash any PII
        # they carry, but do not attach it to this browser's identity.
        properties = {**properties, "traits": _scrub(inc.traits, IdentityBuilder(), False, "traits")}
    context = inc.context
    page = context.page if context is not None else None

    user_id = hashed_user_id(str(inc.userId)) if inc.userId is not None else None
    hashed = builder is not None and bool(builder.values)
    ident, remember = builder.identity() if hashed else NO_IDENTITY, None
    if stored is not None:
        ident = merge_identity(ident, stored.identity) if hashed else stored.identity
        if user_id is None:
            user_id = stored.user_id
    if hashed or (user_id and (stored is None or stored.user_id != user_id)):
        candidate = StoredIdentity(user_id, ident)
        if candidate != stored:
            remember = candidate

    page_url = search = None
    if page is not None:
        page_url, search = page.url, page.search
    if not page_url and etype == "page":
        page_url = _text(properties.get("url"))
    click_id = ctx.query_epik or ctx.cookie_epik  # the query's is checked already (RequestContext)
    if (page_url and "epik=" in page_url) or (search and "epik=" in search):
        found = edge_identity.epik_from_url(page_url) or edge_identity.epik_from_query(search)
        if found:
            click_id = found if edge_identity.cookie_value_ok(found) else ctx.cookie_epik

    # Positional, in EdgeEvent's field order (checked by _FIELD_ORDER below): with its 21 fields
    # as keyword arguments the constructor took 1.6 us per event, positional 0.3 us.
    event = EdgeEvent(
        inc.messageId or _text(properties.get("event_id")) or uuid4(),
        etype,
        ctx.source.id,
        ctx.received_at,
        event_time(inc, ctx),
        inc.event if etype == "track" else inc.name,
        properties,
        user_id,
        ctx.anonymous_id,
        str(inc.groupId) if inc.groupId is not None else None,
        page_url,
        page.referrer if page else None,
        (page.title if page else None) or (_text(properties.get("title")) if etype == "page" else None),
        ctx.ip,
        ctx.user_agent or (context.userAgent if context else None),
        click_id,
        ctx.pin_unauth,
        context.locale if context else None,
        context.consent.categories if context and context.consent else None,
        ident,
        builder.notes if builder is not None else _NO_NOTES,
    )
    return event, remember


_NO_NOTES: list[str] = []  # shared: events are never changed after they are built


def _scrubbed(inc: IncomingEvent, etype: str, country: str | None) -> tuple[dict, IdentityBuilder | None]:
    """The properties to queue, PII hashed, and the builder holding the hashes of everything in
    the event that identifies the person; no builder for an event with nothing that can (most
    events: making one cost more than the rest of the scrubbing)."""
    properties = inc.properties or {}
    context = inc.context
    traits = device_id = None
    if context is not None:
        traits, device = context.traits, context.device
        if device and device.adTrackingEnabled is not False:
            device_id = device.advertisingId
    if etype != "identify" and not traits and not device_id and plain(properties, False):
        return properties, None
    builder = IdentityBuilder(country)
    properties = _scrub(properties, builder, False, "properties")
    if etype == "identify":
        properties = _scrub(inc.traits or {}, builder, True, "traits")
    if traits:
        _scrub(traits, builder, True, "context.traits")
    if device_id:
        builder.add("hashed_maids", device_id)
    return properties, builder


def _scrub(obj: dict, builder: IdentityBuilder, traits: bool, where: str) -> dict:
    try:
        return scrub(obj, builder, traits)
    except TooDeep as exc:
        raise EventError(exc.where(where), f"{exc}; send flatter data") from None


_FIELD_ORDER = ("message_id", "type", "source_id", "received_at", "event_time", "name", "properties", "user_id",
                "anonymous_id", "group_id", "page_url", "referrer", "title", "ip", "user_agent", "click_id",
                "pin_unauth", "locale", "consent", "identity", "notes")
assert EdgeEvent.__struct_fields__ == _FIELD_ORDER, "build_event passes EdgeEvent's fields by position"


def _event_type(inc: IncomingEvent, implied: str | None) -> str:
    etype = inc.type
    if implied is not None:
        if etype is not None and etype != implied:
            raise EventError("type", f"'{etype}' sent to the {implied} endpoint")
        etype = implied
    elif etype is None:
        raise EventError("type", "missing: one of page, track, identify, group")
    if etype == "track":
        if not (inc.event and inc.event.strip()):
            raise EventError("event", "required for track events (the event name)")
    elif etype == "group":
        if inc.groupId is None:
            raise EventError("groupId", "required for group events")
    elif etype == "identify" and inc.userId is None and not inc.traits:
        raise EventError("userId", "identify needs a userId or traits")
    return etype


def _text(value) -> str | None:
    return value if isinstance(value, str) and value else None
