"""The delivery loop: one worker per enabled integration, batching queued events to Pinterest.

At-least-once: an event leaves the queue only in the same transaction that records what
Pinterest answered for it; anything leased when the process dies is leased again after
the restart (Pinterest deduplicates on event_id + event_name).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

import httpx
import msgspec

from delivery import logcontext
from delivery.alerts import Volume
from delivery.config import Health, Integration, Source, consent_allows
from delivery.debugger import DebugHub
from delivery.events import EdgeEvent, event_decoder, event_view
from delivery.pinterest import client, oauth
from delivery.pinterest.catalog import TROUBLESHOOTING
from delivery.pinterest.tokens import REFUSED, RefreshRefused, TokenKeeper, due
from delivery.pinterest.mapping import DELIVERED_TYPES, Mapped, map_event
from delivery.pinterest.payload import MAX_EVENTS_PER_REQUEST, CustomData, Event
from delivery.queue import EventQueue, Leased, Settlement
from delivery.ratelimit import RATE_RECOVERY
from delivery.retry import RetryPolicy
from delivery.errorlog import ErrorLog
from delivery.store import NO_JSON, ConfigStore, DebugRecord, StorageError

log = logging.getLogger("signal_edge.delivery")
errors = ErrorLog(log)
SUPERVISE_EVERY = 1.0  # seconds between the supervisor's looks at the workers
IDLE_REFRESH_EVERY = 60  # supervisor turns between looks for idle tokens that are due
MAX_STEP_BACKOFF = 10.0  # longest wait after the worker loop fails (a storage fault, a bug)
MAX_EVENT_AGE = 7 * 24 * 3600
TOO_OLD = "not sent: older than 7 days (Pinterest rejects events more than 7 days old)"
_encode = msgspec.json.encode


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
    retry: RetryPolicy = RetryPolicy()
    auth_recheck: float = 600.0  # a paused integration tries again after this long
    idle_poll: float = 1.0


# Routine outcomes kept in the debugger log per batch (all of them go to a live watcher);
# failures and retries are always kept. Writing every delivered event twice (queue and log)
# halved delivery throughput.
ROUTINE_KEPT_PER_BATCH = 20
ROUTINE = ("delivered", "filtered", "skipped")
GPC_WITHHELD = ("Global Privacy Control: the visitor's browser sent Sec-GPC: 1, and this source delivers such "
                "events to no integration (privacy.gpc: no_delivery)")


class Job:
    """One leased batch on its way: the events to send and what became of each."""

    def __init__(self, integration: Integration, source: Source | None, leased: list[Leased], watched: bool,
                 volume: Volume | None = None) -> None:
        self.integration = integration
        self.volume = volume  # counts each event once, when its fate is settled (the silent-drop alert)
        self.source = source
        self.leased = leased
        self.settlement = Settlement()
        self.watched = watched  # someone follows the live debugger: publish every record
        self.live: list[DebugRecord] = []
        self.kept: list[DebugRecord] = []  # what the debugger log stores
        self._routine: dict[str, int] = {}
        self.now = time.time()
        self.reached_pinterest = False  # some events were accepted: the credentials work
        self.failure: str | None = None  # the batch failed unexpectedly (see _batch_failed)
        self.option_refused: str | None = None  # Pinterest refused a field only an option adds
        self.refreshed = False  # the access token was refreshed after a 401 (once a batch)

    def record(self, item: Leased, ev: EdgeEvent | None, status: str, message: str | None = None,
               mapped: Mapped | None = None, warnings: list[str] = ()) -> None:
        if self.volume is not None and ev is not None and status != "retrying":
            self.volume.add(self.integration.id, ev.type, ev.name, ev.received_at)
        keep = status not in ROUTINE or self._routine.get(status, 0) < ROUTINE_KEPT_PER_BATCH
        if not (keep or self.watched):
            return
        if keep and status in ROUTINE:
            self._routine[status] = self._routine.get(status, 0) + 1
        record = DebugRecord(
            at=self.now,
            source_id=ev.source_id if ev else "",
            event_id=ev.message_id if ev else "",
            event=(ev.name or ev.type) if ev else "",
            status=status,
            integration_id=self.integration.id,
            pinterest_event=mapped.event.event_name if mapped and mapped.event else None,
            attempts=item.attempts + (0 if status in ("filtered", "skipped") else 1),
            message=message,
            warnings=list(warnings),
            incoming=_shown(event_view, ev) if ev else _shown(msgspec.json.decode, item.payload),
            payload=_shown(lambda e: e, mapped.event) if mapped and mapped.event and status != "skipped" else NO_JSON,
        )
        if self.watched:
            self.live.append(record)
        if keep:
            self.kept.append(record)


def _shown(view, value) -> msgspec.Raw:
    """`view(value)` as JSON for the debugger, or a note when it cannot be shown: a record
    must never fail the batch it describes."""
    try:
        return msgspec.Raw(_encode(view(value)))
    except Exception:
        return UNSHOWABLE


UNSHOWABLE = msgspec.Raw(b'"[this value cannot be shown]"')


class Pending:
    """An event that will be sent: the queue item, the event and its mapping."""

    __slots__ = ("item", "event", "mapped")

    def __init__(self, item: Leased, event: EdgeEvent, mapped: Mapped) -> None:
        self.item, self.event, self.mapped = item, event, mapped


class DeliveryService:
    def __init__(self, store: ConfigStore, queue: EventQueue, settings: DeliverySettings,
                 hub: DebugHub | None = None) -> None:
        self.store = store
        self.queue = queue
        self.settings = settings
        self.hub = hub or DebugHub()
        self.ssl = httpx.create_ssl_context()  # the CA bundle is read once, not per integration
        self.clients: dict[str, httpx.AsyncClient] = {}
        self.workers: dict[str, IntegrationWorker] = {}
        self.tokens = TokenKeeper(store, settings.api_base, httpx.AsyncClient(timeout=settings.request_timeout,
                                                                               verify=self.ssl))
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
        if not task.cancelled() and task.exception():
            errors.failure("a delivery background task failed", task.exception())

    async def _supervise(self) -> None:
        """Restart any worker that ended while its integration is enabled; refresh the access
        tokens of integrations that send nothing meanwhile (a refresh token lives 60 days)."""
        turns = 0
        while not self.stopping:
            await asyncio.sleep(SUPERVISE_EVERY)
            turns += 1
            for integration in self.store.integrations():
                worker = self.workers.get(integration.id)
                if worker is not None and worker.finished and integration.enabled and not self.stopping:
                    log.warning("the delivery worker of integration %s had stopped; restarting it", integration.id)
                self._ensure_worker(integration.id)
                if turns % IDLE_REFRESH_EVERY == 0 and integration.enabled and due(integration, time.time()) \
                        and integration.health.problem != REFUSED:
                    self.spawn(self._refresh_quietly(integration.id))

    async def _refresh_quietly(self, integration_id: str) -> None:
        try:
            await self.tokens.refresh(integration_id)
        except (RefreshRefused, oauth.Unavailable, StorageError) as exc:
            log.warning("integration %s: the idle refresh did not happen: %s", integration_id, exc)

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
                self.spawn(self.clients.pop(integration_id).aclose())
            return
        if worker is None or worker.finished:
            worker = self.workers[integration_id] = IntegrationWorker(self, integration_id)
            worker.start()
        elif config_changed:
            worker.config_changed(integration)

    async def stop(self, grace: float = 5.0) -> None:
        """Flush what is ready within `grace` seconds; the rest stays queued. A request already
        in flight then may finish within its own timeout: cancelled, it would be sent again."""
        self.stopping = True
        deadline = time.monotonic() + grace
        finish_by = deadline + self.settings.request_timeout + 1.0
        workers = list(self.workers.values())
        for worker in workers:
            worker.draining = True
            worker.wake()
        await asyncio.gather(*(w.drain(deadline, finish_by) for w in workers), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*(http.aclose() for http in (*self.clients.values(), self.tokens.http)),
                             return_exceptions=True)

    # --- the admin "Send test event" --------------------------------------------------

    async def send_test(self, integration: Integration, sample: Event) -> TestOutcome:
        """Try each credential the integration has on its own (the app by a refresh, each token
        with a ?test=true event) and say which ones fail. Health follows what delivery can do:
        healthy when one token works (delivery falls back to it)."""
        checks: list[Check] = []
        if integration.oauth:
            integration, check = await self._check_app(integration)
            checks.append(check)
        cfg = integration.config
        body = client.encode([sample])
        answers: list[client.Answer] = []
        for name in ("conversion_token", "access_token"):
            token = getattr(cfg, name)
            if token:
                answer = await client.send(self.client(integration.id), self.settings.api_base, cfg.ad_account_id,
                                           token, body, 1, True, self.settings.request_timeout)
                answers.append(answer)
                checks.append(_token_check(name, answer))
        if not answers and not checks:
            return TestOutcome(False, TROUBLESHOOTING["not_connected"], [])
        if any(a.kind == "ok" for a in answers):
            await self.store.set_health(integration.id, Health("healthy", at=time.time()))
            worker = self.workers.get(integration.id)
            if worker:
                worker.resume()  # e.g. the missing scope was granted: no need to wait for the recheck
        elif problem := next(filter(None, map(_problem, answers)), None):
            said = next(a.message for a in answers if _problem(a) == problem)
            await self.store.set_health(integration.id, Health("unhealthy", problem, said, time.time()))
        return _test_outcome(cfg.ad_account_id, checks, any(a.kind == "ok" for a in answers))

    async def _check_app(self, integration: Integration) -> tuple[Integration, Check]:
        """The app's id and secret and the refresh token, tried by a refresh (kept, as any is)."""
        try:
            integration = await self.tokens.refresh(integration.id, force=True)
            return integration, Check("app", True, "Pinterest issued a fresh access token for the app id, app secret "
                                                   "and refresh token")
        except RefreshRefused as exc:
            return integration, Check("app", False, f"Pinterest refused the refresh: {exc}; connect again")
        except oauth.Unavailable as exc:
            return integration, Check("app", False, f"Pinterest did not answer the token refresh: {exc}; try again "
                                                    "shortly")

    async def _send_with_fallback(self, http: httpx.AsyncClient, integration: Integration, body: bytes, count: int,
                                  test: bool):
        """Conversion token first when present, else the access token; on a 401 the other once."""
        cfg = integration.config
        tokens = [("conversion_token", cfg.conversion_token), ("access_token", cfg.access_token)]
        tokens = [(name, t) for name, t in tokens if t]
        answer = None
        for name, token in tokens:
            answer = await client.send(http, self.settings.api_base, cfg.ad_account_id, token, body, count,
                                       test or cfg.test_mode, self.settings.request_timeout)
            if answer.kind != "unauthorized":
                return answer, name
        return answer, tokens[-1][0] if tokens else "access_token"


class Check(msgspec.Struct):
    credential: str  # app | conversion_token | access_token
    ok: bool
    message: str


class TestOutcome(msgspec.Struct):
    ok: bool  # every credential works
    message: str
    checks: list[Check]


CREDENTIAL_LABELS = {"app": "the app credentials", "conversion_token": "the conversion token",
                     "access_token": "the API access token"}


def _token_check(name: str, answer: client.Answer) -> Check:
    if answer.kind == "ok":
        result = answer.results[0] if answer.results else None
        if result and result.status == "failed":
            return Check(name, False, f"Pinterest answered but failed the test event: {result.error_message}")
        warning = f" (warning: {result.warning_message})" if result and result.warning_message else ""
        return Check(name, True, "Pinterest accepted the test event" + warning)
    if answer.kind == "invalid_ad_account":
        return Check(name, False, f"Pinterest does not know the ad account with this token: {answer.message}")
    status = f"{answer.status} " if answer.status else ""
    return Check(name, False, f"refused: {status}{answer.message}" if status else f"no answer: {answer.message}")


def _test_outcome(ad_account_id: str, checks: list[Check], delivering: bool) -> TestOutcome:
    failed = [CREDENTIAL_LABELS[c.credential] for c in checks if not c.ok]
    if not failed:
        worked = " and ".join(CREDENTIAL_LABELS[c.credential] for c in checks)
        return TestOutcome(True, f"Pinterest accepted the test event for ad account {ad_account_id} with {worked}. "
                                 "Test events are not recorded.", checks)
    failed_text = " and ".join(failed)
    message = f"{failed_text[0].upper()}{failed_text[1:]} failed."
    if delivering:
        message += " Delivery goes on with the credential that works; replace the failing one."
    return TestOutcome(False, message, checks)


def _credentials(integration: Integration) -> tuple:
    cfg = integration.config
    return cfg.ad_account_id, cfg.access_token, cfg.conversion_token, cfg.app_id, cfg.app_secret, cfg.refresh_token


def _problem(answer: client.Answer) -> str | None:
    if answer.kind == "unauthorized":
        return "unauthorized"
    if answer.kind == "forbidden":
        return "forbidden"
    if answer.kind == "invalid_ad_account":
        return "invalid_ad_account"
    return None


class IntegrationWorker:
    def __init__(self, service: DeliveryService, integration_id: str) -> None:
        self.service = service
        self.id = integration_id
        self._waker: asyncio.Future | None = None  # set while the worker sleeps
        self._unseen = 0  # events offered since the last look at the queue
        integration = service.store.integration(integration_id)
        self.bucket = service.queue.rate_limiter(integration_id, integration.config.rate_limit_per_second,
                                                 integration.config.rate_limit_burst, service.settings.rate_recovery)
        self.credentials = _credentials(integration)
        self.slots = asyncio.Semaphore(service.settings.max_in_flight)
        self.paused_until = 0.0  # credentials or account problem: until fixed (or rechecked)
        self.backoff_until = 0.0  # Pinterest failing: hold new batches back for a while
        self.draining = False
        self.finished = False
        self._idle = False  # nothing ready to send (what waits for a retry time does not count)
        self.inflight: set[asyncio.Task] = set()
        self.task: asyncio.Task | None = None
        self.http = service.client(integration_id)
        self.custom_name_refused: str | None = None  # Pinterest refused custom_event_name (its words)

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=f"delivery:{self.id}")

    def stop(self) -> None:
        if self.task:
            self.task.cancel()

    def config_changed(self, integration: Integration) -> None:
        cfg = integration.config
        self.custom_name_refused = None  # the option may have been changed: ask Pinterest again
        if (cfg.rate_limit_per_second, cfg.rate_limit_burst) != (self.bucket.configured_rate, self.bucket.burst):
            self.bucket.reconfigure(cfg.rate_limit_per_second, cfg.rate_limit_burst)
        credentials = _credentials(integration)
        if credentials != self.credentials:
            self.credentials = credentials
            self.resume()
        self.wake()

    def resume(self) -> None:
        """Credentials fixed: whatever waited for them goes out now."""
        if self.paused_until:
            self.paused_until = 0.0
            self.service.spawn(self.service.queue.reschedule(self.id))
            self.wake()

    async def drain(self, deadline: float, finish_by: float) -> None:
        """Send what is ready until nothing is or `deadline` passes, then stop leasing; requests
        in flight may finish until `finish_by` (each has its own timeout)."""
        while time.monotonic() < deadline and self.task and not self.task.done():
            await asyncio.sleep(0.05)
            if not self.inflight and self._idle:
                break
        self.stop()
        if self.inflight:
            await asyncio.wait(self.inflight, timeout=max(0.0, finish_by - time.monotonic()))
        for task in self.inflight:
            task.cancel()

    async def run(self) -> None:
        """Until the integration is disabled or deleted. A failure of a step (a storage fault,
        a bug) is logged in one line and retried with backoff: it never ends delivery."""
        logcontext.bind(integration=self.id)  # every line this worker and its batches log names it
        failures = 0
        try:
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
        except asyncio.CancelledError:
            pass
        finally:
            self.finished = True

    async def _step(self) -> bool:
        """Wait for work or lease one batch and start sending it; False when there is nothing
        more to do (the integration is disabled or gone)."""
        settings = self.service.settings
        queue = self.service.queue
        integration = self.service.store.integration(self.id)
        if integration is None or not integration.enabled:
            return False
        now = time.time()
        if integration.paused:
            await self._sleep(3600)  # a config change (resume) wakes it
            return True
        hold = max(self.paused_until, self.backoff_until)
        if now < hold:
            await self._sleep(hold - now)
            return True
        self._unseen = 0
        ready = await queue.ready(self.id, settings.batch_size)
        due = ready.priority or ready.full or (
            ready.waited is not None and (self.draining or ready.waited >= settings.flush_interval)
        )
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
        await self.slots.acquire()
        try:
            await self.bucket.acquire()
            leased = await queue.lease(self.id, settings.batch_size, settings.lease_seconds)
        except BaseException:
            self.slots.release()
            raise
        if not leased:
            self.slots.release()
            return True
        task = asyncio.create_task(self._deliver(integration, leased))
        self.inflight.add(task)
        task.add_done_callback(self._done)
        return True

    def _done(self, task: asyncio.Task) -> None:
        self.inflight.discard(task)
        self.slots.release()
        if not task.cancelled() and task.exception():
            # Settling failed (a storage fault): the lease runs out and the batch is sent again.
            errors.failure(f"a batch for integration {self.id} could not be settled; it is sent again when "
                           "its lease runs out", task.exception(), logging.WARNING)

    def offer(self, events: int, priority: bool) -> None:
        """Wake for a priority event, the first event into an empty queue (it starts the flush
        clock), or once a full batch may be waiting; otherwise the planned wake-up will do."""
        self._unseen += events
        if priority or self._idle or self._unseen >= self.service.settings.batch_size:
            self.wake()

    def wake(self) -> None:
        if self._waker is not None and not self._waker.done():
            self._waker.set_result(None)

    async def _sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self._waker = loop.create_future()
        timer = loop.call_later(max(0.001, seconds), self.wake)
        try:
            await self._waker
        finally:
            timer.cancel()
            self._waker = None

    # --- one batch ----------------------------------------------------------------------

    async def _deliver(self, integration: Integration, leased: list[Leased]) -> None:
        job = Job(integration, self.service.store.source(integration.source_id), leased, self.service.hub.watched,
                  self.service.volume)
        heartbeat = asyncio.create_task(self._keep_leased(leased))
        try:
            if await self._credentials_ready(job):
                pending = self._prepare(job)
                if pending:
                    await self._send(job, pending, first=True)
        except Exception as exc:  # a bug or a fault nobody foresaw: counted, so it cannot loop forever
            self._batch_failed(job, exc)
        finally:
            heartbeat.cancel()
        await self._finish(job)

    async def _keep_leased(self, leased: list[Leased]) -> None:
        """Renew the batch's lease every third of its length while it is being sent."""
        lease = self.service.settings.lease_seconds
        ids = [item.id for item in leased]
        while True:
            await asyncio.sleep(lease / 3)
            try:
                await self.service.queue.extend(self.id, ids, lease)
            except Exception as exc:  # the lease may run out: the batch is then sent again
                log.warning("integration %s: could not renew a lease: %s", self.id, exc)

    async def _credentials_ready(self, job: Job) -> bool:
        """An access token that is not about to expire (OAuth integrations refresh it here);
        False when there is none to send with: the batch waits, its events kept."""
        cfg = job.integration.config
        if not (cfg.access_token or cfg.conversion_token or job.integration.oauth):
            await self._hold(job, "not_connected", "no access token, conversion token or connection yet")
            return False
        try:
            job.integration = await self.service.tokens.fresh(job.integration)
            return True
        except RefreshRefused as exc:
            await self._hold(job, REFUSED, str(exc))
        except oauth.Unavailable as exc:  # Pinterest's token endpoint is away: soon again, no attempt spent
            wait = self.service.settings.retry.delay(1)
            self.backoff_until = max(self.backoff_until, time.time() + wait)
            job.settlement.release += [(item.id, wait) for item in job.leased]
            job.settlement.last_error = f"the access token could not be refreshed: {exc}"
        return False

    async def _hold(self, job: Job, problem: str, message: str) -> None:
        """Credentials missing or refused: every event of the batch waits until they change."""
        recheck = self.service.settings.auth_recheck
        self.paused_until = time.time() + recheck
        job.settlement.release += [(item.id, recheck) for item in job.leased]
        job.settlement.last_error = f"{TROUBLESHOOTING[problem]} ({message})"
        await self.service.store.set_health(self.id, Health("unhealthy", problem, message, job.now))

    def _prepare(self, job: Job) -> list[Pending]:
        """Decode, filter for consent and age, map; what is left goes to Pinterest. An event
        whose payload cannot be built is dead-lettered alone; the rest of the batch goes on."""
        pending = []
        options = job.integration.options
        if self.custom_name_refused and options.send_custom_event_name:
            options = msgspec.structs.replace(options, send_custom_event_name=False)
        for item in job.leased:
            try:
                ready = self._prepare_one(job, item, options)
            except Exception as exc:
                reason = f"not sent: its Pinterest payload could not be built ({_describe(exc)})"
                job.settlement.dead.append((item.id, reason))
                job.record(item, None, "failed", reason)
                errors.failure(f"integration {self.id}: an event's payload could not be built", exc, logging.WARNING)
                continue
            if ready is not None:
                pending.append(ready)
        return pending

    def _prepare_one(self, job: Job, item: Leased, options) -> Pending | None:
        s = job.settlement
        try:
            ev = event_decoder.decode(item.payload)
        except (msgspec.DecodeError, RecursionError):
            s.dead.append((item.id, "not sent: the queued event could not be read"))
            job.record(item, None, "failed", "the queued event could not be read")
            return None
        if ev.type not in DELIVERED_TYPES:
            s.filtered.append(item.id)
            job.record(item, ev, "skipped", f"{ev.type} calls are not sent to Pinterest")
            return None
        if job.source and not consent_allows(ev.consent, job.source, job.integration.consent_categories):
            s.filtered.append(item.id)
            job.record(item, ev, "filtered",
                       "consent: the visitor has not granted " + ", ".join(job.integration.consent_categories))
            return None
        if ev.gpc and job.source and job.source.privacy.gpc == "no_delivery":
            s.filtered.append(item.id)
            job.record(item, ev, "filtered", GPC_WITHHELD)
            return None
        mapped = map_event(ev, options)
        if mapped.event is None:
            s.dead.append((item.id, mapped.reason))
            job.record(item, ev, "failed", mapped.reason, mapped)
            return None
        if job.now - ev.event_time > MAX_EVENT_AGE:
            s.dead.append((item.id, TOO_OLD))
            job.record(item, ev, "failed", TOO_OLD, mapped)
            return None
        return Pending(item, ev, mapped)

    def _encoded(self, job: Job, pending: list[Pending]) -> tuple[list[Pending], bytes]:
        """The request body; an event that cannot be encoded is dead-lettered alone."""
        try:
            return pending, client.encode([p.mapped.event for p in pending])
        except Exception:
            pass
        kept = []
        for p in pending:
            try:
                client.encode([p.mapped.event])
                kept.append(p)
            except Exception as exc:
                reason = f"not sent: its Pinterest payload could not be encoded ({_describe(exc)})"
                job.settlement.dead.append((p.item.id, reason))
                job.record(p.item, p.event, "failed", reason)
        return kept, client.encode([p.mapped.event for p in kept]) if kept else b""

    def _batch_failed(self, job: Job, exc: Exception) -> None:
        """Every event of the batch not yet decided is retried, and the attempt counts."""
        reason = f"internal error while sending ({_describe(exc)})"
        errors.failure(f"a batch of {len(job.leased)} events for integration {self.id} failed; "
                       "its events are retried", exc)
        self.service.failures[self.id] += 1
        decided = job.settlement.ids()
        policy = self.service.settings.retry
        for item in job.leased:
            if item.id in decided:
                continue
            attempts = item.attempts + 1
            if policy.exhausted(attempts):
                job.settlement.dead.append((item.id, f"gave up after {attempts} attempts: {reason}"))
                job.record(item, None, "failed", reason)
            else:
                job.settlement.retry.append((item.id, policy.delay(attempts), reason))
                job.record(item, None, "retrying", reason)
        job.settlement.last_error = reason
        job.failure = reason

    async def _send(self, job: Job, pending: list[Pending], first: bool = False) -> None:
        pending, body = self._encoded(job, pending)
        if not pending:
            return
        if not first:
            await self.bucket.acquire()
        answer, _ = await self.service._send_with_fallback(self.http, job.integration, body, len(pending), False)
        if answer.kind == "unauthorized" and job.integration.oauth and not job.refreshed:
            # The access token was refused before its time (revoked, say): refresh once at once.
            job.refreshed = True
            try:
                job.integration = await self.service.tokens.refresh(self.id, job.integration.config.access_token)
            except (RefreshRefused, oauth.Unavailable) as exc:
                log.warning("integration %s: refreshing after a 401 failed: %s", self.id, exc)
            else:
                answer, _ = await self.service._send_with_fallback(self.http, job.integration, body, len(pending), False)
        s = job.settlement
        if answer.kind in ("ok", "partial"):
            job.reached_pinterest = True
            results = answer.results or [None] * len(pending)
            for p, result in zip(pending, results):
                warnings = p.mapped.warnings + ([result.warning_message] if result and result.warning_message else [])
                if result is not None and result.status == "failed":
                    reason = result.error_message or "failed without a message"
                    s.dead.append((p.item.id, f"Pinterest: {reason}"))
                    job.record(p.item, p.event, "failed", reason, p.mapped, warnings)
                else:
                    s.delivered.append(p.item.id)
                    job.record(p.item, p.event, "delivered", answer.message, p.mapped, warnings)
            return
        if answer.kind == "bad_request":
            if OPTIONAL_FIELD in answer.message and (stripped := _without_custom_name(pending)) is not None:
                # Only the integration's option added that field: the events go without it.
                self.custom_name_refused = answer.message
                job.option_refused = answer.message
                await self._send(job, stripped)
                return
            if len(pending) == 1:
                s.dead.append((pending[0].item.id, f"Pinterest rejected it: {answer.message}"))
                job.record(pending[0].item, pending[0].event, "failed", answer.message, pending[0].mapped)
                return
            # Isolate the bad events: each half on its own, the good ones still go.
            half = len(pending) // 2
            await self._send(job, pending[:half])
            await self._send(job, pending[half:])
            return
        s.last_error = answer.message
        problem = _problem(answer)
        if problem:
            await self._pause(job, pending, problem, answer)
            return
        if answer.status == 429:
            # Pinterest's rate limit is not the events' fault: wait as told, spend no attempt.
            wait = answer.retry_after or 1.0
            self.bucket.throttled(wait)
            for p in pending:
                s.release.append((p.item.id, wait))
                job.record(p.item, p.event, "retrying", f"{answer.message}; waiting {wait:g}s as Pinterest asked",
                           p.mapped)
            return
        # Retryable: 408, 5xx, timeouts, connection errors.
        if answer.status == 503:
            self.bucket.throttled(answer.retry_after or 1.0)
        policy = self.service.settings.retry
        # Hold the batches queued meanwhile too: sent now they would only fail the same way.
        # Every wait counts from now, the failure (a timeout ends long after the lease began).
        self.backoff_until = max(self.backoff_until, time.time() + policy.delay(1, answer.retry_after))
        delays: dict[int, float] = {}  # one (jittered) delay per attempt count: events queued together stay together
        for p in pending:
            attempts = p.item.attempts + 1
            if policy.exhausted(attempts):
                reason = f"gave up after {attempts} attempts: {answer.message}"
                s.dead.append((p.item.id, reason))
                job.record(p.item, p.event, "failed", reason, p.mapped)
            else:
                delay = delays.get(attempts)
                if delay is None:
                    delay = delays[attempts] = policy.delay(attempts, answer.retry_after)
                s.retry.append((p.item.id, delay, answer.message))
                job.record(p.item, p.event, "retrying", f"{answer.message}; next attempt in {delay:.0f}s", p.mapped)

    async def _pause(self, job: Job, pending: list[Pending], problem: str, answer: client.Answer) -> None:
        """Credentials or account problem: keep the events, stop sending until it is fixed."""
        recheck = self.service.settings.auth_recheck
        self.paused_until = time.time() + recheck
        for p in pending:
            job.settlement.release.append((p.item.id, recheck))
            job.record(p.item, p.event, "retrying", f"{TROUBLESHOOTING[problem]} (Pinterest said: {answer.message})",
                       p.mapped)
        log.warning("integration %s paused: %s: %s", self.id, problem, answer.message)
        await self.service.store.set_health(self.id, Health("unhealthy", problem, answer.message, job.now))

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
        current = service.store.integration(self.id)
        if job.failure:
            await service.store.set_health(self.id, Health("unhealthy", "internal_error", job.failure, time.time()))
        elif job.option_refused:  # delivering, but the option does not work: say so
            await service.store.set_health(self.id, Health("healthy", "custom_event_name_refused", job.option_refused,
                                                           time.time()))
        elif job.reached_pinterest and current and current.health.status != "healthy":
            await service.store.set_health(self.id, Health("healthy", at=time.time()))
        if job.live:
            service.hub.publish(job.live)


OPTIONAL_FIELD = "custom_event_name"


def _without_custom_name(pending: list[Pending]) -> list[Pending] | None:
    """The events without custom_data.custom_event_name, or None when none had it."""
    named = [p for p in pending if p.mapped.event.custom_data and p.mapped.event.custom_data.custom_event_name]
    if not named:
        return None
    out = []
    for p in pending:
        custom = p.mapped.event.custom_data
        if custom is not None and custom.custom_event_name:
            custom = msgspec.structs.replace(custom, custom_event_name=None)
            custom = None if custom == CustomData() else custom
            event = msgspec.structs.replace(p.mapped.event, custom_data=custom)
            p = Pending(p.item, p.event, msgspec.structs.replace(p.mapped, event=event))
        out.append(p)
    return out


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"
