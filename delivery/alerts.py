"""Alerts: webhooks that say when delivery is in trouble, once per incident and again when it ends.

Every SIGNAL_ALERT_INTERVAL seconds the conditions are judged (`Rules`):

- `integration_paused`: Pinterest refused the credentials (401, 403, an unknown ad account) or the
  refresh token; the integration keeps its events and sends nothing until that is fixed;
- `storage_degraded`: this node's database has failed its transactions for an interval or more;
- `delivery_failing`: an integration delivered nothing for SIGNAL_ALERT_FAILING_MINUTES while its
  requests failed;
- `dead_letters`: an integration holds more than SIGNAL_ALERT_DEAD_LETTERS dead letters;
- `silent_drop`: an event type's volume over the last SIGNAL_ALERT_DROP_WINDOW fell below
  SIGNAL_ALERT_DROP_FRACTION of its own trailing baseline (the events delivery settled, by the time
  they arrived; judged only while the integration's queue is drained, so that a backlog is not a
  drop, and only for types the baseline expects at least SIGNAL_ALERT_DROP_MIN_EVENTS of).

An incident is a condition that holds; its key is `rule:subject`. Open incidents are stored, so
a restart fires nothing twice, and with several nodes they are judged under a cluster-wide lock
(`store.exclusive`): one alert per incident for the whole cluster. A storage incident cannot be
stored while the storage fails: it is each node's own, kept in memory.

Each alert goes to every enabled destination (a generic JSON POST, or a Slack incoming webhook)
from a task of its own, retried with backoff; webhooks never hold up ingestion or delivery, and
the history (`alert_history`) shows each one and what became of it at each destination.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timezone

import httpx
import msgspec
from cryptography.exceptions import InvalidTag

from delivery.erasure import ERASED_TYPE
from delivery.pinterest.catalog import TROUBLESHOOTING
from delivery.pinterest.tokens import REFUSED
from delivery.store import StorageError

log = logging.getLogger("signal_edge.alerts")
PAUSE_PROBLEMS = frozenset({"unauthorized", "forbidden", "invalid_ad_account", REFUSED})
SEND_TIMEOUT = 5.0  # seconds a webhook may take to answer
RETRY_DELAYS = (1.0, 2.0, 5.0, 15.0, 30.0, 60.0, 300.0)  # between attempts; then the alert is given up
MAX_VOLUME_KEYS = 10_000  # distinct (integration, event type, bucket) counted between flushes
RESOLVE_AT = 2.0  # a drop ends once the window is back above this many times the threshold
_encode = msgspec.json.encode


class AlertSettings(msgspec.Struct, frozen=True):
    interval: float = 30.0
    failing_after: float = 15 * 60.0  # seconds without a delivery while requests fail
    dead_letters: int = 100
    drop_window: float = 3600.0
    drop_baseline: float = 7 * 86400.0
    drop_fraction: float = 0.25
    drop_min_events: float = 20.0

    @property
    def bucket(self) -> float:
        """Event counts are kept per bucket of this many seconds: a twelfth of the window."""
        return max(1.0, self.drop_window / 12)


class Destination(msgspec.Struct, kw_only=True):
    id: str
    name: str
    kind: str  # webhook | slack
    url: str  # in memory only in clear: stored sealed (it holds a secret for Slack)
    enabled: bool = True
    created_at: float = 0.0


class Incident(msgspec.Struct, kw_only=True):
    key: str  # rule:subject
    rule: str
    subject: str  # an integration id, or a node
    message: str
    opened_at: float


class Attempted(msgspec.Struct, kw_only=True):
    """What became of an alert at one destination."""

    status: str = "pending"  # pending | sent | failed
    attempts: int = 0
    error: str | None = None
    at: float | None = None


class AlertRecord(msgspec.Struct, kw_only=True):
    at: float
    rule: str
    subject: str
    state: str  # firing | resolved | test
    message: str
    deliveries: dict[str, Attempted] = {}
    id: int | None = None


# --- counting events for the silent-drop rule ------------------------------------------------

class Volume:
    """Events delivery settled (sent, filtered or dead-lettered: each once, however often it was
    tried), per integration, event type and time bucket of their arrival. Counted in delivery, not
    at the edge, whose per-event cost is the ingest benchmarks'; the alert service takes the counts
    to the store every interval. Bounded: names come from strangers."""

    def __init__(self, bucket: float = 300.0) -> None:
        self.bucket = bucket
        self.counts: dict[tuple[str, str, float], int] = {}

    def add(self, topic: str, event_type: str, name: str | None, received_at: float) -> None:
        if event_type == ERASED_TYPE:
            return  # what an erasure blanked in flight (delivery/erasure.py)
        key = (topic, name if event_type == "track" and name else event_type,
               received_at // self.bucket * self.bucket)
        counts = self.counts
        if key not in counts and len(counts) >= MAX_VOLUME_KEYS:
            key = (topic, "(other)", key[2])
        counts[key] = counts.get(key, 0) + 1

    def take(self) -> list[tuple[str, str, float, int]]:
        counts, self.counts = self.counts, {}
        return [(*key, n) for key, n in counts.items()]


def drops(rows: list[tuple[str, str, float, int]], now: float, s: AlertSettings) -> tuple[dict, dict]:
    """From bucketed counts: (event types below the threshold, types above the resolve level),
    each {(topic, event): (count in the window, expected count)}. The window and the baseline are
    made of whole buckets before the current one; a type is judged once it has a baseline of at
    least a window's length and expects at least `drop_min_events` a window."""
    end = now // s.bucket * s.bucket  # the current bucket is still filling
    start = end - s.drop_window
    window: dict[tuple[str, str], int] = {}
    baseline: dict[tuple[str, str], int] = {}
    first: dict[tuple[str, str], float] = {}
    for topic, event, bucket, count in rows:
        key = (topic, event)
        if start <= bucket < end:
            window[key] = window.get(key, 0) + count
        elif start - s.drop_baseline <= bucket < start:
            baseline[key] = baseline.get(key, 0) + count
            first[key] = min(first.get(key, bucket), bucket)
    low, normal = {}, {}
    for key, count in baseline.items():
        span = start - max(first[key], start - s.drop_baseline)
        if span < s.drop_window:
            continue
        expected = count / span * s.drop_window
        if expected < s.drop_min_events:
            continue
        current = window.get(key, 0)
        if current < s.drop_fraction * expected:
            low[key] = (current, expected)
        elif current >= min(1.0, RESOLVE_AT * s.drop_fraction) * expected:
            normal[key] = (current, expected)
    return low, normal


# --- the service ---------------------------------------------------------------------------

class AlertService:
    def __init__(self, store, queue, alert_store, volume: Volume, settings: AlertSettings, node: str,
                 storage_problem: Callable[[], tuple[str, float] | None]) -> None:
        self.store, self.queue, self.alert_store = store, queue, alert_store
        self.volume, self.settings, self.node = volume, settings, node
        self.storage_problem = storage_problem
        self.http = httpx.AsyncClient(timeout=SEND_TIMEOUT)
        self.local: dict[str, Incident] = {}  # this node's storage incident
        self._progress: dict[str, list] = {}  # integration -> [delivered+filtered, seen at, failing since]
        self._unsaved: list[AlertRecord] = []  # history not stored yet (the storage failed)
        self._saving = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
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
        record = AlertRecord(at=time.time(), rule="test", subject=destination.id, state="test",
                             message=f"a test alert from signal-edge ({self.node}) to {destination.name}")
        outcome = await self._attempt(record, destination)
        record.deliveries = {destination.id: outcome}
        await self._save(record)
        return outcome

    async def history(self, before_id: int | None, limit: int) -> list[AlertRecord]:
        rows = await self.alert_store.history(before_id, limit)
        return [msgspec.structs.replace(msgspec.json.decode(body, type=AlertRecord), id=row_id)
                for row_id, body in rows]

    async def incidents(self) -> list[Incident]:
        stored = [msgspec.json.decode(body, type=Incident) for body in await self.alert_store.incidents()]
        return sorted([*stored, *self.local.values()], key=lambda i: i.opened_at)

    # --- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self.destinations()
        except StorageError:
            pass
        while not self._stopping:
            await asyncio.sleep(self.settings.interval)
            try:
                await self.evaluate(time.time())
            except StorageError as exc:
                log.warning("alerts: could not judge the alert rules now (%s); trying again", exc)
            except Exception:  # a bug here must not end alerting for the rest of the run
                log.exception("alerts: judging the alert rules failed; trying again")

    async def close(self) -> None:
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        await self.http.aclose()

    async def evaluate(self, now: float) -> list[AlertRecord]:
        """Judge every rule once; fire and resolve what changed. Returns the alerts sent."""
        records = self._judge_storage(now)
        if self.storage_problem() is None:
            await self._flush_volume()
            await self.destinations()
            records += await self._judge_stored(now)
            pending, self._unsaved = [*self._unsaved, *records], []
            for record in pending:  # one that fails to save goes back into _unsaved
                await self._save(record)
        else:
            self._unsaved += records
        for record in records:
            self._dispatch(record)
        return records

    def _judge_storage(self, now: float) -> list[AlertRecord]:
        key = f"storage_degraded:{self.node}"
        problem = self.storage_problem()
        if problem is not None and now - problem[1] >= self.settings.interval and key not in self.local:
            incident = Incident(key=key, rule="storage_degraded", subject=self.node, opened_at=problem[1],
                                message=f"the database of {self.node} fails: {problem[0]}; ingestion answers 503 "
                                        "and delivery waits until it works again")
            self.local[key] = incident
            return [_record(incident, "firing", now)]
        if problem is None and key in self.local:
            return [_record(self.local.pop(key), "resolved", now)]
        return []

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

    async def _judge_stored(self, now: float) -> list[AlertRecord]:
        async with self.store.exclusive("alerts"):  # one judge at a time across the cluster
            stored = {i.key: i for i in (msgspec.json.decode(b, type=Incident)
                                         for b in await self.alert_store.incidents())}
            holding, unknown = await self._conditions(now, stored)
            opened = [i for key, i in holding.items() if key not in stored]
            closed = [i for key, i in stored.items() if key not in holding and key not in unknown]
            if opened or closed:
                await self.alert_store.change_incidents([(i.key, _encode(i)) for i in opened],
                                                        [i.key for i in closed])
        return [_record(i, "firing", now) for i in opened] + [_record(i, "resolved", now) for i in closed]

    async def _conditions(self, now: float, stored: dict[str, Incident]) -> tuple[dict[str, Incident], set[str]]:
        """The incidents that hold now, and the open ones that cannot be judged now (kept open)."""
        s = self.settings
        holding: dict[str, Incident] = {}
        unknown: set[str] = set()

        def hold(rule: str, subject: str, message: str, since: float = now) -> None:
            key = f"{rule}:{subject}"
            holding[key] = Incident(key=key, rule=rule, subject=subject, message=message, opened_at=since)

        low, normal = drops(await self.alert_store.volume(now - s.drop_baseline - 2 * s.drop_window), now, s)
        for integration in self.store.integrations():
            iid, named = integration.id, f"{integration.name} ({integration.id})"
            health = integration.health
            if integration.enabled and health.status == "unhealthy" and health.problem in PAUSE_PROBLEMS:
                hold("integration_paused", iid, f"{named} is paused: {TROUBLESHOOTING[health.problem]}"
                     + (f" Pinterest said: {health.message}" if health.message else ""), health.at or now)
            stats = await self.queue.stats(iid)
            if stats.dead_lettered > s.dead_letters:
                hold("dead_letters", iid, f"{named} holds {stats.dead_lettered} dead letters (more than "
                     f"{s.dead_letters}); replay or export them on its page")
            since = self._failing_since(iid, stats, now)
            if since is not None and integration.enabled and not integration.paused \
                    and health.problem not in PAUSE_PROBLEMS:  # a paused one has its own alert
                hold("delivery_failing", iid, f"{named} has delivered nothing for {_span(now - since)} while its "
                     f"requests fail: {stats.last_error or 'no error recorded'}", since)
            drained = stats.queued + stats.in_flight == 0 and integration.enabled and not integration.paused
            for (topic, event), (current, expected) in low.items():
                if topic == iid and drained:
                    hold("silent_drop", f"{iid}/{event}", f"{event} events for {named}: {current} in the last "
                         f"{_span(s.drop_window)}, against {expected:.0f} expected from the trailing "
                         f"{_span(s.drop_baseline)} (below {s.drop_fraction:.0%}); check the site's tag")
        for key, incident in stored.items():
            # A drop ends only once its type is back to normal: a backlog, or a level between the
            # two, leaves it open. (An integration that is gone ends it.)
            topic, _, event = incident.subject.partition("/")
            if incident.rule == "silent_drop" and key not in holding and (topic, event) not in normal \
                    and self.store.integration(topic) is not None:
                unknown.add(key)
        return holding, unknown

    def _failing_since(self, integration_id: str, stats, now: float) -> float | None:
        """Since when the integration has delivered nothing while its requests fail, when that is
        longer than SIGNAL_ALERT_FAILING_MINUTES and it failed within them; else None."""
        progress = stats.delivered + stats.filtered
        state = self._progress.get(integration_id)
        if state is None or state[0] != progress:
            state = self._progress[integration_id] = [progress, now, None]
        if stats.last_error_at and stats.last_error_at > state[1] and state[2] is None:
            state[2] = stats.last_error_at
        window = self.settings.failing_after
        if state[2] is not None and now - state[2] >= window and stats.last_error_at >= now - window:
            return state[2]
        return None

    # --- sending ----------------------------------------------------------------------------

    def _dispatch(self, record: AlertRecord) -> None:
        log.log(logging.WARNING if record.state == "firing" else logging.INFO, "alert %s: %s", record.state,
                record.message)
        for destination in self._destinations:
            if destination.enabled:
                record.deliveries[destination.id] = Attempted()
                task = asyncio.ensure_future(self._deliver(record, destination))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _deliver(self, record: AlertRecord, destination: Destination) -> None:
        """Until the destination takes it, with backoff; each outcome goes into the history."""
        for delay in (*RETRY_DELAYS, None):
            outcome = await self._attempt(record, destination)
            outcome.attempts = record.deliveries[destination.id].attempts + 1
            record.deliveries[destination.id] = outcome
            if outcome.status == "sent" or delay is None:
                if outcome.status != "sent":
                    outcome.status = "failed"
                    log.warning("alert to %s given up after %d attempts: %s", destination.name, outcome.attempts,
                                outcome.error)
                await self._save(record)
                return
            outcome.status = "pending"
            await self._save(record)
            await asyncio.sleep(delay)

    async def _attempt(self, record: AlertRecord, destination: Destination) -> Attempted:
        try:
            answer = await self.http.post(destination.url, json=payload(record, destination.kind, self.node))
        except httpx.HTTPError as exc:
            return Attempted(status="failed", attempts=1, error=f"{type(exc).__name__}: {exc}"[:300], at=time.time())
        if 200 <= answer.status_code < 300:
            return Attempted(status="sent", attempts=1, at=time.time())
        return Attempted(status="failed", attempts=1, error=f"HTTP {answer.status_code}: {answer.text[:200]}",
                         at=time.time())

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


def _record(incident: Incident, state: str, now: float) -> AlertRecord:
    message = incident.message if state == "firing" else \
        f"resolved after {_span(now - incident.opened_at)}: {incident.message}"
    return AlertRecord(at=now, rule=incident.rule, subject=incident.subject, state=state, message=message)


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} minutes"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} hours"
    return f"{seconds / 86400:.0f} days"


def payload(record: AlertRecord, kind: str, node: str) -> dict:
    """What a destination receives: Slack's incoming-webhook text, or a JSON object."""
    at = datetime.fromtimestamp(record.at, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    if kind == "slack":
        mark = {"firing": ":rotating_light:", "resolved": ":white_check_mark:"}.get(record.state, ":bell:")
        return {"text": f"{mark} signal-edge {record.state}: {record.message}"}
    return {"source": "signal-edge", "id": record.id, "rule": record.rule, "state": record.state,
            "subject": record.subject, "message": record.message, "at": at, "node": node}


def new_destination_id() -> str:
    return "alt_" + secrets.token_hex(8)
