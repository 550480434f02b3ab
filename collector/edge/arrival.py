"""How a browser's request reached the edge: from the site's own origin, from another host of
the same site (a data subdomain), or from another site. Browsers keep the edge's cookies
accordingly (the README's "Cookies"), so each source's page shows what its traffic does."""

from __future__ import annotations

from collector.activity import ArrivalKind

# Sec-Fetch-Site's value -> its kind: one dict look-up per request (no enum call)
_KINDS = {kind.value: kind for kind in ArrivalKind}


def arrival(fetch_site: str | None, origin: str | None, host: str | None) -> ArrivalKind | None:
    """As the browser says (Sec-Fetch-Site, sent over https by every current browser), else the
    request's Origin against the Host it asked for. None for a server, or a navigation."""
    if fetch_site is not None:
        return _KINDS.get(fetch_site)  # None for "none": the address bar, not a page
    if not origin or not host:
        return None
    asked = origin.partition("://")[2].lower()
    host = host.lower()
    if asked == host:
        return ArrivalKind.SAME_ORIGIN
    return ArrivalKind.SAME_SITE if _site(asked) == _site(host) else ArrivalKind.CROSS_SITE


def _site(authority: str) -> str:
    """The host's last two labels: without the public suffix list this takes `shop.co.uk` and
    `other.co.uk` for one site; browsers that send Sec-Fetch-Site are never asked."""
    host = authority.rpartition(":")[0] if authority.count(":") == 1 else authority
    return ".".join(host.split(".")[-2:])
