"""First-party identity at the edge: client address, Pinterest click id, cookies (design section 4)."""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from urllib.parse import parse_qs, urlsplit

DFID = "_dfid"
PIN_UNAUTH = "_pin_unauth"
EPIK = "_epik"
CONSENT = "_df_consent"
DAY = 24 * 3600
_MAX_EPIK = 512


class ProxyTrust:
    """Which peers may tell us the client's address (SIGNAL_TRUSTED_PROXIES)."""

    def __init__(self, networks) -> None:
        self.networks = list(networks)
        self.trusted = lru_cache(maxsize=4096)(self._trusted)  # peers repeat; networks never change

    def _trusted(self, address: str) -> bool:
        ip = _ip(address)
        return ip is not None and any(ip in net for net in self.networks)

    def client_ip(self, peer: str | None, forwarded_for: str | None) -> str | None:
        """The right-most X-Forwarded-For hop that is not a trusted proxy, but only when
        the peer itself is trusted; otherwise the peer (a client cannot spoof its IP)."""
        peer = plain_ip(peer)
        if not peer or not forwarded_for or not self.trusted(peer):
            return peer
        hops = [_strip_port(h.strip()) for h in forwarded_for.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self.trusted(hop):
                return plain_ip(hop) if _ip(hop) else peer
        return plain_ip(hops[0]) if hops and _ip(hops[0]) else peer

    def scheme(self, peer: str | None, scheme: str, forwarded_proto: str | None) -> str:
        if forwarded_proto and peer and self.trusted(peer):
            return forwarded_proto.split(",")[0].strip().lower()
        return scheme


def _strip_port(hop: str) -> str:
    if hop.startswith("["):  # [v6]:port
        return hop[1:hop.find("]")] if "]" in hop else hop
    if hop.count(":") == 1:  # v4:port
        return hop.split(":")[0]
    return hop


@lru_cache(maxsize=8192)
def _ip(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address, with IPv4-mapped IPv6 (`::ffff:192.0.2.1`, from dual-stack sockets) as IPv4."""
    if text is None:  # (cached like any other answer)
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    return ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip


def valid_ip(text: str) -> bool:
    return _ip(text) is not None


@lru_cache(maxsize=8192)
def plain_ip(text: str | None) -> str | None:
    ip = _ip(text) if text else None
    return str(ip) if ip else text


def epik_from_url(url: str | None) -> str | None:
    if not url or "epik=" not in url:
        return None
    try:
        query = urlsplit(url).query if "?" in url or "://" in url else url.lstrip("?")
    except ValueError:
        return None
    return epik_from_query(query)


def epik_from_query(query: str | None) -> str | None:
    if not query or "epik=" not in query:
        return None
    values = parse_qs(query.lstrip("?")).get("epik")
    value = values[-1].strip() if values else ""
    return value[:_MAX_EPIK] or None


COOKIE_RULES = {
    # name: (max age, HttpOnly)
    DFID: (400 * DAY, True),
    PIN_UNAUTH: (365 * DAY, False),  # a Pinterest Tag running during a migration may read it
    EPIK: (365 * DAY, False),
}
ADVERTISING_COOKIES = (PIN_UNAUTH, EPIK)  # written only with the advertising category under consent


def cookie_header(name: str, value: str, *, max_age: int, secure: bool, http_only: bool, domain: str | None) -> str:
    parts = [f"{name}={value}", "Path=/", f"Max-Age={max_age}", "SameSite=Lax"]
    if domain:
        parts.append(f"Domain={domain}")
    if secure:
        parts.append("Secure")
    if http_only:
        parts.append("HttpOnly")
    return "; ".join(parts)


@lru_cache(maxsize=1024)
def _cookie_parts(name: str, secure: bool, domain: str | None) -> tuple[bytes, bytes]:
    """What comes before and after the value, built once per name, scheme and domain."""
    max_age, http_only = COOKIE_RULES[name]
    before, _, after = cookie_header(name, "\0", max_age=max_age, secure=secure, http_only=http_only,
                                     domain=domain).partition("\0")
    return before.encode("latin-1"), after.encode("latin-1")


def set_cookie(name: str, value: str, secure: bool, domain: str | None) -> tuple[bytes, bytes]:
    before, after = _cookie_parts(name, secure, domain)
    return b"set-cookie", before + value.encode("latin-1") + after


def delete_cookie(name: str, secure: bool, domain: str | None) -> tuple[bytes, bytes]:
    cookie = cookie_header(name, "", max_age=0, secure=secure, http_only=COOKIE_RULES[name][1], domain=domain)
    return b"set-cookie", cookie.encode("latin-1")


def without_epik(url: str | None) -> str | None:
    """The URL without its click id (kept out of storage until the advertising category is granted)."""
    if not url or "epik=" not in url:
        return url
    head, _, rest = url.partition("?")
    query, hash_mark, fragment = rest.partition("#")
    kept = "&".join(part for part in query.split("&") if part.partition("=")[0] != "epik")
    return head + ("?" + kept if kept else "") + hash_mark + fragment


_OURS = frozenset({DFID, PIN_UNAUTH, EPIK})


def parse_cookies(header: str) -> dict[str, str]:
    """Our cookies from a Cookie header (the others are not even split off); the last of a
    repeated name wins and a quoted value is unquoted, as Starlette's general parser does."""
    found = {}
    for chunk in header.split(";"):
        name, _, value = chunk.partition("=")
        name = name.strip()
        if name in _OURS:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            found[name] = value
    return found


_COOKIE_SAFE = re.compile(rf'[!#-+\--:<-\[\]-~]{{1,{_MAX_EPIK}}}')  # printable ASCII except ; , " \ and space


def cookie_value_ok(value: str) -> bool:
    """Only values safe to echo into Set-Cookie (no separators, no control characters)."""
    return _COOKIE_SAFE.fullmatch(value) is not None
