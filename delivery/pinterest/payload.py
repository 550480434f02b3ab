"""Wire shapes of Pinterest's `POST /v5/ad_accounts/{id}/events` (API v5.23.0).

Field names, types and optionality follow `schema/conversion-events.schema.json`.
Values Pinterest wants as strings (`value`, `item_price`) are `str` here so that a
number can never slip through. Empty/None fields are omitted from the JSON. The request's
Structs are not GC-tracked (gc=False): they hold strings, numbers and each other, never a
cycle, and a delivery batch builds thousands of them.
"""

from __future__ import annotations

from typing import Any

import msgspec

# Listed in the description of `event_name` / `action_source` in Pinterest's spec.
EVENT_NAMES = (
    "add_payment_info", "add_to_cart", "add_to_wishlist", "app_install", "checkout", "custom",
    "initiate_checkout", "lead", "page_visit", "search", "signup", "subscribe",
    "view_category", "view_content", "watch_video",
)
ACTION_SOURCES = ("app_android", "app_ios", "web", "offline")
MAX_EVENTS_PER_REQUEST = 1000


class UserData(msgspec.Struct, omit_defaults=True, gc=False):
    em: list[str] = []
    hashed_maids: list[str] = []
    client_ip_address: str | None = None
    client_user_agent: str | None = None
    ph: list[str] = []
    fn: list[str] = []
    ln: list[str] = []
    ge: list[str] = []
    db: list[str] = []
    ct: list[str] = []
    st: list[str] = []
    zp: list[str] = []
    country: list[str] = []
    external_id: list[str] = []
    click_id: str | None = None
    partner_id: str | None = None


class Content(msgspec.Struct, omit_defaults=True, gc=False):
    id: str | None = None
    item_price: str | None = None
    quantity: int | None = None
    item_name: str | None = None
    item_brand: str | None = None
    item_category: str | None = None


class CustomData(msgspec.Struct, omit_defaults=True, gc=False):
    currency: str | None = None
    value: str | None = None
    order_id: str | None = None
    num_items: int | None = None
    content_ids: list[str] = []
    contents: list[Content] = []
    content_name: str | None = None
    content_category: str | None = None
    content_brand: str | None = None
    search_string: str | None = None
    opt_out_type: str | None = None
    # Not in Pinterest's published schema; only filled when an integration opts in
    # (`send_custom_event_name`), see mapping.py.
    custom_event_name: str | None = None


class AppInfo(msgspec.Struct, omit_defaults=True, gc=False):
    """`app_info` (ConversionEventAppInfo): the app an app event happened in."""

    app_name: str | None = None  # at most 200 characters
    app_package_name: str | None = None  # at most 200
    app_version: str | None = None  # at most 100


class DeviceInfo(msgspec.Struct, omit_defaults=True, gc=False):
    """`device_info` (ConversionEventDeviceInfo): the device of an app event. Strings at most
    100 characters; os_family and network_type are enums in the schema."""

    brand: str | None = None
    carrier: str | None = None
    model: str | None = None
    network_type: str | None = None  # wifi | cellular_2g ... | ethernet | unknown
    os_family: str | None = None  # ios | android | ...
    os_version: str | None = None
    type: str | None = None


class Event(msgspec.Struct, omit_defaults=True, gc=False):
    event_name: str
    action_source: str
    event_time: int
    event_id: str
    user_data: UserData
    event_source_url: str | None = None
    custom_data: CustomData | None = None
    language: str | None = None
    partner_name: str | None = None
    opt_out: bool | None = None  # the person opted out of tracking (sent only when true)
    # App events (action_source app_android / app_ios): the schema's top-level fields, and the
    # newer app_info / device_info objects that carry the same and a little more.
    app_name: str | None = None
    app_version: str | None = None
    device_brand: str | None = None
    device_carrier: str | None = None
    device_model: str | None = None
    device_type: str | None = None
    os_version: str | None = None
    wifi: bool | None = None
    app_info: AppInfo | None = None
    device_info: DeviceInfo | None = None


class EventsRequest(msgspec.Struct, gc=False):
    data: list[Event]


class EventResult(msgspec.Struct, omit_defaults=True):
    status: str  # processed | failed
    error_message: str | None = None
    warning_message: str | None = None


class EventsResponse(msgspec.Struct, omit_defaults=True):
    num_events_received: int
    num_events_processed: int
    events: list[EventResult]


class Error(msgspec.Struct, omit_defaults=True):
    """Pinterest's `Error`, and `DetailedError` when `details` is present (422)."""

    code: int = 0
    message: str = ""
    details: dict[str, Any] | None = None


request_encoder = msgspec.json.Encoder()
response_decoder = msgspec.json.Decoder(EventsResponse)
error_decoder = msgspec.json.Decoder(Error)
