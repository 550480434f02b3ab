"""Finding personal data in text a stranger sends, in bounded work.

Three rules make every look at untrusted text cost work linear in its length, whatever it holds:

- A value is held to the length of its kind before anything parses or normalises it
  (`MAX_LENGTH`): an email address by RFC 5321 (254), a phone number, a name, ... A value over its
  bound is left out with a note; no library (phonenumbers included) ever sees it.
- Text with no small bound (a property value under any key, a URL, a page title: up to an
  event's 32 KB) is searched with RE2, whose matching is linear in the text by construction (an
  automaton, no backtracking). Python's `re` backtracks: its email pattern took 38 s on
  "a"x15000 + "@" + "a"x15000. The address pattern reads percent-escapes itself ("%40" and
  "%2540" are "@"), so long text is never decoded in Python to be judged.
- Text is percent-decoded only when it is short (`DECODE_LIMIT`): decoding runs a Python step
  per escape, and a phone number is short anyway.
"""

from __future__ import annotations

from urllib.parse import unquote, unquote_plus

import re2

# The longest value each kind may have (characters), checked before any other work.
MAX_LENGTH = {
    "em": 254,  # RFC 5321: a forward path of 256 octets, less the angle brackets
    "ph": 64,  # E.164 is 15 digits; room for a label, a scheme, separators and an extension
    "fn": 128, "ln": 128, "name": 256,
    "ge": 32,
    "db": 64,
    "ct": 128, "st": 64, "zp": 32, "country": 64,
    "hashed_maids": 128,  # a 36-character UUID, or its 64-hex SHA-256
    "key": 256,  # a property or trait name
}
DECODE_LIMIT = 256  # characters of text that is percent-decoded to be judged
DECODE_ROUNDS = 4  # "%252540" is three rounds from "@"; each round only shortens the text

# RE2 (linear time). An address: a local part, "@", a domain with a dot and a top-level domain of
# letters. Escaped, "@" and "." may be percent-escaped once or more ("%40", "%2540"); "%" is an
# address character, so escapes around them are read too. A phone number: "+", a digit, at
# least eight digits and separators in all, ending in a digit; `tel:` may lead.
_ADDRESS_CHAR = r"[^@\s<>\"'(),;:]"
_EMAIL = re2.compile(rf"{_ADDRESS_CHAR}+@{_ADDRESS_CHAR}+\.[A-Za-z]{{2,}}")
_EMAIL_ESCAPED = re2.compile(rf"{_ADDRESS_CHAR}+(?:@|%(?:25)*40){_ADDRESS_CHAR}+(?:\.|%(?:25)*2[eE])[A-Za-z]{{2,}}")
_PHONE = re2.compile(r"(?:tel:)?\+\d[\d\s().-]{6,}\d")
_PHONE_IN = re2.compile(r"\+\d[\d\s().-]{6,}\d")
_REDACTED = "[redacted]"


def decoded(text: str, plus_is_space: bool = False) -> str:
    """`text` with its percent-escapes undone, again while more appear (a few rounds at most).
    Only for short text (DECODE_LIMIT): longer text is returned as it is."""
    if len(text) > DECODE_LIMIT:
        return text
    unescape = unquote_plus if plus_is_space else unquote
    for _ in range(DECODE_ROUNDS):
        if "%" not in text and not (plus_is_space and "+" in text):
            break
        new = unescape(text)
        if new == text:
            break
        text, plus_is_space = new, False  # a "+" that decoding made is a plus
    return text


def _escaped_at(text: str) -> bool:
    """`text` may hold a percent-escaped "@": "%40", or "%2540" escaped again, any number of times."""
    return "%" in text and ("%40" in text or "2540" in text)


def find_email(text: str) -> str | None:
    """The first email address in `text` as written (perhaps percent-escaped), or None."""
    found = _EMAIL.search(text) if "@" in text else None
    if found is None and _escaped_at(text):
        found = _EMAIL_ESCAPED.search(text)
    return found.group(0) if found else None


def phone_shaped(text: str) -> bool:
    """`text` is an international phone number and nothing else ("+1 415-555 2671", "tel:+44...")."""
    return _PHONE.fullmatch(text.strip()) is not None


def phone_number(text: str) -> str | None:
    """`text` read as a phone number: as it is, percent-decoded, and decoded as a form field
    ("+" a space, "%2B1+415..."). None when it is none of these."""
    escaped = "%" in text or "+" in text
    for candidate in (text, decoded(text), decoded(text, plus_is_space=True)) if escaped else (text,):
        if "+" in candidate and phone_shaped(candidate):
            return candidate
    return None


def personal(text: str) -> bool:
    """`text` holds an email address or is a phone number, perhaps percent-escaped."""
    return find_email(text) is not None or phone_number(text) is not None


def redact_text(text: str) -> str:
    """Free text (a page title) with every email address and phone number in it replaced."""
    if "@" in text:
        text = _EMAIL.sub(_REDACTED, text)
    if _escaped_at(text):
        text = _EMAIL_ESCAPED.sub(_REDACTED, text)
    if "+" in text:
        text = _PHONE_IN.sub(_REDACTED, text)
    return text
