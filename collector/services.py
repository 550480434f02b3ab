"""What the edge, the admin API and the delivery loop share in one process."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from collector.admin.auth import AdminAuth
from collector.settings import Settings
from delivery.debugger import DebugHub
from delivery.retry import RetryPolicy
from delivery.secrets import SecretBox
from delivery.sqlite.config_store import SqliteConfigStore
from delivery.sqlite.db import Database
from delivery.sqlite.event_queue import SqliteEventQueue
from delivery.worker import DeliveryService, DeliverySettings


@dataclass
class Services:
    settings: Settings
    db: Database
    store: SqliteConfigStore
    queue: SqliteEventQueue
    hub: DebugHub
    delivery: DeliveryService
    auth: AdminAuth
    new_admin_token: str | None = None  # generated at this start: print it once

    def notify(self, topic: str, events: int = 1, priority: bool = True) -> None:
        self.delivery.notify(topic, events, priority)

    async def close(self) -> None:
        await self.delivery.stop(self.settings.shutdown_grace)
        self.db.close()


async def open_services(settings: Settings) -> Services:
    Path(settings.db).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db, settings.db_synchronous.upper())
    db.start()
    store = SqliteConfigStore(db)
    secret_key = settings.secret_key or await store.get_meta("secret_key")
    if not secret_key:
        secret_key = secrets.token_urlsafe(32)
        await store.set_meta("secret_key", secret_key)
    await store.open(SecretBox(secret_key))
    queue = SqliteEventQueue(db)
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
            retry=RetryPolicy(delays=tuple(settings.retry_delays)),
            auth_recheck=settings.auth_recheck,
        ),
        hub,
    )
    auth = AdminAuth(store, secret_key)
    new_token = await auth.ensure(settings.admin_token)
    return Services(settings, db, store, queue, hub, delivery, auth, new_token)
