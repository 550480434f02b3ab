"""Who is asking the admin app, seen through SIGNAL_TRUSTED_PROXIES as the edge sees its
visitors: the client's address (X-Forwarded-For) and the scheme it used (X-Forwarded-Proto),
both believed only from a trusted proxy. Behind a proxy every request comes from the proxy's
address: a throttle keyed on it would lock every admin out together."""

from __future__ import annotations

from starlette.requests import Request

from collector.edge.identity import ProxyTrust
from collector.settings import Settings


class Peers:
    def __init__(self, settings: Settings) -> None:
        self.trust = ProxyTrust(settings.trusted_networks())

    def client(self, request: Request) -> str:
        peer = request.client.host if request.client else None
        return self.trust.client_ip(peer, request.headers.get("x-forwarded-for")) or "?"

    def https(self, request: Request) -> bool:
        peer = request.client.host if request.client else None
        return self.trust.scheme(peer, request.url.scheme, request.headers.get("x-forwarded-proto")) == "https"
