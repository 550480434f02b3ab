"""One call to Pinterest's events endpoint, and what its answer means for delivery."""

from __future__ import annotations

import asyncio
import email.utils
import time
from typing import Literal

import httpx
import msgspec

from delivery.pinterest.payload import (
    Error,
    Event,
    EventResult,
    EventsRequest,
    error_decoder,
    request_encoder,
    response_decoder,
)

Kind = Literal["ok", "partial", "bad_request", "retry", "unauthorized", "forbidden", "invalid_ad_account"]
RETRYABLE = {408, 429} | set(range(500, 600))


class Answer(msgspec.Struct):
    kind: Kind
    status: int | None  # None: no HTTP answer (network error, timeout)
    message: str
    results: list[EventResult] | None = None  # per event, in request order
    retry_after: float | None = None


def events_url(api_base: str, ad_account_id: str, test: bool) -> str:
    url = f"{api_base.rstrip('/')}/v5/ad_accounts/{ad_account_id}/events"
    return url + "?test=true" if test else url


def encode(events: list[Event]) -> bytes:
    return request_encoder.encode(EventsRequest(data=events))


async def send(
    http: httpx.AsyncClient, api_base: str, ad_account_id: str, token: str, body: bytes, count: int, test: bool,
    deadline: float,
) -> Answer:
    """One request, ended after `deadline` seconds however it goes: httpx's own timeouts are per
    connect, write and read, so an answer that trickles in a byte at a time would never end."""
    try:
        async with asyncio.timeout(deadline):
            response = await http.post(
                events_url(api_base, ad_account_id, test),
                content=body,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
    except (httpx.TimeoutException, TimeoutError):
        return Answer("retry", None, f"Pinterest did not answer within {deadline:g}s (timeout)")
    except httpx.HTTPError as exc:
        return Answer("retry", None, f"could not reach Pinterest: {type(exc).__name__}: {exc}")
    unbind(response)
    return classify(response.status_code, response.content, response.headers.get("retry-after"), count)


def unbind(response: httpx.Response) -> None:
    """Break the reference cycle between a read response and its stream (httpx's
    BoundAsyncStream points back at its response). Left alone, the cycle and the request body
    behind it (up to 1000 events) wait for a full garbage collection, which collector/runtime.py's
    tune_gc makes rare: over a long drain that was most of the process's memory."""
    response.stream = _EMPTY


_EMPTY = httpx.ByteStream(b"")


def classify(status: int, content: bytes, retry_after_header: str | None, count: int) -> Answer:
    if status == 200:
        try:
            parsed = response_decoder.decode(content)
        except msgspec.DecodeError:
            return Answer("ok", status, "accepted (the response body was not readable)")
        results = parsed.events if len(parsed.events) == count else None
        received, processed = parsed.num_events_received, parsed.num_events_processed
        others = received - 1
        said = ("Pinterest accepted it" + (f", and the {others} other event{'s' * (others != 1)} sent with it"
                                           if others else "") if processed == received else
                f"Pinterest accepted {processed} of the {received} events sent together")
        return Answer("ok", status, said, results)
    error = _error(content)
    message = error.message or f"HTTP {status}"
    if status == 422:
        results = _detail_results(error, count)
        return Answer("partial" if results else "bad_request", status, message, results)
    if status in RETRYABLE:
        return Answer("retry", status, f"HTTP {status}: {message}", retry_after=_retry_after(retry_after_header))
    if status == 401:
        return Answer("unauthorized", status, message)
    if status == 403:
        return Answer("forbidden", status, message)
    if status == 404 or (status == 400 and "ad_account" in message.lower()):
        return Answer("invalid_ad_account", status, message)
    return Answer("bad_request", status, f"HTTP {status}: {message}")


def _error(content: bytes) -> Error:
    try:
        return error_decoder.decode(content)
    except msgspec.DecodeError:
        return Error(message=content[:200].decode("utf-8", "replace"))


def _detail_results(error: Error, count: int) -> list[EventResult] | None:
    """Per-event results of a 422, when Pinterest put them in `details`."""
    try:
        events = msgspec.convert((error.details or {}).get("events", []), list[EventResult])
    except msgspec.ValidationError:
        return None
    return events if len(events) == count else None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
