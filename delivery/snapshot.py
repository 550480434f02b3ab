"""What every config store backend shares: the in-memory snapshot of sources and integrations
that the hot path reads, change listeners, the identity cache, and how records are shaped
for storage (secrets sealed, audit entries redacted). A backend subclasses SnapshotStore and
writes only its SQL: the `_load`, `_write_*` and the other underscored hooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from typing import Any

import msgspec

from delivery.config import SECRET_KEYS, Health, Integration, Source
from delivery.secrets import SecretBox, open_integration, seal_integration
from delivery.store import AuditEntry, ChangeListener, DebugRecord, Refusal, SourceActivity, StoredIdentity

log = logging.getLogger("signal_edge.store")
IDENTITY_CACHE_BYTES = 16 * 1024 * 1024  # about 40k browsers' identities, whatever they hold
IDENTITY_RETENTION = 60 * 24 * 3600  # Pinterest's longest click attribution window: 60 days
_ENTRY_OVERHEAD = 240  # bytes a cache entry costs beside its identity's JSON (key, tuple, dict slot)
DEBUG_LOG_KEEP = 20_000
REFUSAL_EXAMPLES_KEPT = 10  # per source
_MISSING = object()

source_decoder = msgspec.json.Decoder(Source)
integration_decoder = msgspec.json.Decoder(Integration)
identity_decoder = msgspec.json.Decoder(StoredIdentity)
_debug_decoder = msgspec.json.Decoder(DebugRecord)
encode = msgspec.json.encode

AuditRow = tuple[str, str, str, bytes | None, bytes | None]  # action, type, id, old, new (JSON, redacted)


class SnapshotStore:
    MISSING = _MISSING  # what cached_identity() answers when it does not know

    def __init__(self) -> None:
        self.box: SecretBox | None = None
        self._sources: dict[str, Source] = {}
        self._by_key: dict[str, Source] = {}
        self._by_server_key: dict[str, Source] = {}  # by the SHA-256 of its server key
        self._integrations: dict[str, Integration] = {}
        # anonymous id -> (StoredIdentity or None for "known absent", its cost in bytes, saved at)
        self._identities: OrderedDict[str, tuple[StoredIdentity | None, int, float]] = OrderedDict()
        self._identity_bytes = 0
        self.identity_retention = IDENTITY_RETENTION  # seconds an identity is kept after its last change
        self._listeners: list[ChangeListener] = []
        self._debug_writes = 0
        self._locks: dict[str, asyncio.Lock] = {}

    async def open(self, box: SecretBox) -> None:
        """Load the snapshot; `box` decrypts stored secrets."""
        self.box = box
        sources, integrations = await self._load()
        self._sources.clear()
        self._by_key.clear()
        self._by_server_key.clear()
        self._integrations.clear()
        for body in sources:
            self._remember_source(source_decoder.decode(body))
        for body in integrations:
            integration = open_integration(integration_decoder.decode(body), box)
            self._integrations[integration.id] = integration

    def listen(self) -> None:
        """Follow changes other processes make (a backend shared by several nodes does)."""

    @contextlib.asynccontextmanager
    async def exclusive(self, name: str):
        """Only one holder of `name` at a time: in this process (a one-process backend); a
        backend shared by nodes makes it hold across them."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            yield

    async def reload_integration(self, integration_id: str) -> Integration | None:
        """The integration as stored now (another node may have changed it a moment ago)."""
        return self._integrations.get(integration_id)

    # --- snapshot reads ---------------------------------------------------------------

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

    # --- writes -----------------------------------------------------------------------

    async def put_source(self, source: Source, audit_action: str | None) -> None:
        old = self._sources.get(source.id)
        await self._write_source(source, audit_row(audit_action, "source", source.id, old, source))
        self._remember_source(source)
        self._changed("source", source.id)

    async def delete_source(self, source_id: str) -> None:
        old = self._sources.get(source_id)
        await self._delete("sources", source_id, audit_row("delete", "source", source_id, old, None))
        self._forget_source(source_id)
        self._changed("source", source_id)

    async def put_integration(self, integration: Integration, audit_action: str | None, notify: bool = True) -> None:
        old = self._integrations.get(integration.id)
        await self._write_integration(integration, encode(seal_integration(integration, self.box)),
                                      audit_row(audit_action, "integration", integration.id, old, integration))
        self._integrations[integration.id] = integration
        if notify:
            self._changed("integration", integration.id)

    async def delete_integration(self, integration_id: str) -> None:
        old = self._integrations.get(integration_id)
        await self._delete("integrations", integration_id,
                           audit_row("delete", "integration", integration_id, old, None))
        self._integrations.pop(integration_id, None)
        self._changed("integration", integration_id)

    async def set_health(self, integration_id: str, health: Health) -> None:
        current = self._integrations.get(integration_id)
        if current is None or current.health == health:
            return
        # Health is runtime state, not configuration: no change notification.
        await self.put_integration(msgspec.structs.replace(current, health=health), None, notify=False)

    async def reseal(self, box: SecretBox, meta: dict[str, str]) -> int:
        """Encrypt every stored secret again with `box` and set `meta`, in one transaction (the
        secret key is being rotated); UI sessions end (their cookies were signed with the old
        key). Returns how many integrations were rewritten."""
        rows = [(encode(seal_integration(i, box)), i.id) for i in self._integrations.values()]
        await self._reseal(rows, meta)
        self.box = box
        return len(rows)

    # --- identity memory (hashes only), with an LRU in front ---------------------------

    async def identity(self, anonymous_id: str) -> StoredIdentity | None:
        cached = self.cached_identity(anonymous_id)
        if cached is not _MISSING:
            self._identities.move_to_end(anonymous_id)
            return cached
        found = await self._read_identity(anonymous_id, time.time() - self.identity_retention)
        if found is None:
            self._cache_identity(anonymous_id, None, 0, time.time())
            return None
        stored, updated_at = found
        self._cache_identity(anonymous_id, stored, len(encode(stored)), updated_at)
        return stored

    def cached_identity(self, anonymous_id: str) -> Any:
        """The cached identity, None when known absent, or `MISSING` (ask `identity()`). An
        identity past its retention is absent, whether or not it is pruned yet."""
        entry = self._identities.get(anonymous_id)
        if entry is None:
            return _MISSING
        if entry[0] is not None and entry[2] < time.time() - self.identity_retention:
            return None
        return entry[0]

    async def save_identity(self, anonymous_id: str, stored: StoredIdentity) -> None:
        body = encode(stored)
        now = time.time()
        await self._write_identity(anonymous_id, stored.user_id, body, now)
        self._cache_identity(anonymous_id, stored, len(body), now)

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

    async def prune_identities(self, limit: int = 1000) -> int:
        """Delete up to `limit` identities past their retention; returns how many went."""
        gone = await self._prune_identities(time.time() - self.identity_retention, limit)
        for anonymous_id in gone:
            self.forget_identity(anonymous_id)
        return len(gone)

    # --- audit and debugger logs ------------------------------------------------------------

    async def audit(self, action: str, object_type: str, object_id: str, old: dict | None, new: dict | None) -> None:
        await self._write_audit((action, object_type, object_id, _json(old), _json(new)))

    async def add_debug(self, records: list[DebugRecord]) -> None:
        """Keep `records`; the oldest beyond DEBUG_LOG_KEEP are pruned now and then."""
        if not records:
            return
        self._debug_writes += len(records)
        prune = self._debug_writes >= DEBUG_LOG_KEEP // 4
        if prune:
            self._debug_writes = 0
        rows = [(r.at, r.source_id, r.integration_id, r.event_id, r.status, encode(r)) for r in records]
        await self._write_debug(rows, DEBUG_LOG_KEEP if prune else None)

    # --- what a backend writes ------------------------------------------------------------

    async def _load(self) -> tuple[list[bytes], list[bytes]]:
        """The stored bodies of every source and every integration."""
        raise NotImplementedError

    async def _write_source(self, source: Source, audit: AuditRow | None) -> None:
        raise NotImplementedError

    async def _write_integration(self, integration: Integration, body: bytes, audit: AuditRow | None) -> None:
        raise NotImplementedError

    async def _delete(self, table: str, object_id: str, audit: AuditRow | None) -> None:
        raise NotImplementedError

    async def _reseal(self, rows: list[tuple[bytes, str]], meta: dict[str, str]) -> None:
        raise NotImplementedError

    async def _read_identity(self, anonymous_id: str, not_before: float) -> tuple[StoredIdentity, float] | None:
        """The identity and when it was saved, unless saved before `not_before`."""
        raise NotImplementedError

    async def _write_identity(self, anonymous_id: str, user_id: str | None, body: bytes, at: float) -> None:
        raise NotImplementedError

    async def _prune_identities(self, before: float, limit: int) -> list[str]:
        """Delete up to `limit` identities saved before `before`; returns their anonymous ids."""
        raise NotImplementedError

    async def _write_audit(self, row: AuditRow) -> None:
        raise NotImplementedError

    async def _write_debug(self, rows: list[tuple], keep: int | None) -> None:
        """Insert `rows`; when `keep` is set, delete all but the newest `keep` records."""
        raise NotImplementedError


def _json(value: Any) -> bytes | None:
    return None if value is None else encode(value)


def redacted(obj: Any) -> dict | None:
    """An object as the audit log keeps it: secrets replaced by a marker, health left out."""
    if obj is None:
        return None
    data = msgspec.to_builtins(obj)
    config = data.get("config")
    if isinstance(config, dict):
        for key in SECRET_KEYS:
            if config.get(key):
                config[key] = "[redacted]"
    data.pop("health", None)
    return data


def audit_row(action: str | None, object_type: str, object_id: str, old: Any, new: Any) -> AuditRow | None:
    if action is None:
        return None
    return (action, object_type, object_id, _json(redacted(old)), _json(redacted(new)))


def source_activity(source_ids: list[str], refusals, examples, last_events) -> dict[str, SourceActivity]:
    """Each source's activity from the rows of its three tables: (source, reason, count),
    (source, at, reason, detail) newest first, and (source, last_event_at)."""
    found = {source: SourceActivity({}, []) for source in source_ids}
    for source, reason, count in refusals:
        found[source].refused[reason] = count
    for source, *row in examples:
        if len(found[source].recent_refusals) < REFUSAL_EXAMPLES_KEPT:  # PostgreSQL's nodes trim concurrently
            found[source].recent_refusals.append(Refusal(*row))
    for source, at in last_events:
        found[source].last_event_at = at
    return found


def audit_entry(row_id: int, at: float, action: str, object_type: str, object_id: str, old: bytes | None,
                new: bytes | None) -> AuditEntry:
    return AuditEntry(row_id, at, action, object_type, object_id, msgspec.json.decode(old) if old else None,
                      msgspec.json.decode(new) if new else None)


def debug_record(row_id: int, at: float, source_id: str, topic: str | None, event_id: str, status: str,
                 record: bytes) -> DebugRecord:
    """A stored debugger record; one that cannot be read (nested too deep by an older version,
    say) is shown as such, and never fails the listing it is in."""
    try:
        return msgspec.structs.replace(_debug_decoder.decode(record), id=row_id)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return DebugRecord(at, source_id or "", event_id or "", "", status, topic, id=row_id,
                           message="this stored record cannot be shown (it is not readable JSON)")
