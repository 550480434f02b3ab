"""Per-client rate limits at the edge.

A source's own limit protects Pinterest and the queue, but one client could spend all of it
and push every other visitor of the site into 429. So each client (its address, as seen
through SIGNAL_TRUSTED_PROXIES) has a bucket of its own in front of the source's.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

MAX_CLIENTS = 100_000  # buckets kept


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
    """Token buckets as [tokens, last update] per key: a hundred thousand clients cost a few MB.
    Past that the table starts afresh (every client then has a full bucket once), rather than
    paying for an LRU's reordering on every request."""

    def __init__(self, max_clients: int = MAX_CLIENTS) -> None:
        self.max_clients = max_clients
        self._buckets: dict[tuple[str, str], list[float]] = {}

    def take(self, key: tuple[str, str], n: int, rate: float, burst: int, now: float) -> float:
        """Take `n` tokens and return 0, or return the seconds until they would be there."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_clients:
                self._buckets.clear()
            bucket = self._buckets[key] = [float(burst), now]
        tokens = bucket[0] + (now - bucket[1]) * rate
        if tokens > burst:
            tokens = burst
        bucket[1] = now
        need = n if n < burst else burst  # a request larger than the burst may go once the bucket is full
        if tokens >= need:
            bucket[0] = tokens - n
            return 0.0
        bucket[0] = tokens
        return (need - tokens) / rate
