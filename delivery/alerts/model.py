"""What alerts are made of: their settings, destinations, incidents and the records of each alert."""

from __future__ import annotations

import secrets

import msgspec


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


def record_of(incident: Incident, state: str, now: float) -> AlertRecord:
    message = incident.message if state == "firing" else \
        f"resolved after {span(now - incident.opened_at)}: {incident.message}"
    return AlertRecord(at=now, rule=incident.rule, subject=incident.subject, state=state, message=message)


def span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} minutes"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} hours"
    return f"{seconds / 86400:.0f} days"


def new_destination_id() -> str:
    return "alt_" + secrets.token_hex(8)
