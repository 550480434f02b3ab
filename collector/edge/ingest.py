"""From one incoming event to the EdgeEvent that is queued (PII hashed on the way)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from collector.edge import identity as edge_identity
from collector.edge.ids import uuid4
from collector.edge.wire import IncomingEvent
from delivery.config import Source
from delivery.events import AppDevice, EdgeEvent, merge_identity
from delivery.pinterest import normalize as norm
from delivery.pinterest.identity import NO_IDENTITY, IdentityBuilder, TooDeep
from delivery.pinterest.scrub import scrub_event
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
    pin_unauth: str | None  # None: a server's call without the browser's cookie
    cookie_epik: str | None
    query_epik: str | None  # only a value safe to echo into Set-Cookie
    received_at: float
    skew: float  # received_at - the batch's sentAt: how far the browser's clock is behind (0 without one)
    suspect: bool = False  # the body holds an "@" or a "+": look for addresses and numbers in values
    trusted: bool = False  # sent with the source's server key: context.ip and context.userAgent are believed
    gpc: bool = False  # the request carried Sec-GPC: 1 (Global Privacy Control)
    guarded: bool = False  # gpc, or the source enforces consent: build_event calls guarded()


def validation_message(exc: msgspec.ValidationError, prefix: str) -> EventError:
    """msgspec's "Expected `str`, got `int` - at `$.event`" as "batch[3].event: expected ..."."""
    text = str(exc)
    message, _, where = text.partition(" - at `")
    path = where.rstrip("`").replace("$", prefix, 1) if where else prefix
    return EventError(path, message[:1].lower() + message[1:])


def unix_seconds(moment: datetime) -> float:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def event_time(inc: IncomingEvent, ctx: RequestContext) -> float:
    """The sender's timestamp (else its originalTimestamp, as RudderStack's SDKs send it)
    corrected for its clock skew, never later than its arrival."""
    stamp = inc.timestamp
    if stamp is None:
        stamp = inc.originalTimestamp
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
    source = ctx.source
    context = inc.context
    page = context.page if context is not None else None
    properties = inc.properties or {}
    page_url = search = referrer = title = None
    if page is not None:
        page_url, search, referrer, title = page.url, page.search, page.referrer, page.title
    if etype == "page":
        page_url = page_url or _text(properties.get("url"))
        title = title or _text(properties.get("title"))
    click_id = ctx.query_epik or ctx.cookie_epik  # both are checked already (RequestContext)
    if (page_url and "epik=" in page_url) or (search and "epik=" in search):
        found = edge_identity.epik_from_url(page_url) or edge_identity.epik_from_query(search)
        if found:
            click_id = found if edge_identity.cookie_value_ok(found) else ctx.cookie_epik

    traits = device_id = None
    if context is not None:
        traits, device = context.traits, context.device
        if device and device.adTrackingEnabled is not False:
            device_id = device.advertisingId
    try:
        scrubbed = scrub_event(etype, properties, inc.traits, traits, device_id,
                               str(inc.userId) if inc.userId is not None else None, page_url, referrer, title,
                               source.default_country, source.privacy.url_params_to_remove, ctx.suspect)
    except TooDeep as exc:
        raise EventError(exc.field, f"{exc}; send flatter data") from None
    builder = scrubbed.builder

    user_id = scrubbed.user_id
    if stored is not None and user_id is not None and stored.user_id is not None and user_id != stored.user_id:
        stored = None  # another person signed in on this browser: nothing of the last one's is theirs
    if builder is not None and builder.values:
        hashed, ident = True, builder.identity()
    else:
        hashed, ident = False, NO_IDENTITY
    remember = None
    if stored is not None:
        ident = merge_identity(ident, stored.identity) if hashed else stored.identity
        if user_id is None:
            user_id = stored.user_id
    if hashed or (user_id and (stored is None or stored.user_id != user_id)):
        candidate = StoredIdentity(user_id, ident)
        if candidate != stored:
            remember = candidate
    granted, opted_out = _consent(context)
    notes = builder.notes if builder is not None else _NO_NOTES
    if ctx.trusted:  # the site's own server: only what the event says is the visitor's
        ip, user_agent = _client_ip(context), context.userAgent if context is not None else None
        if ip is None or not user_agent:
            notes = [*notes, *_server_notes(ip, user_agent)]
    else:
        ip, user_agent = ctx.ip, ctx.user_agent or (context.userAgent if context is not None else None)
    action_source = app = None
    if context is not None and (context.offline or context.app or context.os or context.device):
        action_source, app = _app_or_offline(context)

    # Positional, in EdgeEvent's field order (checked by _FIELD_ORDER below): with its 21 fields
    # as keyword arguments the constructor took 1.6 us per event, positional 0.3 us.
    event = EdgeEvent(
        # properties.event_id first: the id a Pinterest Tag on the page was given, for deduplication
        _text(scrubbed.properties.get("event_id")) or inc.messageId or uuid4(),
        etype,
        source.id,
        ctx.received_at,
        event_time(inc, ctx),
        inc.event if etype == "track" else inc.name,
        scrubbed.properties,
        user_id,
        ctx.anonymous_id,
        str(inc.groupId) if inc.groupId is not None else None,
        scrubbed.page_url,
        scrubbed.referrer,
        scrubbed.title,
        ip,
        user_agent,
        click_id,
        ctx.pin_unauth,
        context.locale if context else None,
        granted,
        ident,
        notes,
        _limited(scrubbed.properties, context, source, builder),
        opted_out,
        action_source,
        app,
    )
    if ctx.guarded:
        event = guarded(event, ctx)
    return event, remember


def guarded(event: EdgeEvent, ctx: RequestContext) -> EdgeEvent:
    """Consent before advertising identifiers, and Global Privacy Control, for the events of a
    request that needs them (RequestContext.guarded): apart, so that the others pay one check."""
    source = ctx.source
    changes: dict[str, Any] = {}
    if source.consent.enabled and not ads_allowed(event.consent, source):
        # No advertising identifier is stored before the visitor grants the advertising category.
        changes.update(click_id=None, pin_unauth=None, page_url=edge_identity.without_epik(event.page_url),
                       referrer=edge_identity.without_epik(event.referrer))
    if ctx.gpc:
        changes["gpc"] = True
        if source.privacy.gpc == "opt_out":
            changes["opt_out"] = True
    return msgspec.structs.replace(event, **changes) if changes else event


# Consent categories whose refusal means the person opted out of ads personalization.
OPT_OUT_CATEGORIES = frozenset({"ads_personalization", "advertising"})
ADVERTISING = "advertising"  # the category that lets the edge write advertising identifiers


def ads_allowed(granted: list[str] | None, source: Source) -> bool:
    """Whether the event's granted categories (else the source's defaults) hold advertising."""
    return ADVERTISING in (granted if granted is not None else source.consent.default_categories)


def _consent(context) -> tuple[list[str] | None, bool]:
    """(the granted categories, lowercase, or None when the event says nothing; whether the
    person opted out). The tag sends a refused category as "!name", Segment as
    categoryPreferences {"Advertising": false}; an app says adTrackingEnabled: false."""
    device = context.device if context is not None else None
    opted_out = device is not None and device.adTrackingEnabled is False
    consent = context.consent if context is not None else None
    if consent is None:
        return None, opted_out
    categories = consent.categories
    if consent.categoryPreferences:
        categories = [*(categories or ()), *(k if v else "!" + k for k, v in consent.categoryPreferences.items())]
    if categories is None:
        return None, opted_out
    granted = [c.lower() for c in categories if not c.startswith("!")]
    if len(granted) == len(categories):
        return granted, opted_out
    refused = {c[1:].lower() for c in categories if c.startswith("!")}
    return granted, opted_out or bool(refused & OPT_OUT_CATEGORIES)


def _limited(properties: dict, context, source, builder: IdentityBuilder | None) -> bool:
    """Limited data processing for this event: asked for by the event (properties.opt_out_type
    "LDP", or context.ldp from a server), or by the source, for all or for listed US states."""
    asked = properties.get("opt_out_type")
    if isinstance(asked, str) and "ldp" in asked.lower().split(","):
        return True
    if context is not None and context.ldp:
        return True
    mode = source.privacy.ldp
    if mode == "all":
        return True
    if mode != "states":
        return False
    state = builder.state if builder is not None else None
    location = context.location if context is not None else None
    if location is not None and location.region:
        try:  # noqa: SIM105 - not contextlib.suppress: a context manager per event
            state = norm.state(location.region)
        except norm.Invalid:
            pass
    return state is not None and state in source.privacy.ldp_states


def _client_ip(context) -> str | None:
    """The visitor's address as a server-side call gives it (context.ip). Never the caller's:
    that is the site's server, and Pinterest would match the conversion to it."""
    given = context.ip if context is not None else None
    return edge_identity.plain_ip(given) if given and edge_identity.valid_ip(given) else None


NO_SERVER_IP = ("client_ip_address not sent: a server-side call (server key) gave no valid context.ip, and the "
                "server's own address is not the visitor's")
NO_SERVER_USER_AGENT = ("client_user_agent not sent: a server-side call (server key) gave no context.userAgent, and "
                        "the server's own User-Agent is not the visitor's")


def _server_notes(ip: str | None, user_agent: str | None) -> list[str]:
    return ([] if ip else [NO_SERVER_IP]) + ([] if user_agent else [NO_SERVER_USER_AGENT])


# Segment's mobile libraries name the OS "iOS" / "Android" (context.os.name) and the device
# type "ios" / "android" (context.device.type).
_IOS = frozenset({"ios", "ipados", "iphone os", "tvos", "watchos", "visionos"})


def _platform(name: str | None) -> str | None:
    key = name.strip().casefold() if name else ""
    if key in _IOS:
        return "app_ios"
    return "app_android" if key.startswith("android") else None


def _app_or_offline(context) -> tuple[str | None, AppDevice | None]:
    """Pinterest's action_source for an event that says it is offline (context.offline) or
    comes from a mobile app (its OS, from context.os or context.device), with the app and
    device fields for the latter; (None, None) for the web."""
    if context.offline:
        return "offline", None
    device, os, app, network = context.device, context.os, context.app, context.network
    platform = _platform(os.name if os else None) or _platform(device.type if device else None)
    if platform is None:
        return None, None
    return platform, AppDevice(
        app.name if app else None, app.version if app else None, app.namespace if app else None,
        os.name if os else None, os.version if os else None, device.manufacturer if device else None,
        device.model if device else None, device.type if device else None,
        network.carrier if network else None, network.wifi if network else None)


_NO_NOTES: list[str] = []  # shared: events are never changed after they are built


_FIELD_ORDER = ("message_id", "type", "source_id", "received_at", "event_time", "name", "properties", "user_id",
                "anonymous_id", "group_id", "page_url", "referrer", "title", "ip", "user_agent", "click_id",
                "pin_unauth", "locale", "consent", "identity", "notes", "ldp", "opt_out", "action_source", "app",
                "gpc")
assert EdgeEvent.__struct_fields__ == _FIELD_ORDER, "build_event passes EdgeEvent's fields by position"


def _event_type(inc: IncomingEvent, implied: str | None) -> str:
    etype: str | None = inc.type
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
