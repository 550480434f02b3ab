"""Per-client rate limits at the edge.

A source's own limit protects Pinterest and the queue, but one client could spend all of it
and push every other visitor of the site into 429. So each client (its address, as seen
through SIGNAL_TRUSTED_PROXIES) has a bucket of its own in front of the source's.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from functools import lru_cache

MAX_CLIENTS = 100_000  # buckets kept; the least recently seen client's is forgotten first


@lru_cache(maxsize=8192)
def client_key(address: str | None) -> str:
    """An IPv4 address as it is; an IPv6 address by its /64, which one subscriber usually holds whole."""
    if not address or ":" not in address:
        return address or "?"
    try:
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False).network_address) + "/64"
    except ValueError:
        return address


class ClientBuckets:
    """Token buckets as (tokens, last update) per key: a hundred thousand clients cost a few MB."""

    def __init__(self, max_clients: int = MAX_CLIENTS) -> None:
        self.max_clients = max_clients
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()

    def take(self, key: tuple[str, str], n: int, rate: float, burst: int, now: float) -> float:
        """Take `n` tokens and return 0, or return the seconds until they would be there."""
        tokens, updated = self._buckets.pop(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - updated) * rate)
        need = min(n, burst)  # a request larger than the burst may go once the bucket is full
        wait = 0.0
        if tokens >= need:
            tokens -= n
        else:
            wait = (need - tokens) / rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait
