"""Counting events for the silent-drop rule, and judging the counts against their baseline."""

from __future__ import annotations

from delivery.alerts.model import AlertSettings
from delivery.erasure import ERASED_TYPE

MAX_VOLUME_KEYS = 10_000  # distinct (integration, event type, bucket) counted between flushes
RESOLVE_AT = 2.0  # a drop ends once the window is back above this many times the threshold


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
