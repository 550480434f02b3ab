"""Turn Segment-style traits and properties into hashed identity signals.

Used by the edge's one scrubbing pass (delivery/pinterest/scrub.py), so raw PII stops there:
every recognised PII value is normalised by Pinterest's rules, SHA-256 hashed into an
`Identity`, and replaced in the event by `sha256:<hex>` (so the debugger shows it arrived
without showing it). The work is bounded whatever an event holds: a few values per field
(MAX_VALUES_PER_FIELD; the rest are left out unread), every value held to its field's length
before it is normalised, addresses and numbers found with linear-time matching (delivery/pii.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from delivery.events import IDENTITY_FIELDS, MAX_VALUES_PER_FIELD, Identity
from delivery.pii import MAX_LENGTH, decoded, find_email, phone_number, phone_shaped
from delivery.pinterest import normalize as norm
from delivery.urls import scrub_url

NO_IDENTITY = Identity()  # shared: events are never changed after they are built


def _key(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


# Keys that identify a person wherever they appear (traits and properties).
_PERSON_KEYS = {
    "email": "em", "emails": "em", "emailaddress": "em", "emailaddr": "em", "mail": "em",
    "customeremail": "em", "useremail": "em", "contactemail": "em", "billingemail": "em", "shippingemail": "em",
    "phone": "ph", "phones": "ph", "phonenumber": "ph", "mobile": "ph", "tel": "ph", "telephone": "ph",
    "telephonenumber": "ph", "mobilephone": "ph", "mobilenumber": "ph", "cell": "ph", "cellphone": "ph",
    "customerphone": "ph", "userphone": "ph", "contactphone": "ph", "billingphone": "ph", "shippingphone": "ph",
    "firstname": "fn", "givenname": "fn",
    "lastname": "ln", "surname": "ln", "familyname": "ln",
    "birthday": "db", "birthdate": "db", "dateofbirth": "db", "dob": "db",
}
# Keys that are the user's own location or gender only inside traits (in a travel
# event's properties, `city` is the destination, not PII).
_TRAIT_ONLY_KEYS = {
    "gender": "ge", "city": "ct", "state": "st", "postalcode": "zp", "zip": "zp",
    "zipcode": "zp", "country": "country",
}
# PII with no Pinterest field: dropped.
_DROP_KEYS = {"street", "street1", "street2", "line1", "line2", "address1", "address2", "ssn"}
# URLs (Segment's page properties): their personal and secret parts go (delivery/urls.py).
_URL_KEYS = {"url", "referrer", "search", "href", "link", "path"}

_NORMALISERS: dict[str, Callable[..., str]] = {
    "em": norm.email, "ph": norm.phone, "fn": lambda v: norm.name(v, "fn"),
    "ln": lambda v: norm.name(v, "ln"), "ge": norm.gender, "db": norm.birthdate,
    "ct": norm.city, "st": norm.state, "zp": norm.zip_code, "country": norm.country,
    "hashed_maids": norm.maid,
}
_BY_COUNTRY = frozenset({"ph", "db"})


MAX_DEPTH = 32  # levels of nesting an event's properties or traits may have
MAX_KEY = MAX_LENGTH["key"]


class TooDeep(ValueError):
    """Nested deeper than MAX_DEPTH; `path` lists the keys from the outside in, below `root`
    (properties, traits, context.traits)."""

    def __init__(self) -> None:
        super().__init__(f"nested deeper than {MAX_DEPTH} levels")
        self.path: list[str | int] = []
        self.root = ""

    @property
    def field(self) -> str:
        return self.root + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in self.path)


class IdentityBuilder(msgspec.Struct, gc=False):
    """Collects hashed values per field, and the reasons for what was left out. (A Struct: one
    is built for every event, and a Struct is built in C.)"""

    default_country: str | None = None
    values: dict[str, list[str]] = {}
    notes: list[str] = []
    state: str | None = None  # the person's state as normalised (never stored: limited data processing)
    suspect: bool = False  # the request's body holds an "@" or a "+": values may be addresses or numbers
    url_params: list[str] = []  # the source's own url_params_to_remove

    def add(self, field: str, raw: Any, depth: int = 1) -> Any:
        """Hash `raw` (a value or a list of values) into `field`; returns what the event
        keeps in its place."""
        if isinstance(raw, list):
            if depth > MAX_DEPTH:
                raise TooDeep
            out = []
            for i, item in enumerate(raw):
                try:
                    out.append(self.add(field, item, depth + 1))
                except TooDeep as exc:
                    exc.path.insert(0, i)
                    raise
            return out
        if raw is None or raw == "":
            return raw
        bucket = self.values.setdefault(field, [])
        if len(bucket) >= MAX_VALUES_PER_FIELD:  # not even read: a list of thousands costs nothing
            self.note(f"{field}: more than {MAX_VALUES_PER_FIELD} values; the rest were left out")
            return LEFT_OUT
        digest = norm.prehashed(raw)
        if digest is None:
            try:
                if field in _BY_COUNTRY:  # read by the source's country: national numbers, dates
                    text = _NORMALISERS[field](raw, self.default_country)
                else:
                    text = _NORMALISERS[field](raw)
            except norm.Invalid as exc:
                self.notes.append(f"{exc} (left out)")
                return "[invalid]"
            digest = norm.sha256(text)
            if field == "st":
                self.state = text
        if digest not in bucket:
            bucket.append(digest)
        return f"sha256:{digest}"

    def redacted(self, value: str) -> str:
        """A value under a key that says nothing: when it holds an email address or is an
        international phone number, read with its percent-escapes undone, its digest
        ("sha256:<hex>") takes its place. Not added to the person's identity: whose address it
        is, the key does not say."""
        found = find_email(value)
        number = None if found else phone_number(value)
        raw = found or number
        if raw is None:
            return value
        try:
            text = norm.email(decoded(raw)) if found else norm.phone(raw, self.default_country)
        except norm.Invalid:
            text = raw.strip()
        self.notes.append(f"{'an email address' if found else 'a phone number'} under an unrecognised key "
                          "was replaced by its SHA-256")
        return f"sha256:{norm.sha256(text)}"

    def note(self, text: str) -> None:
        """Say once what was left out and why (never a raw value)."""
        if text not in self.notes:
            self.notes.append(text)

    def identity(self) -> Identity:
        if not self.values:
            return NO_IDENTITY
        return Identity(**{f: v for f, v in self.values.items() if f in IDENTITY_FIELDS})


LEFT_OUT = "[left out]"
_SHAPED_STARTS = ("+", "tel:")


def _shaped(value: Any) -> bool:
    """A string that may be an email address or an international phone number, perhaps
    percent-encoded (cheap)."""
    return type(value) is str and ("@" in value or "%" in value or value.startswith(_SHAPED_STARTS))


_KINDS: tuple[dict[str, str | None], dict[str, str | None]] = ({}, {})  # by `traits`: key -> kind
_PLAIN: tuple[set[str], set[str]] = (set(), set())  # by `traits`: the keys of kind None
_MAX_KINDS = 4096
_MAX_CACHED_KEY = 64  # longer keys are classified each time: the cache stays under a megabyte
_UNKNOWN = "\0unclassified"  # a str no kind is named: a lookup's answer keeps the type str | None
_CONTAINERS = frozenset({dict, list})


def _classify(key: str, traits: bool) -> str | None:
    """What a key holds: a Pinterest field, "drop", "url", "name", "address", or None (not PII)."""
    if not isinstance(key, str):
        return None
    k = _key(key)
    field = _PERSON_KEYS.get(k) or (_TRAIT_ONLY_KEYS.get(k) if traits else None)
    if field:
        return field
    if k in _DROP_KEYS:
        return "drop"
    if k in _URL_KEYS:
        return "url"
    if k == "address":
        return "address"
    if traits and k == "name":
        return "name"
    return None


def _learn(key: str, traits: bool) -> str | None:
    """_classify, remembered in _KINDS: the same few keys come with every event, and a plain
    dict look-up in scrub() is much cheaper than lru_cache's two-argument key. Bounded in bytes:
    at most _MAX_KINDS keys of at most _MAX_CACHED_KEY characters."""
    kind = _classify(key, traits)
    if type(key) is str and len(key) <= _MAX_CACHED_KEY and not _shaped(key):  # plain() must never skip it
        kinds, plain = _KINDS[traits], _PLAIN[traits]
        if len(kinds) >= _MAX_KINDS:
            kinds.clear()  # hostile traffic inventing keys cannot grow it without bound
            plain.clear()
        kinds[key] = kind
        if kind is None:
            plain.add(key)
    return kind


def plain(obj: dict, traits: bool, suspect: bool = False) -> bool:
    """The usual properties: only keys known to hold no PII, nothing nested (checked in C), and,
    when the request's body could hold one, no value shaped like an address or a number."""
    return _PLAIN[traits].issuperset(obj) and _CONTAINERS.isdisjoint(map(type, obj.values())) and not (
        suspect and any(map(_shaped, obj.values())))


def scrub(obj: Any, builder: IdentityBuilder, traits: bool, depth: int = 1) -> Any:
    """`obj` with PII values hashed into `builder` and replaced by their digest. Works in place:
    the event was decoded for this request and nobody else holds it. Raises TooDeep past
    MAX_DEPTH levels (the path is filled in on the way out: no cost when nothing is wrong)."""
    if depth > MAX_DEPTH:
        raise TooDeep
    kind_of_obj = type(obj)
    if kind_of_obj is list:
        return _scrub_list(obj, builder, traits, depth)
    if kind_of_obj is not dict:
        return obj
    if plain(obj, traits, builder.suspect):
        return obj
    drop, renamed, full_name = [], [], None
    kinds = _KINDS[traits]
    for key, value in obj.items():
        kind = kinds.get(key, _UNKNOWN)
        if kind is _UNKNOWN:
            if len(key) > MAX_KEY:  # a name no site uses: left out, with its value, unread
                drop.append(key)
                builder.note(f"a property name longer than {MAX_KEY} characters was left out")
                continue
            kind = _learn(key, traits)
            if kind is None and builder.suspect and _shaped(key):  # an address used as a name
                hashed = builder.redacted(key)
                if hashed != key:
                    renamed.append((key, hashed))
        try:
            if kind is None:
                if type(value) is dict or type(value) is list:
                    obj[key] = scrub(value, builder, traits, depth + 1)
                elif builder.suspect and _shaped(value):
                    obj[key] = builder.redacted(value)
            elif kind == "url":
                if type(value) is str:
                    obj[key] = scrub_url(value, builder.url_params)
            elif kind == "drop" or (kind == "address" and isinstance(value, str)):
                drop.append(key)  # PII without a Pinterest field (street lines, one-line addresses)
            elif kind == "address":
                obj[key] = scrub(value, builder, True, depth + 1) if isinstance(value, dict) else value
            elif kind == "name":
                if isinstance(value, str):
                    full_name = value
                    obj[key] = "[hashed]"
            elif not isinstance(value, dict):
                obj[key] = builder.add(kind, value, depth + 1)
            else:
                obj[key] = scrub(value, builder, traits, depth + 1)
        except TooDeep as exc:
            exc.path.insert(0, key)
            raise
    for key in drop:
        del obj[key]
    for key, hashed in renamed:
        obj[hashed] = obj.pop(key)
    if full_name:
        _split_full_name(full_name, builder)
    return obj


def _scrub_list(obj: list, builder: IdentityBuilder, traits: bool, depth: int) -> list:
    for i, item in enumerate(obj):
        if type(item) is dict or type(item) is list:
            try:
                obj[i] = scrub(item, builder, traits, depth + 1)
            except TooDeep as exc:
                exc.path.insert(0, i)
                raise
        elif builder.suspect and _shaped(item):
            obj[i] = builder.redacted(item)
    return obj


def _split_full_name(full: str, builder: IdentityBuilder) -> None:
    """Segment's `name` trait: first and last word become fn and ln unless given apart."""
    if len(full) > MAX_LENGTH["name"]:
        builder.note(f"name: longer than {MAX_LENGTH['name']} characters (left out)")
        return
    parts = full.split()
    if len(parts) >= 2:
        if "fn" not in builder.values:
            builder.add("fn", parts[0])
        if "ln" not in builder.values:
            builder.add("ln", parts[-1])


def hashed_user_id(user_id: str | None, default_country: str | None = None) -> str | None:
    """A userId that is an email address or an international phone number is PII: only its
    digest is kept (of the address, or of the number's E.164 digits, as Pinterest's em and ph)."""
    if not user_id:
        return user_id
    if "@" in user_id:
        try:
            return norm.sha256(norm.email(user_id))
        except norm.Invalid:
            return norm.sha256(user_id.strip())
    if user_id.startswith(_SHAPED_STARTS) and phone_shaped(user_id):
        try:
            return norm.sha256(norm.phone(user_id, default_country))
        except norm.Invalid:
            return norm.sha256(user_id.strip())
    return user_id
