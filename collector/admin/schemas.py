"""Wire shapes of the management API (design section 6). The handlers decode and encode
with these, and the OpenAPI document is generated from them."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

import msgspec
from msgspec import UNSET, Meta, UnsetType

from collector.activity import ArrivalKind
from delivery.config import Credential, Gpc, Ldp
from delivery.pinterest.catalog import CONSENT_CATEGORIES
from delivery.pinterest.eqs import EventQualityScore
from delivery.pinterest.mapping import EVENT_NAME_PROFILES, MappingOrigin
from delivery.pinterest.payload import EVENT_NAMES
from delivery.pinterest.variants import VARIANTS

NonEmpty = Annotated[str, Meta(min_length=1, max_length=200)]
Secret = Annotated[str, Meta(min_length=1, max_length=2048, description="Stored encrypted; returned masked.")]
AdAccountId = Annotated[str, Meta(pattern=r"^\d{1,18}$", description="Digits only, e.g. 549764982399.")]
AppId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$",
                            description="the Pinterest app's id (client_id): letters, digits, _ or -")]
Hostname = Annotated[str, Meta(pattern=r"^\.?[A-Za-z0-9]([A-Za-z0-9-]{0,62}\.)*[A-Za-z0-9-]{1,63}$", max_length=253,
                               description="a host name such as shop.example.com")]
Origin = Annotated[str, Meta(pattern=r"^https?://[^/\s]+$", max_length=300,
                             description="scheme://host[:port], such as https://shop.example.com (no path)")]
Country = Annotated[str, Meta(pattern=r"^[A-Za-z]{2}$", description="a two-letter country code such as US")]
SourceId = Annotated[str, Meta(pattern=r"^src_[A-Za-z0-9_-]{3,60}$",
                               description="src_ and 3 to 60 letters, digits, _ or -, such as src_abc123")]
# Vocabularies read from data tables: msgspec checks each against its table; to mypy, which
# cannot read a table, they are str.
if TYPE_CHECKING:
    Category: TypeAlias = str
    EventName: TypeAlias = str
    VariantKey: TypeAlias = str
    EventNamesProfile: TypeAlias = str
else:
    Category = Literal[CONSENT_CATEGORIES]
    EventName = Literal[EVENT_NAMES]
    VariantKey = Literal[tuple(VARIANTS)]
    # The standard table: Pinterest's current names ("current") or the seed's ("seed").
    EventNamesProfile = Literal[tuple(EVENT_NAME_PROFILES)]
RatePerSecond = Annotated[float, Meta(gt=0, le=10_000)]  # requests/s to Pinterest
EventsPerSecond = Annotated[float, Meta(gt=0, le=1_000_000)]  # events/s accepted by a source
Burst = Annotated[int, Meta(ge=1, le=1_000_000)]
# A client's burst must let one full request (500 events) through.
ClientBurst = Annotated[int, Meta(ge=500, le=1_000_000, description="at least 500: one full request")]
EventMap = Annotated[dict[Annotated[str, Meta(min_length=1, max_length=200)], EventName], Meta(max_length=200)]


class Strict(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


# --- errors and lists --------------------------------------------------------------------


class ErrorDetail(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    field: str | None = None


class ErrorResponse(msgspec.Struct):
    error: ErrorDetail


# --- sources -----------------------------------------------------------------------------


class Consent(Strict):
    enabled: bool = False
    default_categories: list[Category] = []


StateCode = Annotated[str, Meta(pattern=r"^[A-Za-z]{2}$", description="a two-letter US state code")]
ParamName = Annotated[str, Meta(min_length=1, max_length=100)]


class Privacy(msgspec.Struct, forbid_unknown_fields=True):
    """US state privacy laws, Global Privacy Control and URLs: see the README's consent section.
    (Every field is shown.)"""

    ldp: Ldp = Ldp.OFF
    ldp_states: Annotated[list[StateCode], Meta(max_length=60)] = []
    url_params_to_remove: Annotated[list[ParamName], Meta(max_length=100)] = []
    # A browser's Sec-GPC: 1: its events go with opt_out: true, or to no integration.
    gpc: Gpc = Gpc.OPT_OUT


Prefix = Annotated[str, Meta(pattern=r"^(/[A-Za-z0-9_-]{1,40}){1,3}$",
                             description="the path the site forwards to the edge, such as /sig")]
ScriptName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,40}\.js$",
                                 description="the tag's file name, such as k3v9q2mx.js")]
EndpointName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,40}$", description="ingestion's name, such as w8r2p4nz")]


class ServingIn(Strict):
    """Where the site mounts the edge (omitted: as before, or the opaque default)."""

    prefix: Prefix | None = None
    script: ScriptName | None = None
    endpoint: EndpointName | None = None


class ServingOut(msgspec.Struct):
    prefix: str
    script: str
    endpoint: str
    script_path: str  # where pages load the tag on the site: <prefix>/<script>
    snippet: str  # the snippet for pages of a site that mounts the edge under `prefix`
    caddy: str  # what goes into the site's Caddy block


class PreviousKeyOut(msgspec.Struct):
    pipeline_key: str  # replaced by a rotation
    until: str  # accepted until then, refused (and counted on this source) after


class RotateKey(Strict):
    overlap_days: Annotated[float, Meta(ge=0, le=90)] = 7.0  # how long the replaced key keeps working


class ArrivalOut(msgspec.Struct):
    arrival: ArrivalKind
    requests: int
    last_at: str
    origin: str | None  # the page's origin, in the last such request
    host: str | None  # the host it sent to


class DeploymentStatus(StrEnum):
    """How a source's browser requests arrive (ArrivalKind), or "unknown" before the first."""

    SAME_ORIGIN = ArrivalKind.SAME_ORIGIN.value
    SAME_SITE = ArrivalKind.SAME_SITE.value
    CROSS_SITE = ArrivalKind.CROSS_SITE.value
    UNKNOWN = "unknown"


class DeploymentOut(msgspec.Struct):
    """How this source's browser requests arrive (as this node saw them) and what that means."""

    status: DeploymentStatus
    warning: bool  # a cross-site request came within the last day: its cookies are lost
    summary: str
    safari: str  # what Safari does with the edge's cookies
    chrome: str
    fix: str | None  # what to do, when anything
    arrivals: list[ArrivalOut]


class SourceCreate(Strict):
    name: NonEmpty
    id: SourceId | None = None  # optional: choose the id (e.g. the seed's src_abc123)
    domain: Hostname | None = None
    allowed_origins: Annotated[list[Origin], Meta(max_length=50)] = []
    cookie_domain: Hostname | None = None
    default_country: Country | None = None
    consent: Consent = msgspec.field(default_factory=Consent)
    rate_limit_per_second: EventsPerSecond = 1000.0
    rate_limit_burst: Burst = 20000
    client_rate_limit_per_second: EventsPerSecond = 50.0
    client_rate_limit_burst: ClientBurst = 1000
    privacy: Privacy = msgspec.field(default_factory=Privacy)
    serving: ServingIn = msgspec.field(default_factory=ServingIn)
    pintrk_bridge: bool = False


class SourcePatch(Strict):
    name: NonEmpty | UnsetType = UNSET
    domain: Hostname | UnsetType | None = UNSET
    allowed_origins: Annotated[list[Origin], Meta(max_length=50)] | UnsetType = UNSET
    cookie_domain: Hostname | UnsetType | None = UNSET
    default_country: Country | UnsetType | None = UNSET
    consent: Consent | UnsetType = UNSET
    rate_limit_per_second: EventsPerSecond | UnsetType = UNSET
    rate_limit_burst: Burst | UnsetType = UNSET
    client_rate_limit_per_second: EventsPerSecond | UnsetType = UNSET
    client_rate_limit_burst: ClientBurst | UnsetType = UNSET
    privacy: Privacy | UnsetType = UNSET
    serving: ServingIn | UnsetType = UNSET
    pintrk_bridge: bool | UnsetType = UNSET


class SourceOut(msgspec.Struct):
    id: str
    name: str
    pipeline_key: str
    domain: str | None
    allowed_origins: list[str]
    cookie_domain: str | None
    default_country: str | None
    consent: Consent
    rate_limit_per_second: float
    rate_limit_burst: int
    client_rate_limit_per_second: float
    client_rate_limit_burst: int
    privacy: Privacy
    server_key: str | None  # masked (sk_live_****abcd); issued by rotate-server-key
    created_at: str
    updated_at: str
    snippet: str  # the script tag to paste, for the edge on its own host (SIGNAL_PUBLIC_URL)
    rejected: dict[str, int]  # refused requests and events by reason (origin_not_allowed, rate_limited, ...)
    recent_refusals: list[RefusalOut]  # the last few, newest first
    last_event_at: str | None  # when the edge last accepted an event of this source
    serving: ServingOut  # the edge under a path of the site itself
    pintrk_bridge: bool
    previous_keys: list[PreviousKeyOut]  # newest first
    deployment: DeploymentOut


class RefusalOut(msgspec.Struct):
    at: str
    reason: str
    detail: str  # the refused origin, or what was wrong and in which field


class ServerKeyIssued(msgspec.Struct):
    server_key: str  # shown this once: only its hash is kept
    message: str


# --- integrations ------------------------------------------------------------------------


class PinterestConfigIn(Strict):
    """Credentials: an access token and/or a conversion token (pasted), or an app (app_id and
    app_secret) with a refresh token, or an app alone, to connect with Pinterest afterwards."""

    ad_account_id: AdAccountId
    access_token: Secret | None = None
    conversion_token: Secret | None = None
    app_id: AppId | None = None
    app_secret: Secret | None = None
    refresh_token: Secret | None = None
    test_mode: bool = False
    event_map: EventMap = {}
    event_names: EventNamesProfile = "current"
    send_custom_event_name: bool = False
    rate_limit_per_second: RatePerSecond = 100.0
    rate_limit_burst: Burst = 200


class PinterestConfigPatch(Strict):
    """Only the keys given change; an omitted secret keeps its stored value."""

    ad_account_id: AdAccountId | UnsetType = UNSET
    access_token: Secret | UnsetType = UNSET
    conversion_token: Secret | UnsetType = UNSET
    app_id: AppId | UnsetType = UNSET
    app_secret: Secret | UnsetType = UNSET
    refresh_token: Secret | UnsetType = UNSET
    test_mode: bool | UnsetType = UNSET
    event_map: EventMap | UnsetType = UNSET
    event_names: EventNamesProfile | UnsetType = UNSET
    send_custom_event_name: bool | UnsetType = UNSET
    rate_limit_per_second: RatePerSecond | UnsetType = UNSET
    rate_limit_burst: Burst | UnsetType = UNSET


class IntegrationCreate(Strict):
    source_id: Annotated[str, Meta(min_length=1, max_length=100)]
    vendor: Literal["pinterest"]
    name: NonEmpty
    config: PinterestConfigIn
    enabled: bool = True
    consent_categories: list[Category] = []
    variant: VariantKey = "default"


class IntegrationPatch(Strict):
    name: NonEmpty | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET
    paused: bool | UnsetType = UNSET
    config: PinterestConfigPatch | UnsetType = UNSET
    consent_categories: list[Category] | UnsetType = UNSET
    variant: VariantKey | UnsetType = UNSET


class PinterestConfigOut(msgspec.Struct):
    ad_account_id: str
    access_token: str | None  # masked
    conversion_token: str | None  # masked
    app_id: str | None
    app_secret: str | None  # masked
    refresh_token: str | None  # masked
    connected: bool  # signal-edge gets its access tokens itself (an app and a refresh token)
    access_token_expires_at: str | None
    token_refreshed_at: str | None
    refresh_token_expires_at: str | None
    test_mode: bool
    event_map: dict[str, str]
    event_names: str  # the standard table in effect: current (Pinterest's names) | seed
    send_custom_event_name: bool
    rate_limit_per_second: float
    rate_limit_burst: int


class HealthOut(msgspec.Struct):
    status: str  # pending | healthy | unhealthy
    problem: str | None
    message: str | None  # what to do, in plain words
    pinterest_message: str | None
    checked_at: str | None


class DeliveryCounts(msgspec.Struct):
    accepted: int
    filtered: int
    queued: int
    in_flight: int
    delivered: int
    dead_lettered: int
    skipped_disabled: int  # events not queued while the integration was disabled
    last_error: str | None
    last_error_at: str | None


class IntegrationOut(msgspec.Struct):
    id: str
    source_id: str
    vendor: str
    name: str
    enabled: bool
    paused: bool
    variant: str
    consent_categories: list[str]
    config: PinterestConfigOut
    health: HealthOut
    delivery: DeliveryCounts
    warnings: list[str]
    created_at: str
    updated_at: str


class CredentialCheck(msgspec.Struct):
    credential: Credential
    ok: bool
    message: str


class TestResult(msgspec.Struct):
    ok: bool  # every credential works
    message: str
    checks: list[CredentialCheck]  # each credential tried on its own


class MappingRow(msgspec.Struct):
    incoming: str  # the track event's name (or page)
    pinterest_event: str
    origin: MappingOrigin
    priority: bool  # a priority event of the variant: sent at once, first when the rate limit binds


class MappingOut(msgspec.Struct):
    variant: str
    event_names: str  # the profile of the standard table: current | seed
    event_names_help: str  # what that profile means, in plain words
    rows: list[MappingRow]  # the later origin wins for a name: override > variant > standard
    otherwise: MappingRow  # what any other name becomes
    priority_events: list[str] | None  # None: every event is a priority event
    event_map: dict[str, str]  # the integration's overrides, as written
    send_custom_event_name: bool


class PreviewEvent(msgspec.Struct):
    """An event as the tag or the HTTP API sends it (type, event, properties, traits, context...)."""

    type: str
    event: str | None = None


class PreviewOut(msgspec.Struct):
    sent: bool  # whether Pinterest would receive it
    reason: str | None  # why not
    incoming: Any  # the event as queued (PII hashed)
    event_names: str = "current"  # the profile of the standard table that mapped it
    pinterest_event: str | None = None
    payload: Any = None  # the request body Pinterest would receive
    warnings: list[str] = []  # fields left out (by the edge, then the mapping), and why
    schema_errors: list[str] = []  # what Pinterest's published schema says is wrong (empty: valid)


DeadLetterId = Annotated[int, Meta(ge=1, le=2**63 - 1)]


class ReplayRequest(Strict):
    ids: Annotated[list[DeadLetterId], Meta(max_length=10_000)] | None = None  # None: all
    into: Annotated[str, Meta(min_length=1, max_length=100)] | None = None  # another integration's queue
    # Another source's integration sends to another site's ad account: only when said so.
    confirm_other_source: bool = False


class ReplayResult(msgspec.Struct):
    replayed: int  # dead letters over 7 days old are left (Pinterest would refuse them)


class DeadLetterOut(msgspec.Struct):
    id: int
    event_id: str | None
    reason: str
    attempts: int
    created_at: str
    dead_at: str
    event: Any  # the queued event (PII hashed)
    replayable: bool  # false when it is too old for Pinterest (over 7 days): replay leaves it
    not_replayable_reason: str | None


class DebugEventOut(msgspec.Struct, omit_defaults=True):
    id: int | None
    at: str
    source_id: str
    event_id: str
    event: str
    status: str
    integration_id: str | None = None
    pinterest_event: str | None = None
    attempts: int = 0
    message: str | None = None
    warnings: list[str] = []
    incoming: Any = None
    payload: Any = None


class AuditOut(msgspec.Struct):
    id: int
    at: str
    action: str
    object_type: str
    object_id: str
    old: dict[str, Any] | None
    new: dict[str, Any] | None


class MatchSignal(msgspec.Struct):
    signal: str
    share: float  # 0..1 of the events looked at
    count: int


class MatchAdvice(msgspec.Struct):
    signal: str
    hint: str  # what to do about it


class MatchQuality(msgspec.Struct):
    integration_id: str
    events: int  # how many recent events were looked at
    signals: list[MatchSignal]
    weakest: str | None  # the weakest of the weak signals (under half the events); None when none is weak
    hint: str | None  # advice for every weak signal; None when none is weak
    advice: list[MatchAdvice]  # one entry per weak signal, weakest first


class EventQualityPeriod(msgspec.Struct):
    lookback_period: str  # 1d | 14d
    scores: list[EventQualityScore]  # Pinterest's answer as it gave it: one per source platform


class EventQualityOut(msgspec.Struct):
    """Pinterest's Event Quality Score for the integration's ad account (Conversions API events)."""

    integration_id: str
    ad_account_id: str
    checked_at: str | None  # the last attempt to read it
    scores_at: str | None  # when the scores below were read (an older read is kept when a later one fails)
    next_refresh_at: str | None  # when signal-edge reads it again by itself
    periods: list[EventQualityPeriod]
    problem: str | None  # why it could not be read: no_read_token | needs_ads_read | unauthorized | ...
    message: str | None  # what to do about it, in plain words
    pinterest_message: str | None  # Pinterest's own words


def page_of(item_type: Any) -> Any:
    """The list envelope `{data, next_cursor, has_more}` for `item_type`."""
    return msgspec.defstruct(
        f"{item_type.__name__}Page",
        [("data", list[item_type]), ("next_cursor", str | None), ("has_more", bool)],
    )
