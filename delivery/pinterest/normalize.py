"""Pinterest's normalisation rules, one small function per `user_data` field.

Each normaliser takes one raw value and returns the normalised plain text, or raises
`Invalid` with a reason that never repeats the raw value (reasons end up in logs and
in the debugger, raw PII must not). `sha256` then hashes the result; a value that
already is a 64-hex SHA-256 digest is passed through lowercased (`prehashed`).

Bounded work: `_text` holds every value to its field's length (delivery/pii.py) before
anything else looks at it, phonenumbers included. Past that bound the patterns here are
linear anyway: single character classes, anchored bounded repeats, and hand-written
scanners where Python's `re` would backtrack (an address's shape, a phone's extension).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import date

import phonenumbers

from delivery.pii import MAX_LENGTH

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_WS = re.compile(r"\s+")
_NON_DIGIT = re.compile(r"\D")


class Invalid(ValueError):
    """A value that cannot be normalised; the message is safe to log."""


def is_sha256(value: str) -> bool:
    return len(value) == 64 and _SHA256_HEX.fullmatch(value) is not None


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _text(value: object, field: str) -> str:
    """The value as trimmed NFC text, once it is known to be within its field's length."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise Invalid(f"{field}: expected a string, got {type(value).__name__}")
    limit = MAX_LENGTH.get(field, 256)
    if type(value) is int and value.bit_length() > 4 * limit:  # str() of a huge int is itself slow
        raise Invalid(f"{field}: longer than {limit} characters")
    text = str(value)
    if len(text) > limit:
        raise Invalid(f"{field}: longer than {limit} characters")
    text = unicodedata.normalize("NFC", text).strip()
    if not text:
        raise Invalid(f"{field}: empty")
    return text


def email(value: object) -> str:
    # Whitespace is never part of an address (a pasted "jo @example.com" means "jo@example.com");
    # "Jane Doe <jane@x.com>" and "mailto:" carry one address.
    text = _named_address(_text(value, "em"))
    if text[:7].lower() == "mailto:":
        text = text[7:]
    text = _WS.sub("", text).lower()
    if not _address_shaped(text):
        raise Invalid("em: not an email address")
    return text


def _named_address(text: str) -> str:
    """The address inside "Name <address>", or the text as it is."""
    start = text.rfind("<")
    end = text.find(">", start + 1) if start >= 0 else -1
    inner = text[start + 1:end] if end > start else ""
    return inner if "@" in inner and not any(c.isspace() for c in inner) else text


def _address_shaped(text: str) -> bool:
    """local@domain.tld: one "@", no whitespace, a dot inside the domain (a scan, no regex)."""
    local, _, domain = text.partition("@")
    return (bool(local) and "@" not in domain and "." in domain[1:-1]
            and not any(c.isspace() for c in text))


_PHONE_SCHEMES = ("tel", "callto", "sms")
_EXTENSION_WORDS = ("extension", "ext.", "ext", "x", "#")


def _without_scheme(text: str) -> str:
    head, colon, rest = text.partition(":")
    return rest if colon and head.strip().lower() in _PHONE_SCHEMES else text


def _without_extension(text: str) -> str:
    """"+1 415 555 2671 ext. 12" without " ext. 12": up to six digits at the end, after one of
    the extension words (scanned from the end: linear, where a regex search backtracked)."""
    body = text.rstrip()
    digits = len(body) - len(body.rstrip("0123456789"))
    if not 1 <= digits <= 6:
        return text
    head = body[:-digits].rstrip()
    lowered = head.lower()
    for word in _EXTENSION_WORDS:
        if lowered.endswith(word):
            return head[:-len(word)].rstrip()
    return text


def phone(value: object, default_country: str | None = None) -> str:
    """The digits of the number's E.164 form (country code, no "+"): Pinterest's rule. A national
    number is completed from `default_country` (ISO-3166 alpha-2). Labels, schemes and symbols
    are removed ("Phone: +1 415 555 2671 (mobile)", "tel:+1-415-555-2671"), and so is an
    extension. "00" is the international prefix of most of the world and is read as "+". A
    leading zero that belongs to the number (Italy, Côte d'Ivoire) is kept, as E.164 keeps it."""
    text = _without_extension(_without_scheme(_text(value, "ph")))
    start = text.find("+")
    if start < 0:
        start = next((i for i, c in enumerate(text) if c.isdigit()), len(text))
    number_text = text[start:]
    compact = ("+" if number_text.startswith("+") else "") + _NON_DIGIT.sub("", number_text)
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
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]


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


def birthdate(value: object, default_country: str | None = None) -> str:
    """YYYYMMDD. Year first: 1990-07-04, 1990-7-4, 1990/07/04, 19900704, an ISO datetime. Year
    last: 04.07.1990 (dots: day first everywhere), and 07/04/1990 read month first for a source
    in the US (and the few countries that write dates its way), else day first; a reading that
    cannot be a date gives way to the other. Dates in the future are refused."""
    text = _text(value, "db")
    parsed = _date_of(text, (default_country or "").upper() in _MONTH_FIRST)
    if parsed is None:
        raise Invalid("db: not a date (use YYYY-MM-DD)")
    if parsed > date.today():
        raise Invalid("db: in the future")
    return parsed.strftime("%Y%m%d")


_MONTH_FIRST = frozenset({"US", "PH", "FM", "MH", "PW", "AS", "GU", "MP", "PR", "VI", "UM", "BZ"})
_YEAR_FIRST = re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[T ].*)?")
_YEAR_LAST = re.compile(r"(\d{1,2})([-/.])(\d{1,2})\2(\d{4})")


def _date_of(text: str, month_first: bool) -> date | None:
    candidates: list[tuple[int, int, int]] = []
    if re.fullmatch(r"\d{8}", text):
        candidates.append((int(text[:4]), int(text[4:6]), int(text[6:])))
    elif match := _YEAR_FIRST.fullmatch(text):
        candidates.append((int(match.group(1)), int(match.group(2)), int(match.group(3))))
    elif match := _YEAR_LAST.fullmatch(text):
        a, separator, b, year = match.groups()
        day_first = (int(year), int(b), int(a))
        month_first_reading = (int(year), int(a), int(b))
        candidates += [month_first_reading, day_first] if month_first and separator != "." else [day_first,
                                                                                                   month_first_reading]
    for year, month, day in candidates:
        try:
            return date(year, month, day)
        except ValueError:
            continue
    return None


def city(value: object) -> str:
    # Lowercase, without spaces or punctuation; letters of any script are kept.
    text = "".join(ch for ch in _text(value, "ct").lower() if ch.isalnum())
    if not text:
        raise Invalid("ct: no letters")
    return text


def state(value: object) -> str:
    """Two letters, lowercase: "CA", "California" and the ISO 3166-2 form "US-CA" give "ca"."""
    text = _text(value, "st").lower()
    iso = re.fullmatch(r"[a-z]{2}-([a-z0-9]{1,3})", text)
    if iso:
        text = iso.group(1)
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
    """ISO 3166-1 alpha-2, lowercase, from alpha-2, alpha-3 ("GBR") or a common name."""
    text = _text(value, "country").lower()
    text = _COUNTRY_NAMES.get(text) or _ALPHA3.get(text) or text
    if not re.fullmatch(r"[a-z]{2}", text):
        raise Invalid("country: expected an ISO-3166 alpha-2 code")
    return text


def external_id(value: object) -> str:
    # Advertiser ids may be case-sensitive: trimmed only.
    return _text(value, "external_id")


def maid(value: object) -> str:
    text = _text(value, "hashed_maids").lower()
    if not text.replace("-", "").strip("0"):
        raise Invalid("hashed_maids: all zeros (the device limits ad tracking: no identifier)")
    return text


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

# ISO 3166-1 alpha-3 -> alpha-2, for every assigned code.
_ALPHA3 = dict(pair.split(":") for pair in (
    "abw:aw afg:af ago:ao aia:ai ala:ax alb:al and:ad are:ae arg:ar arm:am asm:as ata:aq atf:tf atg:ag aus:au "
    "aut:at aze:az bdi:bi bel:be ben:bj bes:bq bfa:bf bgd:bd bgr:bg bhr:bh bhs:bs bih:ba blm:bl blr:by blz:bz "
    "bmu:bm bol:bo bra:br brb:bb brn:bn btn:bt bvt:bv bwa:bw caf:cf can:ca cck:cc che:ch chl:cl chn:cn civ:ci "
    "cmr:cm cod:cd cog:cg cok:ck col:co com:km cpv:cv cri:cr cub:cu cuw:cw cxr:cx cym:ky cyp:cy cze:cz deu:de "
    "dji:dj dma:dm dnk:dk dom:do dza:dz ecu:ec egy:eg eri:er esh:eh esp:es est:ee eth:et fin:fi fji:fj flk:fk "
    "fra:fr fro:fo fsm:fm gab:ga gbr:gb geo:ge ggy:gg gha:gh gib:gi gin:gn glp:gp gmb:gm gnb:gw gnq:gq grc:gr "
    "grd:gd grl:gl gtm:gt guf:gf gum:gu guy:gy hkg:hk hmd:hm hnd:hn hrv:hr hti:ht hun:hu idn:id imn:im ind:in "
    "iot:io irl:ie irn:ir irq:iq isl:is isr:il ita:it jam:jm jey:je jor:jo jpn:jp kaz:kz ken:ke kgz:kg khm:kh "
    "kir:ki kna:kn kor:kr kwt:kw lao:la lbn:lb lbr:lr lby:ly lca:lc lie:li lka:lk lso:ls ltu:lt lux:lu lva:lv "
    "mac:mo maf:mf mar:ma mco:mc mda:md mdg:mg mdv:mv mex:mx mhl:mh mkd:mk mli:ml mlt:mt mmr:mm mne:me mng:mn "
    "mnp:mp moz:mz mrt:mr msr:ms mtq:mq mus:mu mwi:mw mys:my myt:yt nam:na ncl:nc ner:ne nfk:nf nga:ng nic:ni "
    "niu:nu nld:nl nor:no npl:np nru:nr nzl:nz omn:om pak:pk pan:pa pcn:pn per:pe phl:ph plw:pw png:pg pol:pl "
    "pri:pr prk:kp prt:pt pry:py pse:ps pyf:pf qat:qa reu:re rou:ro rus:ru rwa:rw sau:sa sdn:sd sen:sn sgp:sg "
    "sgs:gs shn:sh sjm:sj slb:sb sle:sl slv:sv smr:sm som:so spm:pm srb:rs ssd:ss stp:st sur:sr svk:sk svn:si "
    "swe:se swz:sz sxm:sx syc:sc syr:sy tca:tc tcd:td tgo:tg tha:th tjk:tj tkl:tk tkm:tm tls:tl ton:to tto:tt "
    "tun:tn tur:tr tuv:tv twn:tw tza:tz uga:ug ukr:ua umi:um ury:uy usa:us uzb:uz vat:va vct:vc ven:ve vgb:vg "
    "vir:vi vnm:vn vut:vu wlf:wf wsm:ws yem:ye zaf:za zmb:zm zwe:zw"
).split())
