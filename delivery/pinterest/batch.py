"""Pinterest's side of an integration's delivery loop: a leased batch made into requests to the
events endpoint, and Pinterest's answers applied (delivery/pinterest/policy.py judges them).

The generic loop (delivery/worker.py) leases, paces and settles; here each event is decoded,
held to consent and to Pinterest's 7-day window, mapped, encoded and sent, and the verdict
on each answer becomes the batch's settlement and debugger records, or more requests (a
rejected batch in halves), or a pause, a hold or a slower pace for the integration's ad account.
"""

from __future__ import annotations

import logging

import httpx
import msgspec

from delivery.clock import Clock
from delivery.config import Health, Integration, consent_allows
from delivery.errorlog import ErrorLog, describe
from delivery.events import EdgeEvent, event_decoder
from delivery.job import Control, Job
from delivery.pinterest import client
from delivery.pinterest.catalog import TROUBLESHOOTING
from delivery.pinterest.credentials import Credentials, NotReady, credentials_of
from delivery.pinterest.mapping import DELIVERED_TYPES, Options, map_event
from delivery.pinterest.payload import CustomData, Event
from delivery.pinterest.policy import Rules, Sent, Verdict, judge
from delivery.queue import Leased
from delivery.ratelimit import Budget
from delivery.retry import TOO_OLD, too_old
from delivery.slices import Slices

log = logging.getLogger("signal_edge.delivery")
errors = ErrorLog(log)
GPC_WITHHELD = ("Global Privacy Control: the visitor's browser sent Sec-GPC: 1, and this source delivers such "
                "events to no integration (privacy.gpc: no_delivery)")


class Pending:
    """An event that will be sent: the queue item, the event, and what it maps to (`payload`,
    Pinterest's event, with the mapping's `warnings`)."""

    __slots__ = ("item", "event", "payload", "warnings")

    def __init__(self, item: Leased, event: EdgeEvent, payload: Event, warnings: list[str]) -> None:
        self.item, self.event, self.payload, self.warnings = item, event, payload, warnings

    @property
    def sent(self) -> Sent:
        custom = self.payload.custom_data
        return Sent(self.item.attempts, self.event.event_time, bool(custom and custom.custom_event_name))


class PinterestBatches:
    """One integration's batches to Pinterest (the delivery loop's Handler)."""

    def __init__(self, integration: Integration, http: httpx.AsyncClient, credentials: Credentials, rules: Rules,
                 clock: Clock, account_per_minute: float, recovery: float) -> None:
        self.id = integration.id
        self.http = http
        self.credentials = credentials
        self.rules = rules
        self.clock = clock
        self.account_per_minute = account_per_minute
        self.recovery = recovery
        self.custom_name_refused: str | None = None  # Pinterest refused custom_event_name (its words)
        self._credentials = credentials_of(integration)

    def budget(self, integration: Integration) -> Budget:
        cfg = integration.config
        return Budget(cfg.ad_account_id, cfg.rate_limit_per_second, cfg.rate_limit_burst, self.account_per_minute,
                      self.recovery)

    def changed(self, integration: Integration) -> bool:
        """The integration's configuration changed: True when its credentials did (what waited
        for them may go now)."""
        self.custom_name_refused = None  # the option may have been changed: ask Pinterest again
        now, self._credentials = self._credentials, credentials_of(integration)
        return now != self._credentials

    async def handle(self, job: Job, control: Control) -> None:
        ready = await self.credentials.ready(job.integration)
        if isinstance(ready, NotReady):
            await self._wait_for_credentials(job, control, ready)
            return
        job.integration = ready
        if pending := await self._prepare(job):
            await _Requests(self, job, control).send(pending, first=True)

    async def _wait_for_credentials(self, job: Job, control: Control, why: NotReady) -> None:
        """Nothing to send with: every event of the batch waits, none spends an attempt."""
        if why.problem is None:  # Pinterest's token endpoint is away: soon again
            wait = self.rules.retry.delay(1)
            control.hold(wait)
            job.settlement.release += [(item.id, wait) for item in job.leased]
            job.settlement.last_error = why.message
            return
        job.settlement.release += [(item.id, self.rules.auth_recheck) for item in job.leased]
        job.settlement.last_error = f"{TROUBLESHOOTING[why.problem]} ({why.message})"
        await control.pause(Health("unhealthy", why.problem, why.message, job.now))

    async def _prepare(self, job: Job) -> list[Pending]:
        """Decode, filter for consent and age, map; what is left goes to Pinterest. An event
        whose payload cannot be built is dead-lettered alone; the rest of the batch goes on.
        Gives way to the loop's other work between events (delivery/slices.py)."""
        pending = []
        slices = Slices()
        options = job.integration.options
        if self.custom_name_refused and options.send_custom_event_name:
            options = msgspec.structs.replace(options, send_custom_event_name=False)
        for item in job.leased:
            await slices.give_way()
            try:
                ready = _prepare_one(job, item, options)
            except Exception as exc:
                reason = f"not sent: its Pinterest payload could not be built ({describe(exc)})"
                job.settlement.dead.append((item.id, reason))
                job.record(item, None, "failed", reason)
                errors.failure(f"integration {self.id}: an event's payload could not be built", exc, logging.WARNING)
                continue
            if ready is not None:
                pending.append(ready)
        return pending


def _prepare_one(job: Job, item: Leased, options: Options) -> Pending | None:
    s = job.settlement
    try:
        ev = event_decoder.decode(item.payload)
    except (msgspec.DecodeError, RecursionError):
        s.dead.append((item.id, "not sent: the queued event could not be read"))
        job.record(item, None, "failed", "the queued event could not be read")
        return None
    withheld = _withheld(job, ev)
    if withheld is not None:
        s.filtered.append(item.id)
        job.record(item, ev, *withheld)
        return None
    mapped = map_event(ev, options)
    payload = mapped.event
    if payload is None:
        assert mapped.reason is not None  # map_event says why it maps an event to nothing
        s.dead.append((item.id, mapped.reason))
        job.record(item, ev, "failed", mapped.reason, None)
        return None
    if too_old(ev.event_time, job.now):
        s.dead.append((item.id, TOO_OLD))
        job.record(item, ev, "failed", TOO_OLD, payload.event_name, payload)
        return None
    return Pending(item, ev, payload, mapped.warnings)


def _withheld(job: Job, ev: EdgeEvent) -> tuple[str, str] | None:
    """(status, why) when the event is not for this integration: not a kind Pinterest takes, no
    consent, or the visitor's Global Privacy Control."""
    if ev.type not in DELIVERED_TYPES:
        return "skipped", f"{ev.type} calls are not sent to Pinterest"
    source, integration = job.source, job.integration
    if source and not consent_allows(ev.consent, source, integration.consent_categories):
        return "filtered", "consent: the visitor has not granted " + ", ".join(integration.consent_categories)
    if ev.gpc and source and source.privacy.gpc == "no_delivery":
        return "filtered", GPC_WITHHELD
    return None


class _Requests:
    """The requests one batch takes: one, or more when Pinterest rejects it (in halves) or
    refuses the custom event name an option adds (without it)."""

    def __init__(self, batches: PinterestBatches, job: Job, control: Control) -> None:
        self.batches, self.job, self.control = batches, job, control
        self.refreshed = False  # the access token was refreshed after a 401 (once a batch)

    async def send(self, pending: list[Pending], first: bool = False) -> None:
        pending, body = self._encoded(pending)
        if not pending:
            return
        if not first:
            await self.control.acquire()
        b, job = self.batches, self.job
        if self.refreshed:
            answer = await b.credentials.send(b.http, job.integration, body, len(pending))
        else:
            answer, job.integration, self.refreshed = await b.credentials.send_refreshing(
                b.http, job.integration, body, len(pending))
        verdict = judge(answer, [p.sent for p in pending], b.clock.time(), b.rules)
        await self._apply(verdict, pending, answer)
        for part in verdict.resend:
            again = [pending[i] for i in part]
            await self.send(_without_custom_name(again) if verdict.without_custom_name else again)

    async def _apply(self, verdict: Verdict, pending: list[Pending], answer: client.Answer) -> None:
        job, s = self.job, self.job.settlement
        slices = Slices()
        for p, fate in zip(pending, verdict.fates, strict=False):  # a verdict that resends has no fates
            await slices.give_way()
            item_id = p.item.id
            if fate.status == "delivered":
                s.delivered.append(item_id)
            elif fate.status == "failed":
                s.dead.append((item_id, fate.reason or fate.message))
            elif fate.status == "retrying":
                s.retry.append((item_id, fate.delay, fate.reason or fate.message))
            else:
                s.release.append((item_id, fate.delay))
            warnings = p.warnings + ([fate.warning] if fate.warning else [])
            job.record(p.item, p.event, "retrying" if fate.status == "held" else fate.status, fate.message,
                       p.payload.event_name, p.payload, warnings)
        job.reached |= verdict.reached
        s.last_error = verdict.last_error or s.last_error
        if verdict.option_refused:  # delivering, but the option does not work: its health says so
            self.batches.custom_name_refused = verdict.option_refused
            job.health = Health("healthy", "custom_event_name_refused", verdict.option_refused, job.now)
        if verdict.throttle is not None:
            self.control.throttle(verdict.throttle)
        if verdict.hold:
            self.control.hold(verdict.hold)
        if verdict.pause:
            log.warning("integration %s paused: %s: %s", self.batches.id, verdict.pause, answer.message)
            await self.control.pause(Health("unhealthy", verdict.pause, answer.message, job.now))

    def _encoded(self, pending: list[Pending]) -> tuple[list[Pending], bytes]:
        """The request body; an event that cannot be encoded is dead-lettered alone."""
        try:
            return pending, client.encode([p.payload for p in pending])
        except Exception:
            pass
        kept = []
        for p in pending:
            try:
                client.encode([p.payload])
                kept.append(p)
            except Exception as exc:
                reason = f"not sent: its Pinterest payload could not be encoded ({describe(exc)})"
                self.job.settlement.dead.append((p.item.id, reason))
                self.job.record(p.item, p.event, "failed", reason)
        return kept, client.encode([p.payload for p in kept]) if kept else b""


def _without_custom_name(pending: list[Pending]) -> list[Pending]:
    """The events without custom_data.custom_event_name."""
    out = []
    for p in pending:
        custom = p.payload.custom_data
        if custom is not None and custom.custom_event_name:
            custom = msgspec.structs.replace(custom, custom_event_name=None)
            custom = None if custom == CustomData() else custom
            p = Pending(p.item, p.event, msgspec.structs.replace(p.payload, custom_data=custom), p.warnings)
        out.append(p)
    return out
