"""The ConfigStore (delivery/store.py) over a driver: each statement written once, for SQLite and
PostgreSQL alike (delivery/sql/statements.py). Sources and integrations are read from the
in-memory snapshot (delivery/snapshot.py); a write is durable when it returns and then updates
the snapshot. Secrets are sealed before they are stored and opened when they are loaded.

A backend shared by several nodes (delivery/postgres/config_store.py) adds what only it needs:
following the other nodes' changes, ordering its reads and writes (`_mark`, `_settled`), and a
lock held across nodes (`exclusive`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from cryptography.exceptions import InvalidTag

from delivery.config import Health, Integration, Source
from delivery.secrets import CHECK_META, SecretBox, open_integration, seal_integration
from delivery.snapshot import configuration_changed, encode, integration_decoder, source_decoder
from delivery.sql.identities import IdentityMemory
from delivery.sql.logs import AuditRow, Logs, audit_row, insert_audit
from delivery.sql.meta import UPSERT_META
from delivery.sql.statements import Driver, Op, execute, executemany, fetch, fetchval
from delivery.store import AdminSession, StorageError

log = logging.getLogger("signal_edge.store")
TABLES = {"source": "sources", "integration": "integrations"}
Rewrite = Callable[[bytes], tuple[tuple[bytes, AuditRow | None] | None, Integration]]


class SqlConfigStore(Logs, IdentityMemory):
    def __init__(self, sql: Driver) -> None:
        super().__init__()
        self.sql = sql
        self._box: SecretBox | None = None
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def box(self) -> SecretBox:
        """Seals and opens the stored secrets (known once the store is open)."""
        if self._box is None:
            raise RuntimeError("the config store is not open: its secret key is not known yet")
        return self._box

    async def open(self, box: SecretBox) -> None:
        """Load the snapshot; `box` decrypts stored secrets."""
        self._box = box
        sources, integrations = await self._load()
        self._replace_all([source_decoder.decode(body) for body in sources],
                          [open_integration(integration_decoder.decode(body), box) for body in integrations])

    def listen(self) -> None:
        """Follow changes other processes make (a backend shared by several nodes does)."""

    @contextlib.asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[None]:
        """Only one holder of `name` at a time: in this process (a one-process backend); a
        backend shared by nodes makes it hold across them."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            yield

    async def reload_integration(self, integration_id: str) -> Integration | None:
        """The integration as stored now (another node may have changed it a moment ago), taken
        into the snapshot too."""
        body = await self._stored("integration", integration_id)
        self._apply("integration", integration_id, body)
        return self._integrations.get(integration_id)

    def _apply(self, kind: str, object_id: str, body: bytes | None) -> None:
        """Take the stored state of one object into the snapshot; listeners hear of real changes
        (not of a change of an integration's health alone: that is runtime state)."""
        if kind == "source":
            new = source_decoder.decode(body) if body is not None else None
            if new == self._sources.get(object_id):
                return
            if new is None:
                self._forget_source(object_id)
            else:
                self._remember_source(new)
            self._changed("source", object_id)
            return
        old = self._integrations.get(object_id)
        integration = self._opened(body)
        if integration is None:
            if self._integrations.pop(object_id, None) is not None:
                self._changed("integration", object_id)
            return
        self._integrations[object_id] = integration
        if configuration_changed(old, integration):
            self._changed("integration", object_id)

    def _opened(self, body: bytes | None) -> Integration | None:
        return open_integration(integration_decoder.decode(body), self.box) if body is not None else None

    async def _load(self) -> tuple[list[bytes], list[bytes]]:
        """The stored bodies of every source and every integration."""
        return await self.sql.transaction(_load_all)

    async def _stored(self, kind: str, object_id: str) -> bytes | None:
        """The stored body of one source or integration (None: there is none)."""
        return await self.sql.fetchval(f"SELECT body FROM {TABLES[kind]} WHERE id = ?", object_id)

    # --- writes -----------------------------------------------------------------------
    # Each write takes its own result into the snapshot once it is committed, unless `_settled`
    # (a backend shared by nodes) says the object changed elsewhere meanwhile: then what is
    # stored now is read instead, so that no write or reload puts an older state back.

    async def put_source(self, source: Source, audit_action: str | None) -> None:
        old = self._sources.get(source.id)
        mark = self._mark("source", source.id)
        await self.sql.transaction(_write_source, source, audit_row(audit_action, "source", source.id, old, source))
        if await self._settled("source", source.id, mark):
            self._remember_source(source)
            self._changed("source", source.id)

    async def delete_source(self, source_id: str) -> None:
        old = self._sources.get(source_id)
        mark = self._mark("source", source_id)
        await self.sql.transaction(_delete, "source", source_id, audit_row("delete", "source", source_id, old, None))
        if await self._settled("source", source_id, mark):
            self._forget_source(source_id)
            self._changed("source", source_id)

    async def put_integration(self, integration: Integration, audit_action: str | None) -> None:
        """Store `integration` as it is: for a new one. A change to an existing one goes through
        update_integration, which applies it to what is stored."""
        old = self._integrations.get(integration.id)
        mark = self._mark("integration", integration.id)
        await self.sql.transaction(_write_integration, integration, encode(seal_integration(integration, self.box)),
                                   audit_row(audit_action, "integration", integration.id, old, integration),
                                   self.box.fingerprint)
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
        stored = await self.sql.transaction(_rewrite_integration, integration_id, rewrite, box.fingerprint)
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
        await self.sql.transaction(_delete, "integration", integration_id,
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
                        for destination_id, body in await self.sql.fetch("SELECT id, body FROM alert_destinations")]
        await self.sql.transaction(_reseal, rows, meta, destinations)
        self._box = box
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

    # --- admin sessions -----------------------------------------------------------------

    async def get_session(self, key: str) -> AdminSession | None:
        row = await self.sql.fetchrow("SELECT key, csrf, created_at, expires_at, client FROM admin_sessions "
                                      "WHERE key = ? AND expires_at > ?", key, time.time())
        return AdminSession(*row) if row else None

    async def put_session(self, session: AdminSession) -> None:
        await self.sql.transaction(_put_session, session)

    async def delete_sessions(self, key: str | None) -> int:
        """One session, or every one (key None: the admin token was rotated)."""
        if key is None:
            return await self.sql.execute("DELETE FROM admin_sessions")
        return await self.sql.execute("DELETE FROM admin_sessions WHERE key = ?", key)


def _load_all() -> Op[tuple[list[bytes], list[bytes]]]:
    sources = yield fetch("SELECT body FROM sources")
    integrations = yield fetch("SELECT body FROM integrations")
    return [row[0] for row in sources], [row[0] for row in integrations]


def _write_source(source: Source, audit: AuditRow | None) -> Op[None]:
    yield execute("INSERT INTO sources (id, pipeline_key, body) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE "
                  "SET pipeline_key = excluded.pipeline_key, body = excluded.body",
                  source.id, source.pipeline_key, encode(source), notice=("source", source.id))
    yield from insert_audit(audit)


def _write_integration(integration: Integration, body: bytes, audit: AuditRow | None, key: str) -> Op[None]:
    yield from _same_key(key)
    yield execute("INSERT INTO integrations (id, source_id, body) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE "
                  "SET source_id = excluded.source_id, body = excluded.body",
                  integration.id, integration.source_id, body, notice=("integration", integration.id))
    yield from insert_audit(audit)


def _rewrite_integration(integration_id: str, rewrite: Rewrite, key: str) -> Op[Integration | None]:
    """In one transaction, its row held: read the stored body, `write, result = rewrite(body)`,
    and when `write` is (body, audit) store them. Returns `result` (None: no such row)."""
    body = yield fetchval("SELECT body FROM integrations WHERE id = ?{for_update}", integration_id)
    if body is None:
        return None
    write, result = rewrite(body)
    if write is not None:
        yield from _same_key(key)
        yield execute("UPDATE integrations SET body = ? WHERE id = ?", write[0], integration_id,
                      notice=("integration", integration_id))
        yield from insert_audit(write[1])
    return result


def _same_key(key: str) -> Op[None]:
    """Tokens are sealed only with the key the database was last rotated to (`key`: this
    process's key's fingerprint): a PostgreSQL node that missed a rotation (its serving lock's
    connection was lost meanwhile) must not write tokens that no node can open. FOR SHARE: a
    rotation waits for this transaction. (SQLite: a rotation needs the file's only server
    stopped, so the fingerprint is always this process's.)"""
    stored = yield fetchval("SELECT value FROM meta WHERE key = ?{for_share}", CHECK_META)
    if stored is not None and stored != key:
        raise StorageError("the secret key was rotated since this node started, and the stored tokens are sealed "
                           "with the new key: restart this node with the new key")


def _delete(kind: str, object_id: str, audit: AuditRow | None) -> Op[None]:
    yield execute(f"DELETE FROM {TABLES[kind]} WHERE id = ?", object_id, notice=(kind, object_id))
    if kind == "source":
        for table in ("refusals", "refusal_examples", "source_activity"):
            yield execute(f"DELETE FROM {table} WHERE source_id = ?", object_id)
    yield from insert_audit(audit)


def _reseal(rows: list[tuple[bytes, str]], meta: dict[str, str], destinations: list[tuple[bytes, str]]) -> Op[None]:
    yield executemany("UPDATE integrations SET body = ? WHERE id = ?", rows)
    yield executemany("UPDATE alert_destinations SET body = ? WHERE id = ?", destinations)
    yield executemany(UPSERT_META, list(meta.items()))
    yield execute("DELETE FROM admin_sessions")


def _put_session(session: AdminSession) -> Op[None]:
    yield execute("DELETE FROM admin_sessions WHERE expires_at <= ?", time.time())
    yield execute("INSERT INTO admin_sessions (key, csrf, created_at, expires_at, client) VALUES (?, ?, ?, ?, ?)",
                  *msgspec.structs.astuple(session))
