"""Delivery in one process: a loop per enabled integration (delivery/worker.py), each with
Pinterest's side of it (delivery/pinterest/batch.py), kept running by a supervisor; the
admin's "Send test event"; a flush of what is ready on the way out."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import anyio
import httpx
import msgspec

from delivery.alerts import Volume
from delivery.clock import SYSTEM, Clock
from delivery.config import Integration
from delivery.debugger import DebugHub
from delivery.errorlog import ErrorLog
from delivery.pinterest.batch import PinterestBatches
from delivery.pinterest.credential_check import TestOutcome, check
from delivery.pinterest.credentials import Credentials
from delivery.pinterest.payload import MAX_EVENTS_PER_REQUEST, Event
from delivery.pinterest.policy import Rules
from delivery.pinterest.tokens import TokenKeeper
from delivery.queue import EventQueue
from delivery.ratelimit import ACCOUNT_CALLS_PER_MINUTE, RATE_RECOVERY
from delivery.retry import RetryPolicy
from delivery.store import ConfigStore
from delivery.worker import IntegrationWorker

log = logging.getLogger("signal_edge.delivery")
errors = ErrorLog(log)
SUPERVISE_EVERY = 1.0  # seconds between the supervisor's looks at the workers
IDLE_REFRESH_EVERY = 60  # supervisor turns between looks for idle tokens that are due


class DeliverySettings(msgspec.Struct, frozen=True):
    api_base: str = "https://api.pinterest.com"
    batch_size: int = MAX_EVENTS_PER_REQUEST
    flush_interval: float = 1.0
    max_in_flight: int = 4  # concurrent requests per integration
    # A lease runs out this long after it was last renewed: a heartbeat renews it while its
    # request is in flight, so a node that dies hands its batches over within this time.
    lease_seconds: float = 20.0
    request_timeout: float = 30.0  # a deadline for the whole request, not per read: a trickle ends too
    rate_recovery: float = RATE_RECOVERY  # seconds for a rate halved by a 429 to double back
    account_calls_per_minute: float = ACCOUNT_CALLS_PER_MINUTE  # each ad account's budget, cluster-wide
    retry: RetryPolicy = RetryPolicy()
    auth_recheck: float = 600.0  # a paused integration tries again after this long
    idle_poll: float = 1.0  # the longest a loop sleeps without looking again


class DeliveryService:
    def __init__(self, store: ConfigStore, queue: EventQueue, settings: DeliverySettings,
                 hub: DebugHub | None = None, clock: Clock = SYSTEM) -> None:
        self.store = store
        self.queue = queue
        self.settings = settings
        self.clock = clock
        self.hub = hub or DebugHub()
        self.ssl = httpx.create_ssl_context()  # the CA bundle is read once, not per integration
        self.clients: dict[str, httpx.AsyncClient] = {}
        self.workers: dict[str, IntegrationWorker] = {}
        self.tokens = TokenKeeper(store, settings.api_base, httpx.AsyncClient(timeout=settings.request_timeout,
                                                                               verify=self.ssl), clock)
        self.credentials = Credentials(self.tokens, settings.api_base, settings.request_timeout, clock)
        self.failures: Counter[str] = Counter()  # batches that failed unexpectedly, per integration
        self.loop_failures: Counter[str] = Counter()  # worker loop faults (storage), per integration
        self.stopping = False
        self._tasks: set[asyncio.Task] = set()
        self.volume = Volume()  # events read, by type and arrival: the alert service takes the counts

    async def start(self) -> None:
        released = await self.queue.recover()
        if released:
            log.info("released %d events leased by the previous run; sending them again", released)
        self.store.subscribe(self._on_change)
        for integration in self.store.integrations():
            self._ensure_worker(integration.id)
        self.spawn(self._supervise())

    def client(self, integration_id: str) -> httpx.AsyncClient:
        """Each integration has connections of its own: Pinterest calls that hang for one ad
        account cannot hold the connections another one needs."""
        http = self.clients.get(integration_id)
        if http is None or http.is_closed:
            s = self.settings
            http = self.clients[integration_id] = httpx.AsyncClient(
                timeout=s.request_timeout, verify=self.ssl,
                limits=httpx.Limits(max_connections=s.max_in_flight + 1, max_keepalive_connections=s.max_in_flight),
            )
        return http

    def spawn(self, coro) -> asyncio.Task:
        """A background task that is kept referenced and whose failure is logged."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._spawned_done)
        return task

    def _spawned_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            errors.failure("a delivery background task failed", exc)

    async def _supervise(self) -> None:
        """Restart any worker that ended while its integration is enabled; refresh the access
        tokens of integrations that send nothing meanwhile (a refresh token lives 60 days); down
        to the disk's reserve, give the debugger's room back to events."""
        turns = 0
        while not self.stopping:
            await anyio.sleep(SUPERVISE_EVERY)
            turns += 1
            for integration in self.store.integrations():
                worker = self.workers.get(integration.id)
                if worker is not None and worker.finished and integration.enabled and not self.stopping:
                    log.warning("the delivery worker of integration %s had stopped; restarting it", integration.id)
                self._ensure_worker(integration.id)
            if self.queue.disk_low():
                self.spawn(self.store.shrink_debug())
            if turns % IDLE_REFRESH_EVERY == 0:
                self.spawn(self.credentials.refresh_idle(self.store.integrations()))

    def notify(self, topic: str, events: int = 1, priority: bool = True) -> None:
        """New events for `topic` are queued. Cheap on the ingest path: the worker is woken
        only when it has something to do now (see IntegrationWorker.offer)."""
        worker = self.workers.get(topic)
        if worker:
            worker.offer(events, priority)

    def _on_change(self, object_type: str, object_id: str) -> None:
        if self.stopping:
            return
        if object_type == "integration":
            self._ensure_worker(object_id, config_changed=True)
        elif object_type == "source":
            for integration in self.store.integrations(object_id):
                self.notify(integration.id)

    def _ensure_worker(self, integration_id: str, config_changed: bool = False) -> None:
        integration = self.store.integration(integration_id)
        worker = self.workers.get(integration_id)
        if integration is None or not integration.enabled:
            if worker:
                worker.stop()
            if integration is None and integration_id in self.clients:
                self.spawn(self._close_after(self.clients.pop(integration_id), worker))
            return
        if worker is None or worker.finished or worker.stopped:
            worker = self.workers[integration_id] = IntegrationWorker(self, integration, self._handler(integration))
            worker.start()
        elif config_changed:
            worker.config_changed(integration)

    @staticmethod
    async def _close_after(http: httpx.AsyncClient, worker: IntegrationWorker | None) -> None:
        """A deleted integration's connections close once its batches in flight have finished:
        closed under them, a request would fail with "the client has been closed"."""
        try:
            if worker is not None and worker.task is not None:
                await asyncio.wait([worker.task])
        finally:  # at shutdown too, when stop() cancels this wait
            await http.aclose()

    def _handler(self, integration: Integration) -> PinterestBatches:
        s = self.settings
        return PinterestBatches(integration, self.client(integration.id), self.credentials,
                                Rules(s.retry, s.auth_recheck), self.clock, s.account_calls_per_minute,
                                s.rate_recovery)

    async def stop(self, grace: float = 5.0) -> None:
        """Flush what is ready within `grace` seconds; the rest stays queued. A request already
        in flight then may finish within its own timeout: cancelled, it would be sent again."""
        self.stopping = True
        finish_within = self.settings.request_timeout + 1.0
        async with anyio.create_task_group() as draining:
            for worker in list(self.workers.values()):
                draining.start_soon(worker.drain, grace, finish_within)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*(http.aclose() for http in (*self.clients.values(), self.tokens.http)),
                             return_exceptions=True)

    async def send_test(self, integration: Integration, sample: Event) -> TestOutcome:
        """The admin's "Send test event" (delivery/pinterest/credential_check.py); when a token
        works, delivery resumes at once (no need to wait for the recheck)."""
        outcome, delivering = await check(integration, sample, self.credentials, self.client(integration.id),
                                          self.store, self.clock)
        worker = self.workers.get(integration.id)
        if delivering and worker:
            worker.resume()
        return outcome
