"""Personal and secret data out of URLs, before a URL is stored or sent.

A page URL travels to Pinterest as `event_source_url`, and with the referrer into the queue
and the debugger. `?email=jane@x.com&token=...` (a password-reset link, a sign-up
confirmation) would carry raw PII and secrets along. What goes:

- a query or fragment parameter whose name is personal or secret (the list below, and a
  source's own `url_params_to_remove`), or whose value holds an email address or is an
  international phone number; the same for matrix parameters (`;jsessionid=...`);
- the userinfo of the authority (`user:password@host`);
- a path segment, or a fragment without parameters, that holds an address or a number
  (`/account/jane@x.com/orders`, `#jane@x.com`): the segment becomes `redacted`.

Every part is judged decoded: percent-escapes are undone repeatedly (`%2540` is `%40` is `@`),
and a query value both with `+` as a space (forms) and as a plus (a literal `+1 415...`); see
delivery/pii.py for how that stays linear in the URL's length.
`epik` (Pinterest's click id) always stays, and so do `utm_*` parameters unless their value is
an address or a number (newsletters put the subscriber's address in utm_content). Everything
else of the URL is kept byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Collection

import re2

from delivery.pii import decoded, personal

# Parameter names, compared decoded and lowercased without "_", "-", "." and "[]".
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
# A name that contains one of these is secret whatever surrounds it (reset_password_token, jsessionid, ...).
SECRET_PARTS = ("password", "passwd", "token", "secret", "email", "apikey", "session")
REDACTED = "redacted"

# Cheap first looks, so that the usual URL is returned as it is. Anywhere in the URL: an
# address, an encoded "@", "%" or "+", a literal "+digit", matrix parameters. After the "?" or
# "#": a parameter name that may be personal. RE2: on a usual 90-character URL with a query it
# took 1.8 us where `re` took 16.6 us (an alternation of words, ignoring case), and 15 us where
# `re` took 2 ms on 8 KB.
_SUSPECT_ANYWHERE = re2.compile(r"@|%40|%25|%2[bB]|\+\d|;")
_SUSPECT_NAME = re2.compile(
    r"(?i)mail|phone|tel|mobile|cell|name|addr|street|zip|post|birth|dob|ssn|card|cvv|cvc|iban|pass|pwd|token|"
    r"secret|key|auth|code|session|sid|otp|sig")
# The same pattern over the UTF-8 bytes that re2 matches anyway (the same options and matches):
# given bytes, re2's Python wrapper skips mapping str offsets to bytes and back, 1 us of 2.4.
_SUSPECT_NAME_UTF8 = re2.compile(_SUSPECT_NAME.pattern.encode())
_SEGMENT_SUSPECT = re.compile(r"[@%+;]")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}")


_SEPARATORS = str.maketrans("", "", "_-.[]")


def _key(name: str) -> str:
    return decoded(name, plus_is_space=True).translate(_SEPARATORS).lower()


def _kept(part: str, extra: Collection[str]) -> bool:
    name, _, value = part.partition("=")
    key = _key(name)
    if key == "epik":
        return True
    if not key.startswith("utm") and (key in PERSONAL_NAMES or key in extra or any(p in key for p in SECRET_PARTS)):
        return False
    return not personal(value)


def _params(params: str, extra: Collection[str], separator: str = "&") -> str:
    return separator.join(part for part in params.split(separator) if part and _kept(part, extra))


def _segment(segment: str, extra: Collection[str]) -> str:
    """A path segment without its personal matrix parameters, or `redacted` when it is personal."""
    if not _SEGMENT_SUSPECT.search(segment):
        return segment
    name, semicolon, matrix = segment.partition(";")
    if semicolon:
        kept = _params(matrix, extra, ";")
        segment = name + (";" + kept if kept else "")
    return REDACTED if personal(name) else segment


def _path(path: str, extra: Collection[str]) -> str:
    return "/".join(_segment(segment, extra) for segment in path.split("/"))


def _fragment(fragment: str, extra: Collection[str]) -> str:
    """A fragment is a route with a query ("#/search?q=..."), parameters ("#access_token=..."),
    or a path-like route ("#/account/jane@x.com")."""
    route, question, query = fragment.partition("?")
    if question:
        kept = _params(query, extra)
        return _path(route, extra) + ("?" + kept if kept else "")
    if "=" in fragment and "/" not in fragment:
        return _params(fragment, extra)
    return _path(fragment, extra)


def scrub_url(url: str | None, extra: Collection[str] = ()) -> str | None:
    """`url` without personal or secret data (see the module's docstring)."""
    if not url:
        return url
    if not extra and not _suspect(url):
        return url
    extra = {_key(name) for name in extra}
    head, rest = _authority(url)
    rest, hash_mark, fragment = rest.partition("#")
    path, question, query = rest.partition("?")
    out = head + _path(path, extra)
    if question and (query := _params(query, extra)):
        out += "?" + query
    if hash_mark and (fragment := _fragment(fragment, extra)):
        out += "#" + fragment
    return out


def _suspect(url: str) -> bool:
    if ("@" in url or "%" in url or "+" in url or ";" in url) and _SUSPECT_ANYWHERE.search(url):
        return True
    mark = url.find("?")
    if mark < 0:
        mark = url.find("#")
    # after it, an escape may spell a personal name ("e%6Dail")
    return mark >= 0 and (url.find("%", mark) >= 0 or _SUSPECT_NAME_UTF8.search(url[mark:].encode()) is not None)


def _authority(url: str) -> tuple[str, str]:
    """(scheme://host[:port] without any userinfo, the rest of the URL)."""
    scheme_end = url.find("://")
    if scheme_end < 0 or not _SCHEME.fullmatch(url[:scheme_end]):
        return "", url
    start = scheme_end + 3
    end = next((i for i, c in enumerate(url[start:], start) if c in "/?#"), len(url))
    authority = url[start:end]
    return url[:start] + authority[authority.rfind("@") + 1:], url[end:]
