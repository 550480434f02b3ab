"""The alert rules, judged: which incidents hold now, which opened and which ended."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from delivery.alerts.model import AlertRecord, AlertSettings, Incident, record_of, span
from delivery.alerts.volume import drops
from delivery.pinterest.catalog import TROUBLESHOOTING
from delivery.pinterest.tokens import REFUSED

PAUSE_PROBLEMS = frozenset({"unauthorized", "forbidden", "invalid_ad_account", REFUSED})
_encode = msgspec.json.encode


class Judge:
    def __init__(self, store, queue, alert_store, settings: AlertSettings, node: str,
                 storage_problem: Callable[[], tuple[str, float] | None]) -> None:
        self.store, self.queue, self.alert_store = store, queue, alert_store
        self.settings, self.node = settings, node
        self.storage_problem = storage_problem
        self.local: dict[str, Incident] = {}  # this node's storage incident
        self._progress: dict[str, list] = {}  # integration -> [delivered+filtered, seen at, failing since]

    def storage(self, now: float) -> list[AlertRecord]:
        """This node's storage incident: kept in memory, since the storage fails."""
        key = f"storage_degraded:{self.node}"
        problem = self.storage_problem()
        if problem is not None and now - problem[1] >= self.settings.interval and key not in self.local:
            incident = Incident(key=key, rule="storage_degraded", subject=self.node, opened_at=problem[1],
                                message=f"the database of {self.node} fails: {problem[0]}; ingestion answers 503 "
                                        "and delivery waits until it works again")
            self.local[key] = incident
            return [record_of(incident, "firing", now)]
        if problem is None and key in self.local:
            return [record_of(self.local.pop(key), "resolved", now)]
        return []

    async def stored(self, now: float) -> list[AlertRecord]:
        """The stored incidents, under the cluster's lock: one judge at a time."""
        async with self.store.exclusive("alerts"):
            stored = {i.key: i for i in (msgspec.json.decode(b, type=Incident)
                                         for b in await self.alert_store.incidents())}
            holding, unknown = await self._conditions(now, stored)
            opened = [i for key, i in holding.items() if key not in stored]
            closed = [i for key, i in stored.items() if key not in holding and key not in unknown]
            if opened or closed:
                await self.alert_store.change_incidents([(i.key, _encode(i)) for i in opened],
                                                        [i.key for i in closed])
        return [record_of(i, "firing", now) for i in opened] + [record_of(i, "resolved", now) for i in closed]

    async def _conditions(self, now: float, stored: dict[str, Incident]) -> tuple[dict[str, Incident], set[str]]:
        """The incidents that hold now, and the open ones that cannot be judged now (kept open)."""
        s = self.settings
        holding: dict[str, Incident] = {}

        def hold(rule: str, subject: str, message: str, since: float = now) -> None:
            key = f"{rule}:{subject}"
            holding[key] = Incident(key=key, rule=rule, subject=subject, message=message, opened_at=since)

        low, normal = drops(await self.alert_store.volume(now - s.drop_baseline - 2 * s.drop_window), now, s)
        for integration in self.store.integrations():
            await self._integration(integration, now, low, hold)
        unknown = set()
        for key, incident in stored.items():
            # A drop ends only once its type is back to normal: a backlog, or a level between the
            # two, leaves it open. (An integration that is gone ends it.)
            topic, _, event = incident.subject.partition("/")
            if incident.rule == "silent_drop" and key not in holding and (topic, event) not in normal \
                    and self.store.integration(topic) is not None:
                unknown.add(key)
        return holding, unknown

    async def _integration(self, integration, now: float, low: dict, hold) -> None:
        s = self.settings
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
            hold("delivery_failing", iid, f"{named} has delivered nothing for {span(now - since)} while its "
                 f"requests fail: {stats.last_error or 'no error recorded'}", since)
        drained = stats.queued + stats.in_flight == 0 and integration.enabled and not integration.paused
        for (topic, event), (current, expected) in low.items():
            if topic == iid and drained:
                hold("silent_drop", f"{iid}/{event}", f"{event} events for {named}: {current} in the last "
                     f"{span(s.drop_window)}, against {expected:.0f} expected from the trailing "
                     f"{span(s.drop_baseline)} (below {s.drop_fraction:.0%}); check the site's tag")

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
