"""Pinterest's answer to a request, judged (delivery/pinterest/policy.py), by table: no server,
no clock, no store. Each row is an answer as Pinterest gives it (status, body, Retry-After,
read by the real client.classify), the events that were sent, and what must become of them
and of the integration."""

from __future__ import annotations

import json

import pytest

from delivery.pinterest.client import Answer, classify
from delivery.pinterest.policy import Rules, Sent, judge
from delivery.retry import LAST_CALL, RetryPolicy, send_by

RULES = Rules(RetryPolicy(delays=(30.0, 120.0, 600.0)), auth_recheck=600.0)
NOW = 1_800_000_000.0  # the time of the answer (Unix seconds)
NO_JITTER = lambda: 0.5  # noqa: E731  (rand 0.5: the jitter's middle, each wait exactly its base)


def error(message: str, code: int = 1) -> bytes:
    return json.dumps({"code": code, "message": message}).encode()


def accepted(*results: dict) -> bytes:
    return json.dumps({"num_events_received": len(results), "num_events_processed":
                       sum(r["status"] == "processed" for r in results), "events": list(results)}).encode()


def answer(status: int, body: bytes, count: int, retry_after: str | None = None) -> Answer:
    return classify(status, body, retry_after, count)


TIMEOUT = Answer("retry", None, "Pinterest did not answer within 30s (timeout)")
FRESH = Sent(0, NOW - 60)  # a first attempt at an event a minute old


def closing_in(seconds: float, attempts: int = 0) -> Sent:
    """An event whose last moment to be sent (Pinterest's 7-day window less the margin) is `seconds` away."""
    return Sent(attempts, NOW + seconds - send_by(0.0))

# name, answer, sent, fates [(status, delay, message)], verdict fields that differ from the defaults
TABLE = [
    ("200: every event delivered", answer(200, accepted({"status": "processed"}, {"status": "processed"}), 2),
     [FRESH, FRESH],
     [("delivered", 0.0, "Pinterest accepted it, and the 1 other event sent with it")] * 2,
     {"reached": True}),
    ("200 with a failed event: it alone is dead-lettered, in Pinterest's words",
     answer(200, accepted({"status": "failed", "error_message": "event_time is in the future"},
                          {"status": "processed", "warning_message": "no click id"}), 2),
     [FRESH, FRESH],
     [("failed", 0.0, "event_time is in the future"), ("delivered", 0.0, "Pinterest accepted 1 of the 2 events "
                                                                         "sent together")],
     {"reached": True}),
    ("422 with a result per event: partial, the good one delivered",
     answer(422, json.dumps({"code": 4, "message": "some failed", "details": {"events": [
         {"status": "processed"}, {"status": "failed", "error_message": "bad email hash"}]}}).encode(), 2),
     [FRESH, FRESH],
     [("delivered", 0.0, "some failed"), ("failed", 0.0, "bad email hash")],
     {"reached": True}),
    ("400 for one event: dead-lettered with Pinterest's message",
     answer(400, error("event_name is invalid"), 1), [Sent(2, NOW)],
     [("failed", 0.0, "HTTP 400: event_name is invalid")], {}),
    ("400 for several events: sent again in halves, nothing settled yet",
     answer(400, error("event_name is invalid"), 5), [FRESH] * 5,
     [], {"resend": [[0, 1], [2, 3, 4]]}),
    ("400 naming custom_event_name when an event carries it: all again without it",
     answer(400, error("Unknown property custom_event_name"), 3), [FRESH, Sent(0, NOW, custom_name=True), FRESH],
     [], {"resend": [[0, 1, 2]], "without_custom_name": True,
          "option_refused": "HTTP 400: Unknown property custom_event_name"}),
    ("400 naming custom_event_name when none carries it: in halves as any 400",
     answer(400, error("Unknown property custom_event_name"), 2), [FRESH, FRESH],
     [], {"resend": [[0], [1]]}),
    ("401: the events wait, no attempt spent; the integration pauses",
     answer(401, error("Authentication failed."), 2), [FRESH, Sent(5, NOW)],
     [("held", 600.0, "401 Unauthorized: the access token has expired or been revoked")] * 2,
     {"pause": "unauthorized", "last_error": "Authentication failed."}),
    ("403: paused (forbidden)", answer(403, error("Not permitted to access the ad account"), 1), [FRESH],
     [("held", 600.0, "(Pinterest said: Not permitted to access the ad account)")],
     {"pause": "forbidden", "last_error": "Not permitted to access the ad account"}),
    ("404: paused (the ad account is unknown)", answer(404, error("Ad account not found"), 1), [FRESH],
     [("held", 600.0, "Ad account not found")],
     {"pause": "invalid_ad_account", "last_error": "Ad account not found"}),
    ("429 with Retry-After: held as long as told, no attempt spent; the rate slows",
     answer(429, error("Too many requests"), 2, retry_after="7"), [FRESH, Sent(3, NOW)],
     [("held", 7.0, "HTTP 429: Too many requests; waiting 7s as Pinterest asked")] * 2,
     {"throttle": 7.0, "last_error": "HTTP 429: Too many requests"}),
    ("429 without Retry-After: a second",
     answer(429, error("Too many requests"), 1), [FRESH],
     [("held", 1.0, "waiting 1s")], {"throttle": 1.0, "last_error": "HTTP 429: Too many requests"}),
    ("500: each retried after the wait its attempt count has; new batches held back",
     answer(500, error("Internal error"), 3), [FRESH, Sent(1, NOW), Sent(2, NOW)],
     [("retrying", 30.0, "HTTP 500: Internal error; next attempt in 30s"),
      ("retrying", 120.0, "next attempt in 120s"), ("retrying", 600.0, "next attempt in 600s")],
     {"hold": 30.0, "last_error": "HTTP 500: Internal error"}),
    ("500 past the last delay: the last one repeats, however many attempts were made",
     answer(500, error("Internal error"), 2), [Sent(3, NOW), Sent(40, NOW - 5 * 86400)],
     [("retrying", 600.0, "next attempt in 600s")] * 2,
     {"hold": 30.0, "last_error": "HTTP 500: Internal error"}),
    ("500 near the end of the 7-day window: the next attempt comes before it closes",
     answer(500, error("Internal error"), 2), [closing_in(3600, 0), closing_in(600, 2)],
     [("retrying", 30.0, "next attempt in 30s"), ("retrying", 600 - LAST_CALL, "next attempt in 540s")],
     {"hold": 30.0, "last_error": "HTTP 500: Internal error"}),
    ("500 when no attempt fits in the window any more: dead-lettered as too old, never sent late",
     answer(500, error("Internal error"), 2), [closing_in(LAST_CALL - 1, 0), closing_in(-3600, 11)],
     [("failed", 0.0, "gave up after 1 attempt: Pinterest's 7-day window for it closes before another attempt; "
                      "the last error: HTTP 500: Internal error"),
      ("failed", 0.0, "gave up after 12 attempts")],
     {"hold": 30.0, "last_error": "HTTP 500: Internal error"}),
    ("429 near the end of the window: held as told, no attempt spent (the age check runs before the next send)",
     answer(429, error("Too many requests"), 1, retry_after="5"), [closing_in(1)],
     [("held", 5.0, "waiting 5s")], {"throttle": 5.0, "last_error": "HTTP 429: Too many requests"}),
    ("503 with Retry-After: no retry sooner than told; the rate slows too",
     answer(503, error("Unavailable"), 1, retry_after="90"), [FRESH],
     [("retrying", 90.0, "HTTP 503: Unavailable; next attempt in 90s")],
     {"hold": 90.0, "throttle": 90.0, "last_error": "HTTP 503: Unavailable"}),
    ("no answer (a timeout): retried", TIMEOUT, [FRESH],
     [("retrying", 30.0, "(timeout); next attempt in 30s")],
     {"hold": 30.0, "last_error": TIMEOUT.message}),
]


@pytest.mark.parametrize("name, answer, sent, fates, fields", TABLE, ids=[row[0] for row in TABLE])
def test_the_verdict_on_an_answer(name, answer, sent, fates, fields):
    verdict = judge(answer, sent, NOW, RULES, rand=NO_JITTER)
    assert len(verdict.fates) == len(fates)
    for fate, (status, delay, message) in zip(verdict.fates, fates):
        assert (fate.status, fate.delay) == (status, delay), fate
        assert message in fate.message, fate
    expected = {"resend": [], "without_custom_name": False, "pause": None, "hold": 0.0, "throttle": None,
                "reached": False, "option_refused": None, "last_error": None} | fields
    assert {key: getattr(verdict, key) for key in expected} == expected


def test_what_the_dead_letter_and_the_retry_record():
    """The reason stored with a dead letter or a retry, where it differs from the debugger's line."""
    bad = judge(answer(400, error("event_name is invalid"), 1), [FRESH], NOW, RULES, rand=NO_JITTER).fates[0]
    assert bad.reason == "Pinterest rejected it: HTTP 400: event_name is invalid"
    failed = judge(answer(200, accepted({"status": "failed", "error_message": "too old"}), 1), [FRESH], NOW,
                   RULES).fates[0]
    assert failed.reason == "Pinterest: too old"
    warned = judge(answer(200, accepted({"status": "processed", "warning_message": "no click id"}), 1), [FRESH],
                   NOW, RULES).fates[0]
    assert warned.warning == "no click id"
    retry = judge(answer(502, error("Bad gateway"), 1), [FRESH], NOW, RULES, rand=NO_JITTER).fates[0]
    assert retry.reason == "HTTP 502: Bad gateway"


def test_events_that_failed_together_wait_together():
    """One jittered wait per attempt count: a batch that failed comes back as one batch."""
    draws = iter([0.0, 0.99, 0.3, 0.7])
    sent = [FRESH, Sent(1, NOW), FRESH, Sent(1, NOW)]
    verdict = judge(TIMEOUT, sent, NOW, RULES, rand=lambda: next(draws))
    waits = [fate.delay for fate in verdict.fates]
    assert waits == [30.0 * 0.8, 120.0 * (0.8 + 0.4 * 0.99), 30.0 * 0.8, 120.0 * (0.8 + 0.4 * 0.99)]
    assert verdict.hold == pytest.approx(30.0 * (0.8 + 0.4 * 0.3))  # the hold draws its own
