"""Personal and secret query parameters out of URLs, before a URL is stored or sent.

A page URL travels to Pinterest as `event_source_url`, and with the referrer into the queue
and the debugger. `?email=jane@x.com&token=...` (a password-reset link, a sign-up
confirmation) would carry raw PII and secrets along. A parameter goes when its name is
personal or secret (the list below, and a source's own `url_params_to_remove`), or when its
value looks like an email address or an international phone number. `epik` (Pinterest's
click id) always stays, and so do `utm_*` parameters unless their value is an address or a
number (newsletters put the subscriber's address in utm_content). The fragment is treated the same way when it holds
parameters (`#access_token=...`). Everything else of the URL is kept byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from urllib.parse import unquote_plus

# Parameter names, compared lowercased without "_", "-", "." and "[]".
PERSONAL_NAMES = frozenset({
    "email", "emailaddress", "mail", "phone", "phonenumber", "tel", "telephone", "mobile", "cell",
    "name", "firstname", "lastname", "fullname", "givenname", "surname", "familyname",
    "address", "address1", "address2", "street", "addressline1", "addressline2", "postcode", "postalcode",
    "zip", "zipcode", "dob", "birthday", "birthdate", "dateofbirth", "ssn", "creditcard", "cardnumber", "cc",
    "cvv", "cvc", "iban",
    "password", "passwd", "pwd", "pass", "token", "accesstoken", "refreshtoken", "idtoken", "authtoken",
    "auth", "authorization", "apikey", "key", "secret", "clientsecret", "code", "session", "sessionid",
    "sid", "otp", "signature", "sig",
})
# A name that contains one of these is secret whatever surrounds it (reset_password_token, ...).
SECRET_PARTS = ("password", "passwd", "token", "secret", "email", "apikey", "session")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_PHONE = re.compile(r"\+\d[\d\s().-]{6,}\d")
# A cheap first look: a query without any of these keeps its URL as it is (the usual case).
_SUSPECT = re.compile(
    r"(?i)mail|phone|tel|mobile|cell|name|addr|street|zip|post|birth|dob|ssn|card|cvv|cvc|iban|pass|pwd|token|"
    r"secret|key|auth|code|session|sid|otp|sig|@|%40|\+\d|%2b\d")


def _key(name: str) -> str:
    return re.sub(r"[_\-.\[\]]", "", unquote_plus(name)).lower()


def _kept(part: str, extra: Collection[str]) -> bool:
    name, _, value = part.partition("=")
    key = _key(name)
    if key == "epik":
        return True
    if not key.startswith("utm") and (key in PERSONAL_NAMES or key in extra or any(p in key for p in SECRET_PARTS)):
        return False
    text = unquote_plus(value)
    return not (_EMAIL.search(text) or _PHONE.fullmatch(text.strip()))


def _filtered(params: str, extra: Collection[str]) -> str:
    return "&".join(part for part in params.split("&") if part and _kept(part, extra))


def scrub_url(url: str | None, extra: Collection[str] = ()) -> str | None:
    """`url` without personal or secret parameters (see the module's docstring)."""
    if not url:
        return url
    question, hash_mark = url.find("?"), url.find("#")
    if question < 0 and (hash_mark < 0 or "=" not in url[hash_mark:]):
        return url
    if hash_mark >= 0 and question > hash_mark:
        question = -1  # a "?" inside the fragment
    base = url[:question if question >= 0 else (hash_mark if hash_mark >= 0 else len(url))]
    query = url[question + 1:hash_mark if hash_mark >= 0 else len(url)] if question >= 0 else None
    fragment = url[hash_mark + 1:] if hash_mark >= 0 else None
    if not extra and not _SUSPECT.search(url, len(base)):
        return url
    extra = {_key(name) for name in extra}
    if query is not None:
        query = _filtered(query, extra)
    if fragment is not None and "=" in fragment:
        fragment = _filtered(fragment, extra)
    return base + (f"?{query}" if query else "") + (f"#{fragment}" if fragment else "")
