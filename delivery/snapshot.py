"""What a config store keeps in memory: the snapshot of sources and integrations that the hot
path reads (a source per request), the change listeners, and the identity cache in front of
the identity memory. No I/O here: delivery/sql/config_store.py keeps it and the database in step.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

import msgspec

from delivery.config import Integration, Source
from delivery.store import ChangeListener, StoredIdentity

log = logging.getLogger("signal_edge.store")
IDENTITY_CACHE_BYTES = 16 * 1024 * 1024  # about 40k browsers' identities, whatever they hold
IDENTITY_RETENTION = 60 * 24 * 3600  # Pinterest's longest click attribution window: 60 days
_ENTRY_OVERHEAD = 240  # bytes a cache entry costs beside its identity's JSON (key, tuple, dict slot)
_MISSING = object()

source_decoder = msgspec.json.Decoder(Source)
integration_decoder = msgspec.json.Decoder(Integration)
identity_decoder = msgspec.json.Decoder(StoredIdentity)
encode = msgspec.json.encode


class Snapshot:
    MISSING = _MISSING  # what cached_identity() answers when it does not know

    def __init__(self) -> None:
        self._sources: dict[str, Source] = {}
        self._by_key: dict[str, Source] = {}
        self._by_server_key: dict[str, Source] = {}  # by the SHA-256 of its server key
        self._integrations: dict[str, Integration] = {}
        # anonymous id -> (StoredIdentity or None for "known absent", its cost in bytes, saved at)
        self._identities: OrderedDict[str, tuple[StoredIdentity | None, int, float]] = OrderedDict()
        self._identity_bytes = 0
        self.identity_retention: float = IDENTITY_RETENTION  # seconds an identity is kept after its last change
        self._listeners: list[ChangeListener] = []

    # --- sources and integrations -------------------------------------------------------

    def source(self, source_id: str) -> Source | None:
        return self._sources.get(source_id)

    def source_by_key(self, pipeline_key: str) -> Source | None:
        return self._by_key.get(pipeline_key)

    def source_by_server_key(self, server_key_sha256: str) -> Source | None:
        return self._by_server_key.get(server_key_sha256)

    def sources(self) -> list[Source]:
        return sorted(self._sources.values(), key=lambda s: (s.created_at, s.id))

    def integration(self, integration_id: str) -> Integration | None:
        return self._integrations.get(integration_id)

    def integrations(self, source_id: str | None = None) -> list[Integration]:
        found = [i for i in self._integrations.values() if source_id is None or i.source_id == source_id]
        return sorted(found, key=lambda i: (i.created_at, i.id))

    def subscribe(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def _changed(self, object_type: str, object_id: str) -> None:
        for listener in self._listeners:
            try:
                listener(object_type, object_id)
            except Exception:  # a listener's bug must not fail the write that succeeded
                log.exception("config change listener failed")

    def _remember_source(self, source: Source) -> None:
        self._forget_source(source.id)
        self._sources[source.id] = source
        self._by_key[source.pipeline_key] = source
        for retired in source.retired_keys:  # refused after their overlap, but counted on this source
            self._by_key.setdefault(retired.key, source)
        if source.server_key_sha256:
            self._by_server_key[source.server_key_sha256] = source

    def _forget_source(self, source_id: str) -> None:
        old = self._sources.pop(source_id, None)
        if old is not None:
            self._by_key.pop(old.pipeline_key, None)
            for retired in old.retired_keys:
                if self._by_key.get(retired.key) is old:
                    del self._by_key[retired.key]
            self._by_server_key.pop(old.server_key_sha256 or "", None)

    def _replace_all(self, sources: list[Source], integrations: list[Integration]) -> None:
        self._sources.clear()
        self._by_key.clear()
        self._by_server_key.clear()
        self._integrations.clear()
        for source in sources:
            self._remember_source(source)
        self._integrations.update((integration.id, integration) for integration in integrations)

    # --- the identity cache: hashes only, least recently used out first ---------------------

    def cached_identity(self, anonymous_id: str) -> Any:
        """The cached identity, None when known absent, or `MISSING` (ask `identity()`). An
        identity past its retention is absent, whether or not it is pruned yet."""
        entry = self._identities.get(anonymous_id)
        if entry is None:
            return _MISSING
        if entry[0] is not None and entry[2] < time.time() - self.identity_retention:
            return None
        return entry[0]

    def forget_identity(self, anonymous_id: str) -> None:
        entry = self._identities.pop(anonymous_id, None)
        if entry is not None:
            self._identity_bytes -= entry[1]

    def _cache_identity(self, anonymous_id: str, value: StoredIdentity | None, size: int, saved_at: float) -> None:
        """Kept newest last; the oldest go once the cache holds more than IDENTITY_CACHE_BYTES."""
        self.forget_identity(anonymous_id)
        cost = size + _ENTRY_OVERHEAD + len(anonymous_id)
        self._identities[anonymous_id] = (value, cost, saved_at)
        self._identity_bytes += cost
        while self._identity_bytes > IDENTITY_CACHE_BYTES:
            self._identity_bytes -= self._identities.popitem(last=False)[1][1]

    def forget_identities(self) -> None:
        self._identities.clear()
        self._identity_bytes = 0


def configuration_changed(old: Integration | None, new: Integration | None) -> bool:
    """More than the health (runtime state) differs."""
    if old is None or new is None:
        return old is not new
    return msgspec.structs.replace(old, health=new.health) != new
