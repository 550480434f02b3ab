"""Sending alerts: to every enabled destination, each from a task of its own, retried with
backoff; every outcome goes into the history. A receiver that is down or slow never holds up
ingestion or delivery."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import httpx

from delivery.alerts.model import AlertRecord, Attempted, Destination
from delivery.clock import Clock

log = logging.getLogger("signal_edge.alerts")
SEND_TIMEOUT = 5.0  # seconds a webhook may take to answer
RETRY_DELAYS = (1.0, 2.0, 5.0, 15.0, 30.0, 60.0, 300.0)  # between attempts; then the alert is given up


class Webhooks:
    def __init__(self, node: str, save: Callable[[AlertRecord], Awaitable[None]], clock: Clock) -> None:
        self.node = node
        self.save = save  # into the history
        self.clock = clock
        self.http = httpx.AsyncClient(timeout=SEND_TIMEOUT)
        self._tasks: set[asyncio.Task] = set()

    def dispatch(self, record: AlertRecord, destinations: list[Destination]) -> None:
        log.log(logging.WARNING if record.state == "firing" else logging.INFO, "alert %s: %s", record.state,
                record.message)
        for destination in destinations:
            if destination.enabled:
                record.deliveries[destination.id] = Attempted()
                task = asyncio.ensure_future(self._deliver(record, destination))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.http.aclose()

    async def _deliver(self, record: AlertRecord, destination: Destination) -> None:
        """Until the destination takes it, with backoff; each outcome goes into the history."""
        for delay in (*RETRY_DELAYS, None):
            outcome = await self.attempt(record, destination)
            outcome.attempts = record.deliveries[destination.id].attempts + 1
            record.deliveries[destination.id] = outcome
            if outcome.status == "sent" or delay is None:
                if outcome.status != "sent":
                    outcome.status = "failed"
                    log.warning("alert to %s given up after %d attempts: %s", destination.name, outcome.attempts,
                                outcome.error)
                await self.save(record)
                return
            outcome.status = "pending"
            await self.save(record)
            await asyncio.sleep(delay)

    async def attempt(self, record: AlertRecord, destination: Destination) -> Attempted:
        try:
            answer = await self.http.post(destination.url, json=payload(record, destination.kind, self.node))
        except httpx.HTTPError as exc:
            return Attempted(status="failed", attempts=1, error=f"{type(exc).__name__}: {exc}"[:300],
                             at=self.clock.time())
        if 200 <= answer.status_code < 300:
            return Attempted(status="sent", attempts=1, at=self.clock.time())
        return Attempted(status="failed", attempts=1, error=f"HTTP {answer.status_code}: {answer.text[:200]}",
                         at=self.clock.time())


def payload(record: AlertRecord, kind: str, node: str) -> dict:
    """What a destination receives: Slack's incoming-webhook text, or a JSON object."""
    at = datetime.fromtimestamp(record.at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    if kind == "slack":
        mark = {"firing": ":rotating_light:", "resolved": ":white_check_mark:"}.get(record.state, ":bell:")
        return {"text": f"{mark} signal-edge {record.state}: {record.message}"}
    return {"source": "signal-edge", "id": record.id, "rule": record.rule, "state": record.state,
            "subject": record.subject, "message": record.message, "at": at, "node": node}
