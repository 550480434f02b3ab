"""EdgeEvent -> Pinterest conversion event (design section 5)."""

from __future__ import annotations

import re
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from typing import Any

import msgspec

from delivery.events import AppDevice, EdgeEvent
from delivery.pinterest import normalize as norm
from delivery.pinterest import numbers
from delivery.pinterest.currencies import ISO_4217
from delivery.pinterest.payload import AppInfo, Content, CustomData, DeviceInfo, Event, UserData
from delivery.pinterest.variants import DEFAULT_VARIANT, VARIANTS, Variant

PAGE_EVENT = "page_visit"
CUSTOM_EVENT = "custom"
WEB = "web"
# The seed's table (Datafly Signal's "Event Mapping", with Segment's list and category views), as
# signal-edge mapped before it took Pinterest's newer names: for deployments migrating from it
# (event_names: "seed").
SEED_EVENT_MAP: dict[str, str] = {
    "Product Added": "add_to_cart",
    "Product Added to Wishlist": "add_to_cart",
    "Order Completed": "checkout",
    "Product Purchased": "checkout",
    "Checkout Started": "checkout",
    "Product Viewed": "view_category",
    "Product List Viewed": "view_category",
    "Product Category Viewed": "view_category",
    "Products Searched": "search",
    "Signed Up": "signup",
    "Lead Generated": "lead",
}
# Pinterest's current names (its API since 5.17 lists initiate_checkout, add_to_wishlist,
# view_content, add_payment_info, subscribe and app_install), the default. Segment's
# e-commerce spec names -> Pinterest events. A checkout that starts is not an order: mapped to
# checkout, a shop following Segment's spec counted every order twice.
CURRENT_EVENT_MAP: dict[str, str] = {
    **SEED_EVENT_MAP,
    "Product Added to Wishlist": "add_to_wishlist",
    "Checkout Started": "initiate_checkout",
    "Product Viewed": "view_content",
    "Payment Info Entered": "add_payment_info",
    "Subscription Created": "subscribe",
    "Application Installed": "app_install",
}
EVENT_NAME_PROFILES: dict[str, dict[str, str]] = {"current": CURRENT_EVENT_MAP, "seed": SEED_EVENT_MAP}
DEFAULT_PROFILE = "current"
PROFILE_HELP = {
    "current": "Pinterest's current event names: Checkout Started is initiate_checkout, Product Viewed "
               "view_content, wishlists add_to_wishlist, Payment Info Entered add_payment_info, Subscription "
               "Created subscribe, Application Installed app_install.",
    "seed": "The seed's table, for a deployment migrating from it: Checkout Started is checkout (counted with "
            "the order), Product Viewed view_category, wishlists add_to_cart; the newer events are custom.",
}


def name_key(name: str) -> str:
    """How event names are compared: case and surrounding spaces do not matter. Names with no
    Pinterest counterpart (Cart Viewed, Checkout Step Viewed, Coupon Applied, ...) are custom."""
    return name.strip().casefold()


_PROFILES_BY_KEY = {profile: {name_key(k): v for k, v in table.items()}
                    for profile, table in EVENT_NAME_PROFILES.items()}
# Event types Pinterest receives; identify and group only feed identity memory.
DELIVERED_TYPES = frozenset({"page", "track"})
NO_IDENTITY = "not sent: no em, no hashed_maids and not both IP address and User-Agent"
LDP = "LDP"  # custom_data.opt_out_type: limited data processing
_LANGUAGE = re.compile(r"^([a-zA-Z]{2})(?:[-_].*)?$")


class Options(msgspec.Struct, frozen=True):
    """The parts of an integration's config that shape its payloads."""

    variant: str = DEFAULT_VARIANT
    event_map: dict[str, str] = {}
    send_custom_event_name: bool = False
    event_names: str = DEFAULT_PROFILE  # the standard table: a key of EVENT_NAME_PROFILES

    def __post_init__(self) -> None:
        msgspec.structs.force_setattr(self, "event_map", {name_key(k): v for k, v in self.event_map.items()})

    @property
    def variant_data(self) -> Variant:
        return VARIANTS[self.variant]

    @property
    def standard(self) -> dict[str, str]:
        """The standard table of this profile, by name_key."""
        return _PROFILES_BY_KEY[self.event_names]


class Mapped(msgspec.Struct, gc=False):
    event: Event | None  # None when the event cannot be sent
    reason: str | None = None  # why it was not sent
    warnings: list[str] = []


def event_name(ev: EdgeEvent, options: Options) -> str:
    """The Pinterest event name for `ev` (custom when nothing maps it): the integration's
    event_map, then the variant's rows, then the standard table of its profile."""
    key = "page" if ev.type == "page" else name_key(ev.name or "")
    if key in options.event_map:
        return options.event_map[key]
    if ev.type == "page":
        return PAGE_EVENT
    return options.variant_data.mappings.get(key) or options.standard.get(key) or CUSTOM_EVENT


class MappingOrigin(StrEnum):
    """Where a row of an integration's mapping comes from."""

    STANDARD = "standard"  # the standard table of its event-name profile
    VARIANT = "variant"  # its variant's extra rows
    OVERRIDE = "override"  # its own event_map


def effective_mapping(options: Options, overrides: dict[str, str]) -> list[tuple[str, str, MappingOrigin]]:
    """(incoming name, Pinterest event, where the row comes from) for every name the integration
    maps, in the order event_name() looks them up last to first. `overrides` are the
    integration's event_map as written (Options holds it by name_key)."""
    rows = {"page": ("page (any page view)", PAGE_EVENT, MappingOrigin.STANDARD)}
    for origin, table in ((MappingOrigin.STANDARD, EVENT_NAME_PROFILES[options.event_names]),
                          (MappingOrigin.VARIANT, options.variant_data.extra_mappings),
                          (MappingOrigin.OVERRIDE, overrides)):
        for name, event in table.items():
            rows[name_key(name)] = (name, event, origin)
    return list(rows.values())


def is_priority(ev: EdgeEvent, options: Options) -> bool:
    return options.variant_data.is_priority(event_name(ev, options))


def map_event(ev: EdgeEvent, options: Options) -> Mapped:
    user_data = _user_data(ev)
    if not (user_data.em or user_data.hashed_maids or (user_data.client_ip_address and user_data.client_user_agent)):
        return Mapped(None, NO_IDENTITY)
    warnings: list[str] = []
    name = event_name(ev, options)
    custom = _custom_data(ev, options.variant_data, warnings)
    if name == CUSTOM_EVENT and options.send_custom_event_name and ev.name:
        custom = msgspec.structs.replace(custom or CustomData(), custom_event_name=ev.name)
    if ev.ldp:  # limited data processing under a US state privacy law
        custom = msgspec.structs.replace(custom or CustomData(), opt_out_type=LDP)
    # Positional arguments, in Event's field order: this runs for every event delivered.
    event = Event(name, ev.action_source or WEB, int(ev.event_time), ev.message_id, user_data, ev.page_url or None,
                  custom, _language(ev.locale), None, True if ev.opt_out else None)
    if ev.app is not None:
        event = _with_app(event, ev.app)
    return Mapped(event, None, warnings)


_OS_FAMILY = {"app_ios": "ios", "app_android": "android"}


def _with_app(event: Event, app: AppDevice) -> Event:
    """An app event with Pinterest's app and device fields: the top-level ones its schema lists,
    and the same in app_info / device_info (which also take the package name and OS family)."""
    brand = app.manufacturer
    app_info = AppInfo(app.name, app.namespace, app.version)
    device_info = DeviceInfo(brand, app.carrier, app.model, "wifi" if app.wifi else None,
                             _OS_FAMILY[event.action_source], app.os_version, app.device_type)
    return msgspec.structs.replace(
        event, app_name=app.name, app_version=app.version, device_brand=brand, device_carrier=app.carrier,
        device_model=app.model, device_type=app.device_type, os_version=app.os_version, wifi=app.wifi,
        app_info=app_info if app_info != _NO_APP_INFO else None, device_info=device_info)


_NO_APP_INFO = AppInfo()


@lru_cache(maxsize=65536)
def _hashed_id(value: str) -> str:
    """external_id entries: the same user and browser send many events, hash each once."""
    return norm.prehashed(value) or norm.sha256(value)


def _user_data(ev: EdgeEvent) -> UserData:
    ident = ev.identity
    external = []
    if ev.user_id:
        external.append(_hashed_id(ev.user_id))
    if ev.pin_unauth:
        external.append(_hashed_id(ev.pin_unauth))
    return UserData(ident.em, ident.hashed_maids, ev.ip or None, ev.user_agent or None, ident.ph, ident.fn,
                    ident.ln, ident.ge, ident.db, ident.ct, ident.st, ident.zp, ident.country, external,
                    ev.click_id or None)


@lru_cache(maxsize=1024)
def _language(locale: str | None) -> str | None:
    match = _LANGUAGE.match(locale or "")
    return match.group(1).lower() if match else None


# --- custom_data ---------------------------------------------------------------------


def _text(value: Any) -> str | None:
    kind = type(value)
    if kind is str:
        return value.strip() or None
    if value is None or kind is bool:
        return None
    if kind is int:
        return str(value)
    if kind is float:
        try:
            return numbers.money(value)
        except ValueError:  # inf, nan or beyond 10^15: not a usable id or name
            return None
    return None


def _product_id(product: dict[str, Any]) -> str | None:
    get = product.get
    return _text(get("product_id")) or _text(get("sku")) or _text(get("id"))


def _content(product: dict[str, Any], index: int | None, warnings: list[str]) -> Content:
    """One product; `index` is its place in `products` (None: the event is the product)."""
    get = product.get
    price = get("price")
    if price is not None:
        price = _parsed(price, numbers.money, index, "price", warnings)
    quantity = get("quantity")
    if type(quantity) is not int or not numbers.INT64_MIN <= quantity <= numbers.INT64_MAX:
        quantity = _parsed(quantity, numbers.int64, index, "quantity", warnings)
        if quantity is None:
            quantity = 1
    name, brand, category = get("name"), get("brand"), get("category")
    return Content(_product_id(product), price, quantity, name if name is None else _text(name),
                   brand if brand is None else _text(brand), category if category is None else _text(category))


def _parsed(value: Any, parse, index: int | None, name: str, warnings: list[str]) -> Any:
    """`parse(value)`, or None with a warning when the value is there but unusable."""
    if value is None:
        return None
    try:
        return parse(value)
    except ValueError as exc:
        warnings.append(f"{_label(index)}.{name} left out: {exc}")
        return None


def _label(index: int | None) -> str:
    return "product" if index is None else f"products[{index}]"


def _products(props: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """The event's products, and whether it is a single-product event."""
    products = props.get("products")
    if isinstance(products, list):
        return [p for p in products if isinstance(p, dict)], False
    if any(props.get(k) is not None for k in ("product_id", "sku")):
        return [props], True
    return [], False


def _custom_data(ev: EdgeEvent, variant: Variant, warnings: list[str]) -> CustomData | None:
    props = ev.properties
    get = props.get
    enrich = variant.enrich
    contents: list[Content] = []
    ids: list[str] = []
    num_items = content_name = content_category = content_brand = search_string = None
    products, single = _products(props)
    if single and "products" not in enrich:
        products = []
    if products:
        # A variant without product enrichment (media) still takes an order's value and its
        # item count from its products; only the product fields are left out (below).
        contents = [_content(p, None if single else i, warnings) for i, p in enumerate(products)]
        num_items = 0
        for c in contents:
            if c.id:
                ids.append(c.id)
            num_items += c.quantity or 0
        if not numbers.INT64_MIN <= num_items <= numbers.INT64_MAX:
            warnings.append("num_items left out: the sum of the quantities is out of range (int64)")
            num_items = None
        if single:
            content_name, content_category, content_brand = (
                _text(get("name")), _text(get("category")), _text(get("brand")))

    value = _value(props, contents, warnings)
    if "products" not in enrich:
        contents, ids = [], []
    currency = get("currency")
    if currency is not None:
        currency = _text(currency)
        if currency:
            currency = currency.upper()
            if currency not in ISO_4217:
                warnings.append("currency left out: not an ISO-4217 code")
                currency = None
    order_id = get("order_id")
    if order_id is not None:
        order_id = _text(order_id)

    if "search" in enrich:
        search_string = _text(get("query"))
        if search_string is None and "content" in enrich:
            search_string = _text(get("destination"))
    if "content" in enrich:
        if content_name is None:
            content_name = _text(get("title")) or _text(get("destination"))
            if content_name is None and ev.type == "page":
                content_name = ev.title or None
        if content_category is None:
            content_category = _text(get("category")) or _text(get("section"))

    if not (value or currency or order_id or contents or num_items or content_name or content_category or content_brand
            or search_string):
        return None
    # Positional arguments, in CustomData's field order (this runs for every event).
    return CustomData(currency, value, order_id, num_items, ids, contents, content_name, content_category,
                      content_brand, search_string)


def _value(props: dict[str, Any], contents: list[Content], warnings: list[str]) -> str | None:
    for key in ("value", "total", "revenue"):
        amount = props.get(key)
        if amount is None or (type(amount) is str and not amount.strip()):
            continue  # empty: the next key may hold the amount
        try:
            return numbers.money(amount)
        except ValueError as exc:
            warnings.append(f"value left out: '{key}' is {exc}")
            return None
    if contents and all(c.item_price is not None for c in contents):
        total = sum((Decimal(c.item_price) * (c.quantity or 0) for c in contents if c.item_price is not None),
                    Decimal(0))
        try:
            return numbers.money_of(total)
        except ValueError as exc:
            warnings.append(f"value left out: the sum of price x quantity is {exc}")
    return None
