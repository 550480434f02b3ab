"""The config store interface: sources, integrations, secrets key and admin token hash,
identity memory, the audit log and the debugger log.

Reads of sources and integrations come from an in-memory snapshot (the hot path looks
up a source per request); writes are durable when they return and update the snapshot.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from delivery.config import Health, Integration, Source
from delivery.events import Identity

if TYPE_CHECKING:
    from delivery.erasure import Person, Suppressions
    from delivery.secrets import SecretBox


class StorageError(Exception):
    """The database could not do what was asked through no fault of the data: a full disk, a
    lock held too long, an I/O error, a corrupt page, a lost connection. The caller answers 503
    or tries again later. The message says what happened and is safe to show."""


class StorageUnusable(Exception):
    """The database cannot be used at all (not a database, corrupt, a newer schema, locked by
    another process). Raised at start; the message is one line that says what to do."""


class AuditEntry(msgspec.Struct):
    id: int
    at: float
    action: str  # create | update | delete | rotate-key | replay | admin-token
    object_type: str
    object_id: str
    old: dict | None = None  # secrets redacted
    new: dict | None = None


NO_JSON = msgspec.Raw(b"null")


class DebugRecord(msgspec.Struct, omit_defaults=True):
    """One event's journey to one integration, as the debugger shows it."""

    at: float
    source_id: str
    event_id: str
    event: str  # the event's own name (page, or the track name)
    status: str  # queued | delivered | retrying | failed | filtered | skipped
    integration_id: str | None = None
    pinterest_event: str | None = None
    attempts: int = 0
    message: str | None = None  # Pinterest's words, or why it was not sent
    warnings: list[str] = []
    incoming: msgspec.Raw = NO_JSON  # the event as received (an EdgeEvent: PII hashed)
    payload: msgspec.Raw = NO_JSON  # the Pinterest event we built
    id: int | None = None


class StoredIdentity(msgspec.Struct):
    user_id: str | None
    identity: Identity


class AdminSession(msgspec.Struct):
    """A logged-in admin UI session. `key` is the SHA-256 of the session id in the cookie:
    the database alone cannot be used to take over a session."""

    key: str
    csrf: str
    created_at: float
    expires_at: float
    client: str | None = None


class Refusal(msgspec.Struct):
    """One refused request or event of a source, as the source page shows it (no raw values)."""

    at: float
    reason: str  # origin_not_allowed | rate_limited | invalid_event | body_too_large | ...
    detail: str  # the refused origin, or the error message that names the field


class SourceActivity(msgspec.Struct):
    refused: dict[str, int]  # reason -> refused requests or events
    recent_refusals: list[Refusal]  # newest first, the last few kept
    last_event_at: float | None = None  # when an event was last accepted


ChangeListener = Callable[[str, str], None]  # (object_type, object_id)


class ConfigStore(Protocol):
    """What the app asks of configuration storage (delivery/sql/config_store.py implements it
    for SQLite and PostgreSQL). Reads of sources and integrations are from memory."""

    MISSING: object  # what cached_identity() answers when it does not know
    identity_retention: float  # seconds an identity is kept after its last change
    suppressions: Suppressions

    async def open(self, box: SecretBox) -> None:
        """Load the snapshot; `box` seals and opens the stored secrets."""

    @property
    def box(self) -> SecretBox: ...

    def source(self, source_id: str) -> Source | None: ...
    def source_by_key(self, pipeline_key: str) -> Source | None: ...
    def source_by_server_key(self, server_key_sha256: str) -> Source | None: ...
    def sources(self) -> list[Source]: ...
    def integration(self, integration_id: str) -> Integration | None: ...
    def integrations(self, source_id: str | None = None) -> list[Integration]: ...
    def subscribe(self, listener: ChangeListener) -> None: ...
    def listen(self) -> None:
        """Follow changes made by other processes (a no-op for a one-process backend)."""

    async def put_source(self, source: Source, audit_action: str | None) -> None: ...
    async def delete_source(self, source_id: str) -> None: ...
    async def put_integration(self, integration: Integration, audit_action: str | None) -> None: ...
    async def update_integration(self, integration_id: str, change: Callable[[Integration], Integration | None],
                                 audit_action: str | None, notify: bool = True) -> Integration | None:
        """Apply `change` to the integration as stored now, in one transaction that holds its row;
        returns it as stored after (None: there is none)."""
    async def delete_integration(self, integration_id: str) -> None: ...
    async def reload_integration(self, integration_id: str) -> Integration | None:
        """The integration as stored now, into the snapshot too."""

    def exclusive(self, name: str) -> AbstractAsyncContextManager[None]:
        """Only one holder of `name` at a time, across every process of the deployment."""
    async def set_health(self, integration_id: str, health: Health) -> None: ...

    async def get_meta(self, key: str) -> str | None: ...
    async def set_meta(self, key: str, value: str) -> None: ...
    async def delete_meta(self, key: str) -> None: ...
    async def init_meta(self, key: str, value: str) -> str:
        """Store `value` unless `key` has one already; returns what is stored."""
    async def reseal(self, box: SecretBox, meta: dict[str, str]) -> int: ...

    def cached_identity(self, anonymous_id: str) -> Any:
        """The cached identity, None when known absent, or MISSING (ask `identity()`)."""
    async def identity(self, anonymous_id: str) -> StoredIdentity | None: ...
    async def save_identity(self, anonymous_id: str, stored: StoredIdentity) -> None: ...
    async def user_identity(self, user_id: str) -> StoredIdentity | None:
        """What a site's server said about `user_id` (server-side calls come without the
        browser's cookie); kept under the userId's hash, expiring like every identity."""
    async def save_user_identity(self, user_id: str, stored: StoredIdentity) -> None: ...
    async def prune_identities(self, limit: int = 1000) -> int:
        """Delete up to `limit` identities past their retention; returns how many went."""

    async def get_session(self, key: str) -> AdminSession | None: ...
    async def put_session(self, session: AdminSession) -> None: ...
    async def delete_sessions(self, key: str | None) -> int:
        """One session, or every one (key None: the admin token was rotated)."""

    async def record_activity(self, refused: dict[tuple[str, str], int], examples: list[tuple[str, Refusal]],
                              last_events: dict[str, float]) -> None:
        """Add to the refusal counts ((source, reason) -> n), keep the examples (the last few per
        source), and move each source's last event time forward."""

    async def activity(self, source_ids: list[str]) -> dict[str, SourceActivity]: ...

    async def prune(self, kind: str, before: float, limit: int = 1000) -> int:
        """Retention: delete up to `limit` records of `kind` (debug, audit, alerts, volume,
        suppressions) older than `before`."""

    async def load_suppressions(self) -> None: ...
    async def suppress(self, keys: set[str], until: float) -> None: ...
    async def erase_identities(self, person: Person) -> int: ...
    async def erase_debug(self, person: Person) -> int: ...

    async def audit(self, action: str, object_type: str, object_id: str,
                    old: dict | None, new: dict | None) -> None: ...
    async def audit_log(self, before_id: int | None, limit: int) -> list[AuditEntry]: ...

    async def add_debug(self, records: list[DebugRecord]) -> None: ...
    async def shrink_debug(self) -> None:
        """The disk is low: give the debugger's room back, all but its newest records."""
    async def debug_records(
        self, source_id: str | None, integration_id: str | None, status: str | None, before_id: int | None, limit: int
    ) -> list[DebugRecord]: ...


class AlertStore(Protocol):
    """Where delivery/alerts.py keeps its state: destinations, open incidents, history and event
    counts, as the JSON bodies of its Structs (delivery/sql/alert_store.py implements it)."""

    async def destinations(self) -> list[bytes]: ...
    async def put_destination(self, destination_id: str, body: bytes) -> None: ...
    async def delete_destination(self, destination_id: str) -> None: ...
    async def incidents(self) -> list[bytes]: ...
    async def change_incidents(self, opened: list[tuple[str, bytes]], closed: list[str]) -> None:
        """Open incidents (one already open stays as it was) and close others, together."""
    async def add_history(self, at: float, body: bytes) -> int: ...
    async def update_history(self, record_id: int, body: bytes) -> None: ...
    async def history(self, before_id: int | None, limit: int) -> list[tuple[int, bytes]]:
        """(id, body) newest first, below `before_id`."""
    async def add_volume(self, rows: list[tuple[str, str, float, int]]) -> None:
        """Add (topic, event, bucket, count) rows to the counts."""
    async def volume(self, since: float) -> list[tuple[str, str, float, int]]: ...
