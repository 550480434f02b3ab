"""Wire shapes of the ingestion endpoints (Segment-style events, design section 4).

Unknown keys are ignored, so Segment and Datafly.js clients that send extra fields
(`integrations`, `channel`, `_metadata`, ...) keep working.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec

Name = Annotated[str, msgspec.Meta(max_length=200)]
Short = Annotated[str, msgspec.Meta(max_length=100)]  # what Pinterest's device_info takes
Id = Annotated[str, msgspec.Meta(max_length=256)]
Text = Annotated[str, msgspec.Meta(max_length=8192)]
EventType = Literal["page", "track", "identify", "group"]
E = TypeVar("E")


class PageContext(msgspec.Struct, gc=False):
    url: Text | None = None
    path: Text | None = None
    referrer: Text | None = None
    title: Text | None = None
    search: Text | None = None


class ConsentContext(msgspec.Struct, gc=False):
    categories: list[Name] | None = None  # the tag's: granted names, a refused one as "!name"
    # Segment's consent shape: {"Advertising": true, "Analytics": false}
    categoryPreferences: Annotated[dict[Name, bool], msgspec.Meta(max_length=64)] | None = None


class DeviceContext(msgspec.Struct, gc=False):
    advertisingId: Id | None = None
    adTrackingEnabled: bool | None = None
    manufacturer: Short | None = None
    model: Short | None = None
    type: Short | None = None  # Segment's mobile libraries: "ios", "android"


class AppContext(msgspec.Struct, gc=False):
    """Segment's context.app, sent by its mobile libraries."""

    name: Name | None = None
    version: Short | None = None
    build: Short | None = None
    namespace: Name | None = None  # bundle id / package name


class OsContext(msgspec.Struct, gc=False):
    name: Short | None = None  # "iOS", "Android"
    version: Short | None = None


class NetworkContext(msgspec.Struct, gc=False):
    carrier: Short | None = None
    wifi: bool | None = None


class LocationContext(msgspec.Struct, gc=False):
    region: Name | None = None  # a US state, for limited data processing by state
    country: Name | None = None


class Context(msgspec.Struct, gc=False):
    page: PageContext | None = None
    userAgent: Text | None = None
    ip: Name | None = None  # the visitor's address: believed only from the site's servers (server key)
    ldp: bool | None = None  # limited data processing for this event
    location: LocationContext | None = None
    locale: Name | None = None
    timezone: Name | None = None
    consent: ConsentContext | None = None
    device: DeviceContext | None = None
    traits: dict[str, Any] | None = None
    app: AppContext | None = None
    os: OsContext | None = None
    network: NetworkContext | None = None
    offline: bool | None = None  # the caller says the conversion happened offline (in a shop, by phone)


class IncomingEvent(msgspec.Struct, gc=False):
    type: EventType | None = None  # /v1/t, /v1/p, /v1/i and /v1/g imply it
    event: Name | None = None
    name: Name | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    userId: Id | int | None = None
    anonymousId: Id | None = None
    groupId: Id | int | None = None
    messageId: Id | None = None
    timestamp: datetime | None = None
    originalTimestamp: datetime | None = None  # the device's clock when it happened (RudderStack, Segment)
    sentAt: datetime | None = None
    context: Context | None = None


class BatchBody(msgspec.Struct, Generic[E], gc=False):
    """A batch; its events decoded in the same call (IncomingEvent) or left raw (msgspec.Raw)."""

    batch: list[E]
    pipeline_key: Id | None = None
    sentAt: datetime | None = None
    reset: bool = False  # _df.reset(): forget the browser's identity, issue a new _dfid


class SingleBody(msgspec.Struct, gc=False):
    """The part of a single-event body that is not the event itself."""

    pipeline_key: Id | None = None
    reset: bool = False


class Rejected(msgspec.Struct):
    index: int
    code: str
    message: str


class Accepted(msgspec.Struct, omit_defaults=True):
    success: bool
    accepted: int
    rejected: list[Rejected] = []


class ErrorDetail(msgspec.Struct):
    code: str
    message: str


class ErrorBody(msgspec.Struct, omit_defaults=True):
    error: ErrorDetail
    rejected: list[Rejected] = []


batch_decoder = msgspec.json.Decoder(BatchBody[msgspec.Raw])
decoded_batch_decoder = msgspec.json.Decoder(BatchBody[IncomingEvent])
single_decoder = msgspec.json.Decoder(SingleBody)
event_decoder = msgspec.json.Decoder(IncomingEvent)
encoder = msgspec.json.Encoder()
