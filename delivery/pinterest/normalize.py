"""Pinterest's normalisation rules, one small function per `user_data` field.

Each normaliser takes one raw value and returns the normalised plain text, or raises
`Invalid` with a reason that never repeats the raw value (reasons end up in logs and
in the debugger, raw PII must not). `sha256` then hashes the result; a value that
already is a 64-hex SHA-256 digest is passed through lowercased (`prehashed`).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import date, datetime

import phonenumbers

_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
_WS = re.compile(r"\s+")
_NON_DIGIT = re.compile(r"\D")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class Invalid(ValueError):
    """A value that cannot be normalised; the message is safe to log."""


def is_sha256(value: str) -> bool:
    return len(value) == 64 and _SHA256_HEX.match(value) is not None


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _text(value: object, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise Invalid(f"{field}: expected a string, got {type(value).__name__}")
    text = unicodedata.normalize("NFC", str(value)).strip()
    if not text:
        raise Invalid(f"{field}: empty")
    return text


def email(value: object) -> str:
    # Whitespace is never part of an address (a pasted "jo @example.com" means "jo@example.com").
    text = _WS.sub("", _text(value, "em")).lower()
    if not _EMAIL.match(text):
        raise Invalid("em: not an email address")
    return text


def phone(value: object, default_country: str | None = None) -> str:
    """Digits only, with the country code, no leading zeros (Pinterest's rule).

    A national number is completed from `default_country` (ISO-3166 alpha-2); `00` is
    the international prefix used in most of the world and is read as `+`.
    """
    text = _text(value, "ph")
    compact = re.sub(r"[\s\-.()/]", "", text)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    region = default_country.upper() if default_country else None
    if not compact.startswith("+") and not region:
        raise Invalid("ph: no country code and the source has no default_country")
    try:
        number = phonenumbers.parse(compact, region)
    except phonenumbers.NumberParseException:
        raise Invalid("ph: not a phone number") from None
    if phonenumbers.is_possible_number_with_reason(number) != phonenumbers.ValidationResult.IS_POSSIBLE:
        raise Invalid("ph: not a possible phone number for its country")
    return f"{number.country_code}{number.national_number}"


def name(value: object, field: str = "fn") -> str:
    return _WS.sub(" ", _text(value, field)).lower()


def gender(value: object) -> str:
    text = _text(value, "ge").lower()
    code = _GENDERS.get(text)
    if code is None:
        raise Invalid("ge: expected f, m or n")
    return code


_GENDERS = {
    **dict.fromkeys(("f", "female", "woman", "w"), "f"),
    **dict.fromkeys(("m", "male", "man"), "m"),
    **dict.fromkeys(("n", "non-binary", "nonbinary", "non binary", "x", "other"), "n"),
}


def birthdate(value: object) -> str:
    """YYYYMMDD from an ISO date, an ISO datetime, YYYY/MM/DD or YYYYMMDD."""
    text = _text(value, "db")
    digits = _NON_DIGIT.sub("", text[:10])
    try:
        if len(digits) == 8:
            parsed = date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
        else:
            parsed = datetime.fromisoformat(text).date()
    except ValueError:
        raise Invalid("db: not a date (use YYYY-MM-DD)") from None
    return parsed.strftime("%Y%m%d")


def city(value: object) -> str:
    # Lowercase, without spaces or punctuation; letters of any script are kept.
    text = "".join(ch for ch in _text(value, "ct").lower() if ch.isalnum())
    if not text:
        raise Invalid("ct: no letters")
    return text


def state(value: object) -> str:
    text = _text(value, "st").lower()
    text = _US_STATES.get(re.sub(r"[^a-z ]", "", text), text)
    text = re.sub(r"[^a-z]", "", text)
    if len(text) != 2:
        raise Invalid("st: expected a two-letter state code")
    return text


def zip_code(value: object) -> str:
    """Digits only (US ZIP+4 keeps the first five); postcodes with letters (UK, CA)
    are kept lowercase without spaces, since digits alone would not identify them."""
    text = _text(value, "zp").lower()
    if re.search(r"[^\W\d_]", text):
        compact = re.sub(r"[\W_]", "", text)
        if not compact:
            raise Invalid("zp: empty")
        return compact
    digits = _NON_DIGIT.sub("", text)
    if not digits:
        raise Invalid("zp: no digits")
    return digits[:5] if re.fullmatch(r"\d{5}[-\s]\d{4}", text) else digits


def country(value: object) -> str:
    text = _text(value, "country").lower()
    text = _COUNTRY_NAMES.get(text, text)
    if not re.fullmatch(r"[a-z]{2}", text):
        raise Invalid("country: expected an ISO-3166 alpha-2 code")
    return text


def external_id(value: object) -> str:
    # Advertiser ids may be case-sensitive: trimmed only.
    return _text(value, "external_id")


def maid(value: object) -> str:
    return _text(value, "hashed_maids").lower()


def prehashed(value: object) -> str | None:
    """The lowercased digest when `value` already is a SHA-256 hex string."""
    if isinstance(value, str):
        text = value.strip()
        if is_sha256(text):
            return text.lower()
    return None


_US_STATES = {
    "alabama": "al", "alaska": "ak", "arizona": "az", "arkansas": "ar", "california": "ca",
    "colorado": "co", "connecticut": "ct", "delaware": "de", "district of columbia": "dc",
    "florida": "fl", "georgia": "ga", "hawaii": "hi", "idaho": "id", "illinois": "il",
    "indiana": "in", "iowa": "ia", "kansas": "ks", "kentucky": "ky", "louisiana": "la",
    "maine": "me", "maryland": "md", "massachusetts": "ma", "michigan": "mi", "minnesota": "mn",
    "mississippi": "ms", "missouri": "mo", "montana": "mt", "nebraska": "ne", "nevada": "nv",
    "new hampshire": "nh", "new jersey": "nj", "new mexico": "nm", "new york": "ny",
    "north carolina": "nc", "north dakota": "nd", "ohio": "oh", "oklahoma": "ok", "oregon": "or",
    "pennsylvania": "pa", "rhode island": "ri", "south carolina": "sc", "south dakota": "sd",
    "tennessee": "tn", "texas": "tx", "utah": "ut", "vermont": "vt", "virginia": "va",
    "washington": "wa", "west virginia": "wv", "wisconsin": "wi", "wyoming": "wy",
}

_COUNTRY_NAMES = {
    "united states": "us", "united states of america": "us", "usa": "us",
    "united kingdom": "gb", "great britain": "gb", "uk": "gb", "england": "gb",
    "germany": "de", "deutschland": "de", "france": "fr", "canada": "ca", "australia": "au",
    "spain": "es", "españa": "es", "italy": "it", "italia": "it", "netherlands": "nl",
    "ireland": "ie", "mexico": "mx", "méxico": "mx", "brazil": "br", "brasil": "br",
    "japan": "jp", "india": "in",
}
