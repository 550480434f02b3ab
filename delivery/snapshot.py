"""What every config store backend shares: the in-memory snapshot of sources and integrations
that the hot path reads, change listeners, the identity cache, and how records are shaped
for storage (secrets sealed, audit entries redacted). A backend subclasses SnapshotStore and
writes only its SQL: the `_load`, `_write_*` and the other underscored hooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import msgspec
from cryptography.exceptions import InvalidTag

from delivery.config import SECRET_KEYS, Health, Integration, Source
from delivery.erasure import SALT_META, Person, Suppressions
from delivery.secrets import SecretBox, open_integration, seal_integration
from delivery.store import AuditEntry, ChangeListener, DebugRecord, Refusal, SourceActivity, StoredIdentity

log = logging.getLogger("signal_edge.store")
IDENTITY_CACHE_BYTES = 16 * 1024 * 1024  # about 40k browsers' identities, whatever they hold
IDENTITY_RETENTION = 60 * 24 * 3600  # Pinterest's longest click attribution window: 60 days
_ENTRY_OVERHEAD = 240  # bytes a cache entry costs beside its identity's JSON (key, tuple, dict slot)
DEBUG_LOG_KEEP = 20_000
ERASE_BATCH = 2000  # records an erasure scans per statement: others get the database in between
ERASE_ROUNDS = 4  # scans of identity memory while each finds more of the person
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
        self.suppressions = Suppressions()  # erased people whose new events the edge drops

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
    # Each write takes its own result into the snapshot once it is committed, unless `_settled`
    # (a backend shared by nodes) says the object changed elsewhere meanwhile: then what is
    # stored now is read instead, so that no write or reload puts an older state back.

    async def put_source(self, source: Source, audit_action: str | None) -> None:
        old = self._sources.get(source.id)
        mark = self._mark("source", source.id)
        await self._write_source(source, audit_row(audit_action, "source", source.id, old, source))
        if await self._settled("source", source.id, mark):
            self._remember_source(source)
            self._changed("source", source.id)

    async def delete_source(self, source_id: str) -> None:
        old = self._sources.get(source_id)
        mark = self._mark("source", source_id)
        await self._delete("sources", source_id, audit_row("delete", "source", source_id, old, None))
        if await self._settled("source", source_id, mark):
            self._forget_source(source_id)
            self._changed("source", source_id)

    async def put_integration(self, integration: Integration, audit_action: str | None) -> None:
        """Store `integration` as it is: for a new one. A change to an existing one goes through
        update_integration, which applies it to what is stored."""
        old = self._integrations.get(integration.id)
        mark = self._mark("integration", integration.id)
        await self._write_integration(integration, encode(seal_integration(integration, self.box)),
                                      audit_row(audit_action, "integration", integration.id, old, integration))
        if await self._settled("integration", integration.id, mark):
            self._integrations[integration.id] = integration
            self._changed("integration", integration.id)

    async def update_integration(self, integration_id: str, change: Callable[[Integration], Integration | None],
                                 audit_action: str | None, notify: bool = True) -> Integration | None:
        """Apply `change` to the integration as stored now, not as this process last saw it, in
        one transaction that holds its row: a compare-and-swap that cannot fail, so a write never
        puts back what another writer replaced meanwhile (a refresh token that Pinterest has
        already rotated, say). `change` returns the integration to store, or None to leave it;
        it may raise to refuse. Returns the integration as stored after (None: there is none).
        `notify`: tell change listeners (health is runtime state, not configuration)."""
        box = self.box

        def rewrite(body: bytes) -> tuple[tuple[bytes, AuditRow | None] | None, Integration]:
            current = open_integration(integration_decoder.decode(body), box)
            new = change(current)
            if new is None or new == current:
                return None, current
            return (encode(seal_integration(new, box)),
                    audit_row(audit_action, "integration", integration_id, current, new)), new

        old = self._integrations.get(integration_id)
        mark = self._mark("integration", integration_id)
        stored = await self._rewrite_integration(integration_id, rewrite)
        if await self._settled("integration", integration_id, mark):
            if stored is None:
                self._integrations.pop(integration_id, None)
            else:
                self._integrations[integration_id] = stored
            if notify and configuration_changed(old, stored):
                self._changed("integration", integration_id)
        return stored

    async def delete_integration(self, integration_id: str) -> None:
        old = self._integrations.get(integration_id)
        mark = self._mark("integration", integration_id)
        await self._delete("integrations", integration_id,
                           audit_row("delete", "integration", integration_id, old, None))
        if await self._settled("integration", integration_id, mark):
            self._integrations.pop(integration_id, None)
            self._changed("integration", integration_id)

    async def set_health(self, integration_id: str, health: Health) -> None:
        current = self._integrations.get(integration_id)
        if current is None or current.health == health:
            return
        # Only the health changes in what is stored: never the tokens this process last saw.
        await self.update_integration(
            integration_id, lambda stored: msgspec.structs.replace(stored, health=health), None, notify=False)

    def _mark(self, kind: str, object_id: str) -> Any:
        """Taken before a write of this process; see _settled."""
        return None

    async def _settled(self, kind: str, object_id: str, mark: Any) -> bool:
        """After a write: True to take its result into the snapshot; False when the backend has
        read what is stored instead (another node changed the object meanwhile)."""
        return True

    async def reseal(self, box: SecretBox, meta: dict[str, str]) -> int:
        """Encrypt every stored secret again with `box` and set `meta`, in one transaction (the
        secret key is being rotated); UI sessions end (their cookies were signed with the old
        key). Returns how many integrations were rewritten. Alert destinations' URLs (a Slack
        webhook's holds its secret) are sealed again in the same transaction."""
        rows = [(encode(seal_integration(i, box)), i.id) for i in self._integrations.values()]
        destinations = [(self._resealed_destination(body, box), destination_id)
                        for destination_id, body in await self._alert_destinations()]
        await self._reseal(rows, meta, destinations)
        self.box = box
        return len(rows)

    def _resealed_destination(self, body: bytes, box: SecretBox) -> bytes:
        """A stored alert destination (delivery/alerts.py) with its URL sealed by `box`; one that the
        current key cannot open stays as it is (its URL must be set again either way)."""
        destination = msgspec.json.decode(body)
        try:
            destination["url"] = box.seal(self.box.open(destination["url"]))
        except (InvalidTag, ValueError, KeyError, TypeError):
            return body
        return encode(destination)

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

    # A server-side call has no browser cookie: its identity memory is kept by the userId it
    # names, under a key of its own (only its hash: a userId may be anything the site chose).

    async def user_identity(self, user_id: str) -> StoredIdentity | None:
        return await self.identity(user_identity_key(user_id))

    async def save_user_identity(self, user_id: str, stored: StoredIdentity) -> None:
        await self.save_identity(user_identity_key(user_id), stored)

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
        # The edge refuses NUL in ids; one queued by an older version must not cost its batch's records
        # (PostgreSQL refuses NUL in text columns).
        rows = [(r.at, r.source_id, r.integration_id, r.event_id.replace("\x00", "\ufffd"), r.status, encode(r))
                for r in records]
        await self._write_debug(rows, DEBUG_LOG_KEEP if prune else None)

    # --- retention of the other kinds (identities: prune_identities) ----------------------

    async def prune(self, kind: str, before: float, limit: int = 1000) -> int:
        """Delete up to `limit` records of `kind` older than `before` (Unix seconds): "debug"
        (the delivery log), "audit" (the audit log), "alerts" (alert history), "volume" (event
        counts behind the silent-drop alert), "suppressions" (ended ones). Returns how many went."""
        if kind == "suppressions":  # ended ones leave memory too: with none left the edge checks nothing
            self.suppressions.until = {k: u for k, u in self.suppressions.until.items() if u >= before}
        return await self._prune(kind, before, limit)

    # --- erasure and suppression (delivery/erasure.py) ------------------------------------------

    async def load_suppressions(self) -> None:
        """The salt and the suppressions in force, into memory (at start, and when another node
        adds some)."""
        salt = await self.init_meta(SALT_META, secrets.token_hex(32))
        self.suppressions.salt = bytes.fromhex(salt)
        self.suppressions.until = dict(await self._read_suppressions(time.time()))

    async def suppress(self, keys: set[str], until: float) -> None:
        await self._write_suppressions([(key, until) for key in sorted(keys)])
        for key in keys:
            self.suppressions.until[key] = max(until, self.suppressions.until.get(key, 0.0))

    async def erase_identities(self, person: Person, batch: int = ERASE_BATCH) -> int:
        """Delete the person's identity records, learning from each what else identifies them
        (its anonymous id, userId, hashes) and scanning again while that finds more."""
        deleted = 0
        for _ in range(ERASE_ROUNDS):
            learned, after = False, None
            while True:
                rows, after = await self._erase_identities(lambda a, u, body: _identity_of(person, a, u, body),
                                                           after, batch)
                for anonymous_id, user_id, body in rows:
                    self.forget_identity(anonymous_id)
                    learned |= person.learn(anonymous_id, user_id, identity_decoder.decode(body).identity)
                deleted += len(rows)
                if after is None:
                    break
            if not learned:
                break
        return deleted

    async def erase_debug(self, person: Person, batch: int = ERASE_BATCH) -> int:
        """Delete the debugger records that mention the person."""
        deleted, after = 0, None
        while True:
            gone, after = await self._erase_debug(person.record_matches, after, batch)
            deleted += gone
            if after is None:
                return deleted

    # --- what a backend writes ------------------------------------------------------------

    async def _load(self) -> tuple[list[bytes], list[bytes]]:
        """The stored bodies of every source and every integration."""
        raise NotImplementedError

    async def _write_source(self, source: Source, audit: AuditRow | None) -> None:
        raise NotImplementedError

    async def _write_integration(self, integration: Integration, body: bytes, audit: AuditRow | None) -> None:
        raise NotImplementedError

    async def _rewrite_integration(self, integration_id: str, rewrite) -> Integration | None:
        """In one transaction, its row held: read the stored body, `write, result = rewrite(body)`,
        and when `write` is (body, audit) store them. Returns `result` (None: no such row)."""
        raise NotImplementedError

    async def _delete(self, table: str, object_id: str, audit: AuditRow | None) -> None:
        raise NotImplementedError

    async def _reseal(self, rows: list[tuple[bytes, str]], meta: dict[str, str],
                      destinations: list[tuple[bytes, str]]) -> None:
        raise NotImplementedError

    async def _alert_destinations(self) -> list[tuple[str, bytes]]:
        """(id, stored body) of every alert destination."""
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

    async def _prune(self, kind: str, before: float, limit: int) -> int:
        raise NotImplementedError

    async def _read_suppressions(self, now: float) -> list[tuple[str, float]]:
        """(key, until) of the suppressions still in force."""
        raise NotImplementedError

    async def _write_suppressions(self, rows: list[tuple[str, float]]) -> None:
        raise NotImplementedError

    async def _erase_identities(self, match, after, limit: int) -> tuple[list[tuple[str, str | None, bytes]], object]:
        """Scan up to `limit` identities after the cursor `after` (None: from the start); delete
        those for which `match(anonymous_id, user_id, body)`; return them, with the cursor to go
        on from (None when the scan is done)."""
        raise NotImplementedError

    async def _erase_debug(self, match, after, limit: int) -> tuple[int, object]:
        """The same over the debugger log, `match(record)`; returns how many went and the cursor."""
        raise NotImplementedError

    async def _write_debug(self, rows: list[tuple], keep: int | None) -> None:
        """Insert `rows`; when `keep` is set, delete all but the newest `keep` records."""
        raise NotImplementedError


def configuration_changed(old: Integration | None, new: Integration | None) -> bool:
    """More than the health (runtime state) differs."""
    if old is None or new is None:
        return old is not new
    return msgspec.structs.replace(old, health=new.health) != new


USER_KEY_PREFIX = "user:"  # identities keyed by userId; a browser's anonymous id is a UUID


def user_identity_key(user_id: str) -> str:
    return USER_KEY_PREFIX + hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()


def _identity_of(person: Person, anonymous_id: str, user_id: str | None, body: bytes) -> bool:
    """An identity record is the person's (decoded only when it names one of their identifiers)."""
    if anonymous_id in person.anonymous_ids or (user_id is not None and user_id in person.user_ids):
        return True
    return person.mentioned(body) and person.identity_matches(
        anonymous_id, user_id, identity_decoder.decode(body).identity)


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
