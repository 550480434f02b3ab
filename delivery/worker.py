"""The delivery loop of one integration: lease a batch, send it, settle it, back off.

It knows nothing of the vendor: a Handler (delivery/pinterest/batch.py) makes a leased batch
into requests and says what became of each event, and may pause the integration, hold it back
or slow its ad account (the Control methods below). The loop waits for work, holds back while
told to, paces its requests by the queue's rate limiter (the integration's ceiling and its ad
account's budget), and keeps up to SIGNAL_MAX_IN_FLIGHT batches in flight in a task group,
each with its lease renewed while it is sent.

At-least-once: an event leaves the queue only in the same transaction that records what
Pinterest answered for it; anything leased when the process dies is leased again after the
restart (Pinterest deduplicates on event_id + event_name).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Protocol

import anyio

from delivery import logcontext
from delivery.config import Health, Integration
from delivery.errorlog import ErrorLog, describe
from delivery.job import Control, Job
from delivery.queue import Leased
from delivery.ratelimit import Budget
from delivery.store import StorageError

if TYPE_CHECKING:
    from delivery.service import DeliveryService, DeliverySettings

log = logging.getLogger("signal_edge.delivery")
errors = ErrorLog(log)
MAX_STEP_BACKOFF = 10.0  # longest wait after the worker loop fails (a storage fault, a bug)
DRAIN_LOOK = 0.05  # seconds between looks at a draining worker: is what was ready sent?


class Handler(Protocol):
    """The vendor's side of an integration's loop."""

    def budget(self, integration: Integration) -> Budget:
        """What paces the integration's requests."""

    def changed(self, integration: Integration) -> bool:
        """The integration's configuration changed: True when what waited for better
        credentials may go now."""

    async def handle(self, job: Job, control: Control) -> None:
        """Send the batch; record each event's fate in `job`."""


class IntegrationWorker:
    def __init__(self, service: DeliveryService, integration: Integration, handler: Handler) -> None:
        self.service = service
        self.clock = service.clock
        self.id = integration.id
        self.handler = handler
        self.limiter = service.queue.rate_limiter(integration.id, handler.budget(integration))
        self.paused_until = 0.0  # credentials or account problem: until fixed (or rechecked)
        self.backoff_until = 0.0  # the vendor failing: hold new batches back for a while
        self.draining = False
        self.stopped = False  # leases nothing more (disabled, deleted, stopping)
        self.finished = False
        self.inflight = 0  # batches being sent
        self.task: asyncio.Task | None = None
        self._idle = False  # nothing ready to send (what waits for a retry time does not count)
        self._unseen = 0  # events offered since the last look at the queue
        self._wake: anyio.Event | None = None  # set while the loop sleeps
        # Made in run(), inside the event loop:
        self._scope: anyio.CancelScope | None = None  # everything; its deadline ends requests after a drain
        self._leasing: anyio.CancelScope | None = None  # the loop that leases
        self._batches: anyio.abc.TaskGroup | None = None
        self._slots: anyio.Semaphore | None = None

    @property
    def settings(self) -> DeliverySettings:
        return self.service.settings  # read at each use: a test may change them on a running service

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=f"delivery:{self.id}")

    def stop(self) -> None:
        """Lease nothing more; batches in flight finish (each within its request timeout)."""
        self.stopped = True
        if self._leasing is not None:
            self._leasing.cancel()

    async def run(self) -> None:
        """Until the integration is disabled or deleted. A failure of a step (a storage fault,
        a bug) is logged in one line and retried with backoff: it never ends delivery."""
        logcontext.bind(integration=self.id)  # every line this worker and its batches log names it
        self._slots = anyio.Semaphore(self.settings.max_in_flight)
        try:
            with anyio.CancelScope() as self._scope:
                async with anyio.create_task_group() as self._batches:
                    with anyio.CancelScope() as self._leasing:
                        if not self.stopped:
                            await self._loop()
                    # leaving the task group waits for the batches in flight
        finally:
            self.finished = True

    async def _loop(self) -> None:
        failures = 0
        while True:
            try:
                if not await self._step():
                    return
                failures = 0
            except Exception as exc:
                failures += 1
                self.service.loop_failures[self.id] += 1
                delay = min(MAX_STEP_BACKOFF, 0.5 * 2 ** min(failures - 1, 6))
                what = f"delivery for integration {self.id} failed ({failures} in a row); trying again in {delay:g}s"
                if isinstance(exc, StorageError):
                    log.warning("%s: %s", what, exc)
                else:
                    errors.failure(what, exc)
                await self._sleep(delay)

    async def drain(self, grace: float, finish_within: float) -> None:
        """Send what is ready for up to `grace` seconds, then lease nothing more; requests in
        flight may finish within `finish_within` seconds more (cancelled, they would go again)."""
        self.draining = True
        self.wake()
        with anyio.move_on_after(grace):
            # polled: the three conditions change in several places, and this runs once, at shutdown
            while not (self.finished or (self._idle and not self.inflight)):  # noqa: ASYNC110
                await anyio.sleep(DRAIN_LOOK)
        self.stop()
        if self._scope is not None:
            self._scope.deadline = anyio.current_time() + finish_within
        if self.task is not None:
            await asyncio.wait([self.task])

    async def _step(self) -> bool:
        """Wait for work, or lease one batch and start sending it; False when there is nothing
        more to do (the integration is disabled or gone)."""
        settings = self.settings
        queue = self.service.queue
        integration = self.service.store.integration(self.id)
        if integration is None or not integration.enabled:
            return False
        if integration.paused:
            await self._sleep(3600)  # a config change (resume) wakes it
            return True
        now = self.clock.time()
        hold = max(self.paused_until, self.backoff_until)
        if now < hold:
            await self._sleep(min(hold - now, settings.idle_poll))  # a clock that jumps is seen soon
            return True
        self._unseen = 0
        ready = await queue.ready(self.id, settings.batch_size)
        due = ready.priority or ready.full or (
            ready.waited is not None and (self.draining or ready.waited >= settings.flush_interval))
        if not due:
            self._idle = ready.waited is None
            waits = [settings.idle_poll]
            if ready.waited is not None:
                waits.append(settings.flush_interval - ready.waited)
            if ready.next_in is not None:
                waits.append(ready.next_in)
            await self._sleep(min(waits))
            return True
        self._idle = False
        await self._lease(integration, ready.priority)
        return True

    async def _lease(self, integration: Integration, priority: bool) -> None:
        """A slot, a token of the rate budget, then the batch: leased last, so that the most
        urgent events are the ones that go."""
        slots, batches = self._slots, self._batches
        assert slots is not None and batches is not None  # made in run(), which calls this
        await slots.acquire()
        try:
            await self.limiter.acquire(priority)
            leased = await self.service.queue.lease(self.id, self.settings.batch_size, self.settings.lease_seconds)
        except BaseException:
            slots.release()
            raise
        if not leased:
            slots.release()
            return
        self.inflight += 1
        batches.start_soon(self._batch, integration, leased, slots)

    def offer(self, events: int, priority: bool) -> None:
        """Wake for a priority event, the first event into an empty queue (it starts the flush
        clock), or once a full batch may be waiting; otherwise the planned wake-up will do."""
        self._unseen += events
        if priority or self._idle or self._unseen >= self.settings.batch_size:
            self.wake()

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        self._wake = wake = anyio.Event()
        with anyio.move_on_after(max(0.001, seconds)):
            await wake.wait()
        self._wake = None

    def config_changed(self, integration: Integration) -> None:
        budget = self.handler.budget(integration)
        if budget.account != self.limiter.budget.account:
            self.limiter = self.service.queue.rate_limiter(self.id, budget)
        elif budget != self.limiter.budget:
            self.limiter.reconfigure(budget)
        if self.handler.changed(integration):
            self.resume()
        self.wake()

    def resume(self) -> None:
        """Credentials fixed: whatever waited for them goes out now."""
        if self.paused_until:
            self.paused_until = 0.0
            self.service.spawn(self.service.queue.reschedule(self.id))
            self.wake()

    # --- one batch ----------------------------------------------------------------------

    async def _batch(self, integration: Integration, leased: list[Leased], slot: anyio.Semaphore) -> None:
        """Send one leased batch and settle it; gives back its `slot` of the in-flight limit."""
        try:
            job = Job(integration, self.service.store.source(integration.source_id), leased, self.clock.time(),
                      self.service.hub.watched, self.service.volume)
            async with anyio.create_task_group() as heartbeat:
                heartbeat.start_soon(self._keep_leased, [item.id for item in leased])
                try:
                    await self.handler.handle(job, self)
                except Exception as exc:  # a bug or a fault nobody foresaw: counted, so it cannot loop forever
                    self._failed(job, exc)
                heartbeat.cancel_scope.cancel()
            await self._finish(job)
        except Exception as exc:  # settling failed (a storage fault): the lease runs out and it goes again
            errors.failure(f"a batch for integration {self.id} could not be settled; it is sent again when "
                           "its lease runs out", exc, logging.WARNING)
        finally:
            self.inflight -= 1
            slot.release()

    async def _keep_leased(self, ids: list[int]) -> None:
        """Renew the batch's lease every third of its length while it is being sent."""
        lease = self.settings.lease_seconds
        while True:
            await anyio.sleep(lease / 3)
            try:
                await self.service.queue.extend(self.id, ids, lease)
            except Exception as exc:  # the lease may run out: the batch is then sent again
                log.warning("integration %s: could not renew a lease: %s", self.id, exc)

    def _failed(self, job: Job, exc: Exception) -> None:
        errors.failure(f"a batch of {len(job.leased)} events for integration {self.id} failed; "
                       "its events are retried", exc)
        self.service.failures[self.id] += 1
        job.failed(f"internal error while sending ({describe(exc)})", self.settings.retry, self.clock.time())

    async def _finish(self, job: Job) -> None:
        service = self.service
        await service.queue.settle(self.id, job.settlement)
        try:
            # Down to the disk's reserve, the room is kept for settling: a Pinterest outage
            # writes a record per event and attempt. The live debugger still shows them.
            if not service.queue.disk_low():
                await service.store.add_debug(job.kept)
        except Exception as exc:  # the events are settled; only their debugger records are lost
            errors.failure(f"integration {self.id}: the debugger log could not be written", exc, logging.WARNING)
        health = self._health_after(job)
        if health is not None:
            await service.store.set_health(self.id, health)
        if job.live:
            service.hub.publish(job.live)

    def _health_after(self, job: Job) -> Health | None:
        if job.failure:
            return Health("unhealthy", "internal_error", job.failure, self.clock.time())
        if job.health is not None:
            return job.health
        current = self.service.store.integration(self.id)
        if job.reached and current and current.health.status != "healthy":
            return Health("healthy", at=self.clock.time())
        return None

    # --- Control: what a batch may do to the loop ----------------------------------------

    async def pause(self, health: Health) -> None:
        self.paused_until = self.clock.time() + self.settings.auth_recheck
        await self.service.store.set_health(self.id, health)

    def hold(self, seconds: float) -> None:
        self.backoff_until = max(self.backoff_until, self.clock.time() + seconds)

    def throttle(self, seconds: float) -> None:
        self.limiter.throttled(seconds)

    async def acquire(self) -> None:
        await self.limiter.acquire()
