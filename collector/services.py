"""What the edge, the admin API and the delivery loop share in one process."""

from __future__ import annotations

import contextlib
import inspect
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import anyio

from collector.activity import ActivityLog
from collector.admin.auth import AdminAuth
from collector.keys import load_secret_key
from collector.lag import LagProbe
from collector.settings import Settings
from delivery.alerts import AlertService, AlertSettings, Volume
from delivery.debugger import DebugHub
from delivery.pinterest.eqs import EqsReader
from delivery.queue import EventQueue
from delivery.retry import RetryPolicy
from delivery.secrets import SecretBox
from delivery.service import DeliveryService, DeliverySettings
from delivery.store import AlertStore, ConfigStore

DISK_LOW = ("the disk is down to the room kept for delivery (SIGNAL_DISK_RESERVE_MB): ingestion waits until "
            "delivery frees some, or free disk space")


class StorageProblem(NamedTuple):
    reason: str
    since: float


def node_id() -> str:
    """This process's name in the cluster: its leases and counters carry it."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class Services:
    settings: Settings
    db: Any  # delivery.sqlite.db.Database or delivery.postgres.db.PgDatabase
    store: ConfigStore
    queue: EventQueue
    hub: DebugHub
    delivery: DeliveryService
    auth: AdminAuth
    node: str
    activity: ActivityLog
    alerts: AlertService
    eqs: EqsReader  # Pinterest's Event Quality Score of each integration
    new_admin_token: str | None = None  # generated at this start: print it once
    lag: LagProbe = field(default_factory=lambda: LagProbe())
    serving: Any = None  # PostgreSQL: this process's ServingLock

    def storage_problem(self) -> StorageProblem | None:
        """Why the database failed its last transaction, until one succeeds again; or that its
        disk is down to the reserve kept for delivery."""
        problem, since = self.db.problem, self.db.problem_since
        if problem and since:
            return StorageProblem(problem, since)
        if self.queue.disk_low():
            return StorageProblem(DISK_LOW, self.db.disk_low_since)
        return None

    def notify(self, topic: str, events: int = 1, priority: bool = True) -> None:
        self.delivery.notify(topic, events, priority)

    async def close(self) -> None:
        await self.delivery.stop(self.settings.shutdown_grace)
        await self.alerts.close()
        await self.activity.flush()
        await self.queue.close()
        if self.serving is not None:
            await self.serving.close()
        await close_database(self.db)


async def close_database(db) -> None:
    closing = db.close()  # SQLite's writer thread closes at once; the PostgreSQL pool is awaited
    if inspect.isawaitable(closing):
        await closing


async def open_backend(settings: Settings, node: str, serving: bool = True,
                       clock: Callable[[], float] | None = None) -> tuple[Any, ConfigStore, EventQueue]:
    """(database, config store, queue) of the configured backend, connected and migrated.
    `serving`: this process serves the database (a SQLite file then refuses a second server).
    `clock`: the queue's clock for tests (default: PostgreSQL's own, or this process's)."""
    if settings.database_url:
        from collector.copy import refuse_unfinished
        from delivery.postgres.config_store import PgConfigStore
        from delivery.postgres.db import PgDatabase
        from delivery.postgres.event_queue import PgEventQueue

        # A transaction left idle (a frozen node) is ended well within a lease, so that its
        # rows are taken over in time.
        pg = PgDatabase(settings.database_url, settings.pool_size, name=f"signal-edge {node}",
                        idle_timeout=min(10.0, settings.lease_seconds / 2))
        await pg.start()
        try:
            await refuse_unfinished(pg)
        except BaseException:
            await pg.close()
            raise
        return pg, PgConfigStore(pg, node), PgEventQueue(pg, node, clock)
    from delivery.sqlite.config_store import SqliteConfigStore
    from delivery.sqlite.db import Database
    from delivery.sqlite.event_queue import SqliteEventQueue
    from delivery.sqlite.files import in_memory

    if not in_memory(settings.db):  # (path resolution and mkdir touch the disk: off the event loop)
        await anyio.to_thread.run_sync(_make_parent, settings.db)
    db = Database(settings.db, settings.db_synchronous.upper(), exclusive=serving,
                  disk_reserve=int(settings.disk_reserve_mb * 1024 * 1024) if serving else 0)
    db.start()
    return db, SqliteConfigStore(db), SqliteEventQueue(db, clock)


def _make_parent(db: str) -> None:
    Path(db).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)


@contextlib.asynccontextmanager
async def serving_stopped(settings: Settings):
    """Held while no process serves the deployment (a secret key rotation). A SQLite file's lock
    was taken when it was opened to serve; PostgreSQL's serving nodes each hold a lock of theirs."""
    if not settings.database_url:
        yield
        return
    from delivery.postgres.serving import serving_stopped as no_node_serves

    async with no_node_serves(settings.database_url):
        yield


async def open_services(settings: Settings) -> Services:
    node = node_id()
    db, store, queue = await open_backend(settings, node)
    serving = None
    try:
        if settings.database_url:  # held before the key is read: a rotation that runs now is waited out
            from delivery.postgres.serving import ServingLock

            serving = ServingLock(settings.database_url, node)
            await serving.hold()
        secret_key = await load_secret_key(store, settings.secret_key, settings.key_file)
        await store.open(SecretBox(secret_key))
        store.identity_retention = settings.identity_retention_days * 86400
        await store.load_suppressions()
        store.listen()  # other nodes' changes
        await queue.open()
        hub = DebugHub()
        delivery = DeliveryService(
            store,
            queue,
            DeliverySettings(
                api_base=settings.pinterest_api_base,
                flush_interval=settings.flush_interval,
                batch_size=settings.batch_size,
                max_in_flight=settings.max_in_flight,
                request_timeout=settings.request_timeout,
                lease_seconds=settings.lease_seconds,
                rate_recovery=settings.rate_recovery,
                account_calls_per_minute=settings.account_calls_per_minute,
                retry=RetryPolicy(delays=tuple(settings.retry_delays)),
                auth_recheck=settings.auth_recheck,
            ),
            hub,
        )
        if settings.database_url:
            from delivery.postgres.channel import Channel
            from delivery.postgres.relay import DebugRelay

            DebugRelay(db, hub, node, Channel(store.box)).start()  # the live debugger shows every node's events
        auth = AdminAuth(store, secret_key)
        new_token = await auth.ensure(settings.admin_token)
        alert_settings = alert_settings_of(settings)
        delivery.volume = Volume(alert_settings.bucket)
        alerts = AlertService(store, queue, alert_store_of(settings, db), delivery.volume, alert_settings, node,
                              lambda: (db.problem, db.problem_since) if db.problem and db.problem_since else None)
    except BaseException:
        if serving is not None:
            await serving.close()
        await close_database(db)
        raise
    return Services(settings, db, store, queue, hub, delivery, auth, node, ActivityLog(store), alerts,
                    EqsReader(store, delivery.tokens, settings.pinterest_api_base), new_token, serving=serving)


def alert_settings_of(settings: Settings) -> AlertSettings:
    return AlertSettings(interval=settings.alert_interval, failing_after=settings.alert_failing_minutes * 60,
                         dead_letters=settings.alert_dead_letters, drop_window=settings.alert_drop_window,
                         drop_baseline=settings.alert_drop_baseline, drop_fraction=settings.alert_drop_fraction,
                         drop_min_events=settings.alert_drop_min_events)


def alert_store_of(settings: Settings, db: Any) -> AlertStore:
    """The AlertStore of the configured backend (delivery/alerts/)."""
    from delivery.sql.alert_store import SqlAlertStore

    if settings.database_url:
        from delivery.postgres.driver import PgDriver

        return SqlAlertStore(PgDriver(db))
    from delivery.sqlite.driver import SqliteDriver

    return SqlAlertStore(SqliteDriver(db))
