"""EdgeEvent -> Pinterest conversion event (design section 5)."""

from __future__ import annotations

import math
import re
from functools import lru_cache
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from delivery.events import EdgeEvent
from delivery.pinterest import normalize as norm
from delivery.pinterest.payload import Content, CustomData, Event, UserData
from delivery.pinterest.variants import DEFAULT_VARIANT, VARIANTS, Variant

PAGE_EVENT = "page_visit"
CUSTOM_EVENT = "custom"
DEFAULT_EVENT_MAP: dict[str, str] = {
    "Product Added": "add_to_cart",
    "Order Completed": "checkout",
    "Product Purchased": "checkout",
    "Checkout Started": "checkout",
    "Product Viewed": "view_category",
    "Products Searched": "search",
    "Signed Up": "signup",
    "Lead Generated": "lead",
    "Product Added to Wishlist": "add_to_cart",
}
# Event types Pinterest receives; identify and group only feed identity memory.
DELIVERED_TYPES = frozenset({"page", "track"})
NO_IDENTITY = "not sent: no em, no hashed_maids and not both IP address and User-Agent"
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_LANGUAGE = re.compile(r"^([a-zA-Z]{2})(?:[-_].*)?$")


class Options(msgspec.Struct, frozen=True):
    """The parts of an integration's config that shape its payloads."""

    variant: str = DEFAULT_VARIANT
    event_map: dict[str, str] = {}
    send_custom_event_name: bool = False

    @property
    def variant_data(self) -> Variant:
        return VARIANTS[self.variant]


class Mapped(msgspec.Struct):
    event: Event | None  # None when the event cannot be sent
    reason: str | None = None  # why it was not sent
    warnings: list[str] = []


def event_name(ev: EdgeEvent, options: Options) -> str:
    """The Pinterest event name for `ev` (custom when nothing maps it)."""
    source_name = "page" if ev.type == "page" else (ev.name or "")
    if source_name in options.event_map:
        return options.event_map[source_name]
    if ev.type == "page":
        return PAGE_EVENT
    return (
        options.variant_data.extra_mappings.get(source_name)
        or DEFAULT_EVENT_MAP.get(source_name)
        or CUSTOM_EVENT
    )


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
    event = Event(
        event_name=name,
        action_source="web",
        event_time=int(ev.event_time),
        event_id=ev.message_id,
        user_data=user_data,
        event_source_url=ev.page_url or None,
        custom_data=custom,
        language=_language(ev.locale),
    )
    return Mapped(event, None, warnings)


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
    return UserData(
        em=ident.em, hashed_maids=ident.hashed_maids,
        client_ip_address=ev.ip or None, client_user_agent=ev.user_agent or None,
        ph=ident.ph, fn=ident.fn, ln=ident.ln, ge=ident.ge, db=ident.db, ct=ident.ct,
        st=ident.st, zp=ident.zp, country=ident.country, external_id=external,
        click_id=ev.click_id or None,
    )


@lru_cache(maxsize=1024)
def _language(locale: str | None) -> str | None:
    match = _LANGUAGE.match(locale or "")
    return match.group(1).lower() if match else None


# --- custom_data ---------------------------------------------------------------------


_CANONICAL = re.compile(r"(0|[1-9]\d*)(\.\d+)?")  # already a plain, non-negative decimal


def decimal_string(value: Any) -> str:
    """A finite number as a plain decimal string ("129.99", "0"); ValueError otherwise."""
    kind = type(value)
    if kind is int:
        return str(value)
    if kind is float:
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        if value == 0:
            return "0"
        text = repr(value)  # the shortest string that reads back as this float
        if "e" not in text:
            return text
        return _plain(Decimal(text))
    if kind is str and _CANONICAL.fullmatch(value):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise ValueError("not a number")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError("not a number") from None
    if not number.is_finite():
        raise ValueError("not a finite number")
    return _plain(number)


def _plain(number: Decimal) -> str:
    text = format(number, "f")
    return "0" if text in ("-0", "0", "-0.0") else text


def _as_int(value: Any) -> int:
    if type(value) is int:
        return value
    if isinstance(value, bool):
        raise ValueError("not a whole number")
    number = Decimal(decimal_string(value))
    if number != number.to_integral_value():
        raise ValueError("not a whole number")
    return int(number)


def _text(value: Any) -> str | None:
    kind = type(value)
    if kind is str:
        return value.strip() or None
    if value is None or kind is bool:
        return None
    if kind is int:
        return str(value)
    if kind is float:
        return decimal_string(value)
    return None


def _product_id(product: dict[str, Any]) -> str | None:
    return _text(product.get("product_id")) or _text(product.get("sku")) or _text(product.get("id"))


def _content(product: dict[str, Any], index: int | None, warnings: list[str]) -> Content:
    """One product; `index` is its place in `products` (None: the event is the product)."""
    get = product.get
    price = _parsed(get("price"), decimal_string, index, "price", warnings)
    quantity = _parsed(get("quantity"), _as_int, index, "quantity", warnings)
    return Content(_product_id(product), price, 1 if quantity is None else quantity,
                   _text(get("name")), _text(get("brand")), _text(get("category")))


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
    fields: dict[str, Any] = {}
    enrich = variant.enrich
    products, single = _products(props) if "products" in enrich else ((), False)
    contents = [_content(p, None if single else i, warnings) for i, p in enumerate(products)]

    value = _value(props, contents, warnings)
    if value is not None:
        fields["value"] = value
    currency = _text(get("currency"))
    if currency:
        currency = currency.upper()
        if _CURRENCY.match(currency):
            fields["currency"] = currency
        else:
            warnings.append("currency left out: not an ISO-4217 code")
    order_id = _text(get("order_id"))
    if order_id:
        fields["order_id"] = order_id

    if contents:
        ids, items = [], 0
        for c in contents:
            if c.id:
                ids.append(c.id)
            items += c.quantity or 0
        fields["contents"], fields["content_ids"], fields["num_items"] = contents, ids, items
        if single:
            for key, target in (("name", "content_name"), ("category", "content_category"), ("brand", "content_brand")):
                text = _text(get(key))
                if text:
                    fields[target] = text

    if "search" in enrich:
        query = _text(get("query"))
        if query is None and "content" in enrich:
            query = _text(get("destination"))
        if query:
            fields["search_string"] = query
    if "content" in enrich:
        name = _text(get("title")) or _text(get("destination"))
        if name is None and ev.type == "page":
            name = ev.title or None
        if name and "content_name" not in fields:
            fields["content_name"] = name
        category = _text(get("category")) or _text(get("section"))
        if category and "content_category" not in fields:
            fields["content_category"] = category
    return CustomData(**fields) if fields else None


def _value(props: dict[str, Any], contents: list[Content], warnings: list[str]) -> str | None:
    for key in ("value", "total", "revenue"):
        amount = props.get(key)
        if amount is None:
            continue
        try:
            return decimal_string(amount)
        except ValueError as exc:
            warnings.append(f"value left out: '{key}' is {exc}")
            return None
    if contents and all(c.item_price is not None for c in contents):
        total = sum((Decimal(c.item_price) * (c.quantity or 0) for c in contents), Decimal(0))
        return _plain(total)
    return None
