"""The alert service: its destinations (for the admin API), the loop that judges the rules every
interval, and the history of every alert sent."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import msgspec
from cryptography.exceptions import InvalidTag

from delivery.alerts.model import AlertRecord, AlertSettings, Attempted, Destination, Incident
from delivery.alerts.rules import Judge
from delivery.alerts.volume import Volume
from delivery.alerts.webhooks import Webhooks
from delivery.clock import SYSTEM, Clock
from delivery.store import StorageError

log = logging.getLogger("signal_edge.alerts")
_encode = msgspec.json.encode


class AlertService:
    def __init__(self, store, queue, alert_store, volume: Volume, settings: AlertSettings, node: str,
                 storage_problem: Callable[[], tuple[str, float] | None], clock: Clock = SYSTEM) -> None:
        self.store, self.alert_store = store, alert_store
        self.volume, self.settings, self.node = volume, settings, node
        self.clock = clock
        self.judge = Judge(store, queue, alert_store, settings, node, storage_problem)
        self.webhooks = Webhooks(node, self._save, clock)
        self._unsaved: list[AlertRecord] = []  # history not stored yet (the storage failed)
        self._saving = asyncio.Lock()
        self._destinations: list[Destination] = []
        self._stopping = False

    # --- destinations (the admin API) ---------------------------------------------------------

    async def destinations(self) -> list[Destination]:
        self._destinations = [d for d in map(self._open, await self.alert_store.destinations()) if d is not None]
        return self._destinations

    async def put_destination(self, destination: Destination, action: str) -> None:
        await self.alert_store.put_destination(destination.id, self._seal(destination))
        await self.store.audit(action, "alert_destination", destination.id, None,
                               {"name": destination.name, "kind": destination.kind, "enabled": destination.enabled})
        await self.destinations()

    async def delete_destination(self, destination_id: str) -> None:
        await self.alert_store.delete_destination(destination_id)
        await self.store.audit("delete", "alert_destination", destination_id, None, None)
        await self.destinations()

    def _seal(self, destination: Destination) -> bytes:
        return _encode(msgspec.structs.replace(destination, url=self.store.box.seal(destination.url)))

    def _open(self, body: bytes) -> Destination | None:
        sealed = msgspec.json.decode(body, type=Destination)
        try:
            return msgspec.structs.replace(sealed, url=self.store.box.open(sealed.url))
        except (InvalidTag, ValueError):  # sealed with a secret key since rotated: set its URL again
            log.warning("alert destination %s cannot be read with this secret key; set its URL again", sealed.id)
            return None

    async def test(self, destination: Destination) -> Attempted:
        """One test alert to `destination`, now, and what came of it (kept in the history too)."""
        record = AlertRecord(at=self.clock.time(), rule="test", subject=destination.id, state="test",
                             message=f"a test alert from signal-edge ({self.node}) to {destination.name}")
        outcome = await self.webhooks.attempt(record, destination)
        record.deliveries = {destination.id: outcome}
        await self._save(record)
        return outcome

    async def history(self, before_id: int | None, limit: int) -> list[AlertRecord]:
        rows = await self.alert_store.history(before_id, limit)
        return [msgspec.structs.replace(msgspec.json.decode(body, type=AlertRecord), id=row_id)
                for row_id, body in rows]

    async def incidents(self) -> list[Incident]:
        stored = [msgspec.json.decode(body, type=Incident) for body in await self.alert_store.incidents()]
        return sorted([*stored, *self.judge.local.values()], key=lambda i: i.opened_at)

    # --- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        with contextlib.suppress(StorageError):
            await self.destinations()
        while not self._stopping:
            await asyncio.sleep(self.settings.interval)
            try:
                await self.evaluate(self.clock.time())
            except StorageError as exc:
                log.warning("alerts: could not judge the alert rules now (%s); trying again", exc)
            except Exception:  # a bug here must not end alerting for the rest of the run
                log.exception("alerts: judging the alert rules failed; trying again")

    async def close(self) -> None:
        self._stopping = True
        await self.webhooks.close()

    async def evaluate(self, now: float) -> list[AlertRecord]:
        """Judge every rule once; fire and resolve what changed. Returns the alerts sent."""
        records = self.judge.storage(now)
        if self.judge.storage_problem() is None:
            await self._flush_volume()
            await self.destinations()
            records += await self.judge.stored(now)
            pending, self._unsaved = [*self._unsaved, *records], []
            for record in pending:  # one that fails to save goes back into _unsaved
                await self._save(record)
        else:
            self._unsaved += records
        for record in records:
            self.webhooks.dispatch(record, self._destinations)
        return records

    async def _flush_volume(self) -> None:
        rows = self.volume.take()
        if rows:
            try:
                await self.alert_store.add_volume(rows)
            except StorageError:
                for topic, event, bucket, count in rows:  # kept for the next try
                    key = (topic, event, bucket)
                    self.volume.counts[key] = self.volume.counts.get(key, 0) + count
                raise

    async def _save(self, record: AlertRecord) -> None:
        """Into the history: stored once, then updated as its deliveries go (one save at a time, so
        that a record is never added twice)."""
        async with self._saving:
            try:
                if record.id is None:
                    record.id = await self.alert_store.add_history(record.at, _encode(record))
                else:
                    await self.alert_store.update_history(record.id, _encode(record))
            except StorageError:
                if record not in self._unsaved:
                    self._unsaved.append(record)
