"""Pinterest's answer to a request, judged: what becomes of each event sent, and of the integration.

`judge` is a pure function of the answer, what was sent, the time and the rules: no server, no
clock, no store (tests/test_answer_policy.py runs it by table). The delivery loop
(delivery/pinterest/batch.py) applies its verdict: it settles the events, sends again what the
verdict says to, and pauses, holds back or slows the integration.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import msgspec

from delivery.pinterest.catalog import TROUBLESHOOTING
from delivery.pinterest.client import Answer
from delivery.pinterest.payload import EventResult
from delivery.retry import RetryPolicy, gave_up, next_try

OPTIONAL_FIELD = "custom_event_name"  # only an integration's option adds it; Pinterest's schema lacks it
# Answers that are problems of the credentials or the account (catalog.TROUBLESHOOTING): delivery pauses.
PAUSING = frozenset({"unauthorized", "forbidden", "invalid_ad_account"})


class Sent(NamedTuple):
    """What the policy needs to know of one event sent."""

    attempts: int  # attempts made before this one
    event_time: float  # Unix seconds: Pinterest's 7-day window counts from it
    custom_name: bool = False  # it carries custom_data.custom_event_name (an integration's option)


class Fate(NamedTuple):
    """What becomes of one event: delivered; failed (dead-lettered with `message`); retrying
    (sent again after `delay` seconds, an attempt counted); held (back in the queue for
    `delay` seconds, no attempt counted: not the event's fault)."""

    status: Literal["delivered", "failed", "retrying", "held"]
    message: str
    delay: float = 0.0
    warning: str | None = None  # Pinterest's warning about a delivered event
    reason: str | None = None  # what the dead letter or the retry records, when not `message`


class Rules(msgspec.Struct, frozen=True):
    retry: RetryPolicy = RetryPolicy()
    auth_recheck: float = 600.0  # seconds a paused integration waits before it tries again by itself


class Verdict(msgspec.Struct):
    fates: list[Fate] = []  # one per event sent, in order; empty when they all go again (`resend`)
    resend: list[list[int]] = []  # indexes of the events sent, each list one more request
    without_custom_name: bool = False  # resend them without custom_event_name (Pinterest refused it)
    pause: str | None = None  # a problem (catalog.TROUBLESHOOTING): send nothing until the credentials change
    hold: float = 0.0  # seconds the integration sends no new batch (Pinterest is failing)
    throttle: float | None = None  # seconds the ad account's budget pauses; its rate halves
    reached: bool = False  # Pinterest took events: the credentials work
    option_refused: str | None = None  # Pinterest refused custom_event_name, in its words
    last_error: str | None = None


def judge(answer: Answer, sent: Sequence[Sent], now: float, rules: Rules,
          rand: Callable[[], float] = random.random) -> Verdict:
    """The verdict on `answer` to a request of the events `sent`, at `now` (Unix seconds).
    `rand` gives [0, 1), the jitter of retry waits."""
    if answer.kind in ("ok", "partial"):
        return _accepted(answer, len(sent))
    if answer.kind == "bad_request":
        return _rejected(answer, sent)
    if answer.kind in PAUSING:
        said = f"{TROUBLESHOOTING[answer.kind]} (Pinterest said: {answer.message})"
        return Verdict([Fate("held", said, rules.auth_recheck) for _ in sent], pause=answer.kind,
                       last_error=answer.message)
    if answer.status == 429:  # Pinterest's rate limit is not the events' fault: wait as told, spend no attempt
        wait = answer.retry_after or 1.0
        said = f"{answer.message}; waiting {wait:g}s as Pinterest asked"
        return Verdict([Fate("held", said, wait) for _ in sent], throttle=wait, last_error=answer.message)
    return _failed(answer, sent, now, rules.retry, rand)


def _accepted(answer: Answer, count: int) -> Verdict:
    """A 200, or a 422 with a result per event: the failed ones are dead-lettered in Pinterest's words."""
    fates = []
    results: Sequence[EventResult | None] = answer.results or [None] * count
    for result in results:
        warning = result.warning_message if result else None
        if result is not None and result.status == "failed":
            reason = result.error_message or "failed without a message"
            fates.append(Fate("failed", reason, warning=warning, reason=f"Pinterest: {reason}"))
        else:
            fates.append(Fate("delivered", answer.message, warning=warning))
    return Verdict(fates, reached=True)


def _rejected(answer: Answer, sent: Sequence[Sent]) -> Verdict:
    """A whole request refused (400): without the option's field when that was it, else in
    halves until each bad event is alone and dead-lettered; the good ones still go."""
    if OPTIONAL_FIELD in answer.message and any(s.custom_name for s in sent):
        return Verdict(resend=[list(range(len(sent)))], without_custom_name=True, option_refused=answer.message)
    if len(sent) == 1:
        return Verdict([Fate("failed", answer.message, reason=f"Pinterest rejected it: {answer.message}")])
    half = len(sent) // 2
    return Verdict(resend=[list(range(half)), list(range(half, len(sent)))])


def _failed(answer: Answer, sent: Sequence[Sent], now: float, policy: RetryPolicy,
            rand: Callable[[], float]) -> Verdict:
    """Retryable (408, 5xx, a timeout, no connection): each event again after its backoff,
    while Pinterest's 7-day window for it lasts; then dead-lettered as too old. New batches
    wait too: sent now they would only fail the same way."""
    waits: dict[int, float] = {}  # one jittered wait per attempt count: events that failed together stay together
    fates = []
    for s in sent:
        attempts = s.attempts + 1
        if attempts not in waits:
            waits[attempts] = policy.delay(attempts, answer.retry_after, rand)
        delay = next_try(s.event_time, now, waits[attempts])
        if delay is None:
            fates.append(Fate("failed", gave_up(attempts, answer.message)))
        else:
            fates.append(Fate("retrying", f"{answer.message}; next attempt in {delay:.0f}s", delay,
                              reason=answer.message))
    throttle = (answer.retry_after or 1.0) if answer.status == 503 else None
    return Verdict(fates, hold=policy.delay(1, answer.retry_after, rand), throttle=throttle,
                   last_error=answer.message)
