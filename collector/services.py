"""What the edge, the admin API and the delivery loop share in one process."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from collector.admin.auth import AdminAuth
from collector.keys import load_secret_key
from collector.lag import LagProbe
from collector.settings import Settings
from delivery.debugger import DebugHub
from delivery.retry import RetryPolicy
from delivery.secrets import SecretBox
from delivery.sqlite.config_store import SqliteConfigStore
from delivery.sqlite.db import Database
from delivery.sqlite.event_queue import SqliteEventQueue
from delivery.worker import DeliveryService, DeliverySettings


class StorageProblem(NamedTuple):
    reason: str
    since: float


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
    lag: LagProbe = field(default_factory=lambda: LagProbe())

    def storage_problem(self) -> StorageProblem | None:
        """Why the database failed its last transaction, until one succeeds again."""
        problem, since = self.db.problem, self.db.problem_since
        return StorageProblem(problem, since) if problem and since else None

    def notify(self, topic: str, events: int = 1, priority: bool = True) -> None:
        self.delivery.notify(topic, events, priority)

    async def close(self) -> None:
        await self.delivery.stop(self.settings.shutdown_grace)
        self.db.close()


async def open_services(settings: Settings) -> Services:
    Path(settings.db).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db, settings.db_synchronous.upper())
    db.start()
    try:
        store = SqliteConfigStore(db)
        secret_key = await load_secret_key(store, settings.secret_key, settings.key_file)
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
    except BaseException:
        db.close()
        raise
    return Services(settings, db, store, queue, hub, delivery, auth, new_token)
