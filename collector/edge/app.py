"""The edge app (port 8080): serves the tag and takes events in (design sections 3 and 4).

Ingestion and the tag are plain ASGI, ahead of Starlette: ingestion is the hot path, and
Starlette's middleware stack, router scan and Request/Response objects cost as much per
request as our own work does. Their paths (the legacy ones and each source's own, with and
without its prefix: collector/edge/serving.py) are found with one dict look-up. The rest
(health) is Starlette.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import math
import time
from collections.abc import Sequence
from itertools import groupby
from typing import Any, Final, cast
from urllib.parse import urlsplit

import msgspec
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collector.edge import identity as ei
from collector.edge import text
from collector.edge.arrival import arrival
from collector.edge.ids import uuid4
from collector.edge.ingest import (
    EventError,
    RequestContext,
    ads_allowed,
    build_event,
    unix_seconds,
    validation_message,
)
from collector.edge.limits import ClientBuckets, client_key
from collector.edge.serving import Routes, serving_of
from collector.edge.split import split_batch
from collector.edge.tag import ServedTag, TagFile
from collector.edge.wire import (
    Accepted,
    BatchBody,
    ErrorBody,
    ErrorDetail,
    IncomingEvent,
    Rejected,
    SingleBody,
    batch_decoder,
    decoded_batch_decoder,
    encoder,
    event_decoder,
    single_decoder,
)
from collector.health import health_response
from collector.services import Services
from delivery.config import SERVER_KEY_PREFIX, Source
from delivery.errorlog import ErrorLog, failure_id
from delivery.events import EdgeEvent, event_encoder
from delivery.pinterest.identity import MAX_DEPTH
from delivery.pinterest.mapping import DELIVERED_TYPES, Options, is_priority
from delivery.pinterest.tag_events import tag_mapping
from delivery.queue import QueueItem
from delivery.ratelimit import TokenBucket
from delivery.slices import WORK_SLICE, demand
from delivery.store import DebugRecord, StorageError, StoredIdentity

log = logging.getLogger("signal_edge.edge")
errors = ErrorLog(log)
STORAGE_RETRY_AFTER = 5  # seconds a client waits after a 503 for a storage fault
MAX_BODY = 512 * 1024
MAX_EVENT = 32 * 1024
MAX_EVENTS = 500  # events per request, as Datafly's gateway allows
MAX_ORIGIN = 300  # "https://" + a host name (at most 253) + ":port"
_JSON = [(b"content-type", b"application/json")]

Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]  # status, body, extra headers
# The request headers ingestion reads; the others are never decoded.
_READ_HEADERS = {name.encode(): name for name in (
    "content-length", "origin", "authorization", "cookie", "user-agent", "x-forwarded-for", "x-forwarded-proto",
    "host", "sec-fetch-site", "sec-gpc")}


class _NotOurs(enum.Enum):
    """The answer of a path look-up for a path the edge does not answer itself (an enum member,
    not object(), so that the type checker narrows `is not _NOT_OURS`)."""

    PATH = 0


_NOT_OURS: Final = _NotOurs.PATH


def read_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    found = {}
    for name, value in raw:
        key = _READ_HEADERS.get(name)
        if key is not None:
            found[key] = value.decode("latin-1")
    return found


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 rejected: list[Rejected] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.rejected = rejected or []

    def answer(self, cors: list[tuple[bytes, bytes]]) -> Answer:
        body = encoder.encode(ErrorBody(ErrorDetail(self.code, self.message), self.rejected))
        extra = [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]
        return self.status, body, cors + extra


def _bearer(headers: dict[str, str]) -> str | None:
    value = headers.get("authorization", "")
    return value[7:].strip() if value[:7].lower() == "bearer " else None


def _key(in_body: str | None, bearer: str | None) -> str | None:
    """The request's key: the body's pipeline_key or the Authorization header's, not two
    different ones, and a server key only in the header."""
    if in_body and bearer and in_body != bearer:
        raise HttpError(400, "two_keys", "two keys: pipeline_key in the body and another in Authorization: Bearer; "
                                         "send one")
    if in_body and in_body.startswith(SERVER_KEY_PREFIX):
        raise HttpError(400, "server_key_in_body", "a server key (sk_...) goes in the Authorization: Bearer header, "
                                                   "never in the body's pipeline_key")
    return in_body or bearer


def suspect(body: bytes) -> bool:
    """The body may hold an email address or an international number: an "@" or a "+", or
    an escape that may stand for one ("%40", "\u0040"; the backslash is looked for by the
    caller). Three one-byte searches (memchr, each faster than one search for a longer
    needle); only then are values read for addresses."""
    return body.find(b"@") >= 0 or body.find(b"+") >= 0 or body.find(b"%") >= 0


def _too_large() -> HttpError:
    return HttpError(413, "body_too_large", f"request body is over {MAX_BODY // 1024} KB; send smaller batches")


def _label(implied: str | None, index: int) -> str:
    """How an error names the event: batch[3] in a batch, body for a single event."""
    return f"batch[{index}]" if implied is None else "body"


def query_epik(query: bytes) -> str | None:
    """The click id in the request's own query string, when it is safe to echo into Set-Cookie."""
    found = ei.epik_from_query(query.decode("latin-1")) if query else None
    return found if found and ei.cookie_value_ok(found) else None


def origin_allowed(source: Source, origin: str) -> bool:
    if not source.domain and not source.allowed_origins:
        return True  # nothing configured: any site may send (the pipeline key is public anyway)
    if origin in source.allowed_origins:
        return True
    if source.domain:
        host = (urlsplit(origin).hostname or "").lower()
        domain = source.domain.lower().lstrip(".")
        return host == domain or host.endswith("." + domain)
    return False


def cors_headers(origin: str | None) -> list[tuple[bytes, bytes]]:
    if not origin:
        return []
    return [(b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-credentials", b"true"), (b"vary", b"Origin")]


class Target:
    """An enabled integration of a source, with the priority of the events it has seen."""

    __slots__ = ("integration_id", "options", "_priority")

    def __init__(self, integration_id: str, options: Options) -> None:
        self.integration_id, self.options = integration_id, options
        self._priority: dict[tuple[str, str | None], int] = {}

    def priorities(self, events: list[EdgeEvent]) -> list[int]:
        """1 for each of the variant's priority events, else 0; remembered per event type and
        name (the mapping behind it is a few dict look-ups and a property, for every event)."""
        known = self._priority
        found = [known.get((ev.type, ev.name)) for ev in events]
        if None in found:
            if len(known) >= 1024:  # names come from browsers: keep it bounded
                known.clear()
            for i, ev in enumerate(events):
                if found[i] is None:
                    found[i] = known[(ev.type, ev.name)] = 1 if is_priority(ev, self.options) else 0
        return cast("list[int]", found)  # every None was filled in above


def queue_items(topic: str, lines: bytes, priorities: list[int], at: float) -> list[QueueItem]:
    """One item for the events' JSON Lines, or one per run of events with the same priority."""
    if len(priorities) == 1 or min(priorities) == max(priorities):
        return [QueueItem(topic, lines, at, priorities[0], len(priorities))]
    parts = iter(lines.split(b"\n"))
    items = []
    for priority, run in groupby(priorities):
        run_lines = [next(parts) for _ in run]
        items.append(QueueItem(topic, b"\n".join(run_lines), at, priority, len(run_lines)))
    return items


class Edge:
    def __init__(self, services: Services) -> None:
        self.s = services
        self.trust = ei.ProxyTrust(services.settings.trusted_networks())
        self.tag = TagFile(services.settings.static_dir)
        self.buckets: dict[str, TokenBucket] = {}
        self.clients = ClientBuckets()
        self.tag_source = services.settings.access_log  # the access log names each request's source
        # source -> its enabled integrations, and the ids of its disabled ones
        self._routes: dict[str, tuple[list[Target], list[str]]] = {}
        self._tags: dict[str, ServedTag] = {}  # source -> its own tag
        # (source, Origin) -> allowed: a site's pages send one or two origins, each parsed once
        self._origins: dict[tuple[str, str], bool] = {}
        self.paths = Routes(services.store.sources())
        services.store.subscribe(self.changed)

    def changed(self, kind: str, object_id: str) -> None:
        self._routes.clear()
        self._tags.clear()
        self._origins.clear()
        if kind == "source":
            self.paths = Routes(self.s.store.sources())

    def routes(self, source_id: str) -> tuple[list[Target], list[str]]:
        found = self._routes.get(source_id)
        if found is None:
            integrations = self.s.store.integrations(source_id)
            found = self._routes[source_id] = ([Target(i.id, i.options) for i in integrations if i.enabled],
                                               [i.id for i in integrations if not i.enabled])
        return found

    # --- checks ---------------------------------------------------------------------------

    def origin_ok(self, source: Source, origin: str) -> bool:
        """origin_allowed(), remembered per source and origin until the configuration changes.
        Origins come from browsers: at most 4096 kept, each of a real origin's length (a scheme
        and a host name of at most 253 characters); a longer one is judged every time."""
        if len(origin) > MAX_ORIGIN:
            return origin_allowed(source, origin)
        known = self._origins.get((source.id, origin))
        if known is None:
            if len(self._origins) >= 4096:
                self._origins.clear()
            known = self._origins[(source.id, origin)] = origin_allowed(source, origin)
        return known

    def source_for(self, key: str | None) -> tuple[Source, bool]:
        """The source a key names, and whether the key is its server key (sk_...): the site's own
        servers, whose events may say the visitor's address and User-Agent."""
        if not key:
            raise HttpError(401, "missing_pipeline_key",
                            "no pipeline key: send pipeline_key in the body or Authorization: Bearer dk_...")
        if key.startswith(SERVER_KEY_PREFIX):
            source = self.s.store.source_by_server_key(hashlib.sha256(key.encode()).hexdigest())
            if source is None:
                raise HttpError(401, "unknown_server_key",
                                "unknown or rotated server key; issue one on the source's page in the admin UI")
            return source, True
        source = self.s.store.source_by_key(key)
        if source is None:
            raise HttpError(401, "unknown_pipeline_key",
                            "unknown or revoked pipeline key; copy the current one from the admin UI")
        if key != source.pipeline_key:  # a key replaced by a rotation: accepted through its overlap
            until = next((r.until for r in source.retired_keys if r.key == key), 0.0)
            if time.time() >= until:
                raise HttpError(401, "expired_pipeline_key",
                                f"this pipeline key was replaced and stopped working at {_iso(until)}; copy the "
                                "current snippet from the source's page in the admin UI")
        return source, False

    def check_rate(self, source: Source, events: int, client_ip: str | None) -> None:
        """The client's own bucket first (one client cannot spend the site's budget), then the
        source's. No client bucket for the site's own servers (`client_ip` None): one address
        speaks for every visitor."""
        wait = 0.0
        if client_ip is not None:
            key = client_ip if ":" not in client_ip else client_key(client_ip)  # IPv6: its /64
            wait = self.clients.take((source.id, key), events, source.client_rate_limit_per_second,
                                     source.client_rate_limit_burst, time.monotonic())
        if wait > 0:
            raise HttpError(429, "rate_limited",
                            f"over this source's limit of {source.client_rate_limit_per_second:g} events/s from one "
                            "client; retry later", {"Retry-After": str(max(1, math.ceil(wait)))})
        bucket = self.buckets.get(source.id)
        if (bucket is None or bucket.configured_rate != source.rate_limit_per_second
                or bucket.burst != source.rate_limit_burst):
            bucket = self.buckets[source.id] = TokenBucket(source.rate_limit_per_second, source.rate_limit_burst)
        wait = bucket.try_take(events)
        if wait > 0:
            raise HttpError(429, "rate_limited",
                            f"over this source's limit of {source.rate_limit_per_second:g} events/s; retry later",
                            {"Retry-After": str(max(1, math.ceil(wait)))})

    def check_backpressure(self) -> None:
        """Both from memory: the queue's depth, and the disk's room as last seen (at most a
        second ago) by the database's own thread."""
        queue = self.s.queue
        if queue.depth() >= self.s.settings.queue_max:
            raise HttpError(503, "queue_full", "the delivery queue is full; events are not dropped, retry shortly",
                            {"Retry-After": "5"})
        if queue.disk_low():
            raise HttpError(503, "disk_full", "the disk is nearly full: what is left is kept for delivering the "
                            "queued events; nothing was accepted, retry shortly", {"Retry-After": "5"})

    # --- ingestion (plain ASGI) -------------------------------------------------------------

    async def read_body(self, receive, headers: dict[str, str]) -> bytes:
        message = await receive()
        if message["type"] == "http.request" and not message.get("more_body"):
            body = message.get("body", b"")  # the usual case: it arrived whole
        else:
            body = await self.read_rest(receive, headers, message)
        if len(body) > MAX_BODY:
            raise _too_large()
        return body

    async def read_rest(self, receive, headers: dict[str, str], message) -> bytes:
        declared = headers.get("content-length")
        if declared and declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY:
            raise _too_large()
        chunks, size = [], 0
        while True:
            if message["type"] == "http.disconnect":
                raise ConnectionAbortedError
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                raise _too_large()
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)
            message = await receive()

    async def ingest(self, scope, receive, implied: str | None) -> Answer:
        demand.at = time.perf_counter()  # delivery's long work takes shorter slices meanwhile
        headers = read_headers(scope["headers"])
        origin = headers.get("origin")
        # Refusals too: a page's console can then show why (a 401's reason, not a CORS error).
        cors = cors_headers(origin)
        source = key = None
        try:
            body = await self.read_body(receive, headers)
            # JSON writes a lone surrogate or a NUL only as an escape: without a backslash (the
            # usual body) neither can be there, and one scan (memchr) replaces three.
            escaped = b"\\" in body
            if escaped and text.may_hold_surrogates(body):
                body = text.repair_surrogates(body)
            key, events, sent_at, reset = self.envelope(body, implied, headers)
            source, trusted = self.source_for(key)
            if self.tag_source:
                scope["signal_edge.source"] = source.id
            if trusted and origin:
                raise HttpError(403, "server_key_from_browser",
                                "a server key (sk_...) is for the site's own servers and is refused from browsers; "
                                "pages send the source's pipeline key (dk_...)")
            if origin and not self.origin_ok(source, origin):
                raise HttpError(403, "origin_not_allowed", f"origin {origin} is not allowed for this source; add it "
                                "to the source's domain or allowed origins in the admin UI")
            if len(events) > MAX_EVENTS:
                raise HttpError(413, "too_many_events",
                                f"batch: {len(events)} events; send at most {MAX_EVENTS} per request")
            self.check_backpressure()
            client = scope.get("client")
            peer = client[0] if client else None
            ip = self.trust.client_ip(peer, headers.get("x-forwarded-for"))
            self.check_rate(source, len(events), None if trusted else ip)
            return await self.accept(scope, headers, source, events, implied, sent_at, reset, cors, peer, ip,
                                     escaped or suspect(body), trusted, escaped and text.may_hold_nul(body))
        except HttpError as exc:
            # origin_not_allowed is raised only for a request that named an origin
            detail = cast("str", origin) if exc.code == "origin_not_allowed" else exc.message
            self.refused(source, key, headers, exc.code, detail)
            return exc.answer(cors)
        except StorageError as exc:
            log.warning("ingestion refused with 503: %s", exc)
            error = HttpError(503, "storage_unavailable", f"{exc}; nothing was accepted, retry shortly",
                              {"Retry-After": str(STORAGE_RETRY_AFTER)})
            self.refused(source, key, headers, error.code, error.message)
            return error.answer(cors)

    def refused(self, source: Source | None, key: str | None, headers: dict[str, str], reason: str,
                detail: str) -> None:
        """Count a refused request for the source page and /metrics. Refused before its body named a
        source (too large, not JSON), it counts for the source of its Authorization header, if any."""
        if reason in ("unknown_pipeline_key", "unknown_server_key"):
            self.s.activity.unknown_key(key or "", reason)
            return
        if reason == "expired_pipeline_key":  # counted on the source the key belonged to
            source = self.s.store.source_by_key(key or "")
        if source is None and (bearer := _bearer(headers)):
            source = self.s.store.source_by_key(bearer)
        self.s.activity.record(source.id if source else None, reason, detail)

    def envelope(self, body: bytes, implied: str | None, headers: dict[str, str]):
        """(pipeline key, events, batch sentAt, reset) from the body. The events come decoded
        when the whole body decoded in one call (the usual case), else as raw JSON to decode one
        by one, so that one bad or oversized event is rejected alone."""
        envelope: SingleBody | BatchBody[Any]
        events: list[Any]
        sent_at: float | None = None
        try:
            if implied is not None:
                envelope = single_decoder.decode(body)
                events = [body]
            else:
                batch: BatchBody[Any] | None = None
                if len(body) <= MAX_EVENT:  # no event in it can be too large
                    # not contextlib.suppress: a context manager per request on the hot path
                    try:  # noqa: SIM105
                        batch = decoded_batch_decoder.decode(body)
                    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
                        pass  # decoded again below, event by event, to say which one is wrong
                if batch is None:
                    batch, events = self.decode_batch(body)
                else:
                    events = batch.batch
                if not events:
                    raise HttpError(400, "empty_batch", "batch: empty; send at least one event")
                envelope = batch
                if batch.sentAt:
                    sent_at = unix_seconds(batch.sentAt)
        except msgspec.ValidationError as exc:
            raise HttpError(400, "invalid_body", str(validation_message(exc, "body"))) from None
        except msgspec.DecodeError as exc:
            raise HttpError(400, "malformed_json", f"body is not valid JSON: {exc}") from None
        except RecursionError:
            raise HttpError(400, "too_deep",
                            f"body: nested deeper than {MAX_DEPTH} levels; send flatter data") from None
        return _key(envelope.pipeline_key, _bearer(headers)), events, sent_at, envelope.reset

    @staticmethod
    def decode_batch(body: bytes) -> tuple[BatchBody, list]:
        """The envelope and its events as raw JSON. An event nested past what msgspec can
        skip is split off without recursion, so that only it is refused."""
        try:
            envelope = batch_decoder.decode(body)
            return envelope, envelope.batch
        except RecursionError:
            split = split_batch(body)
            if split is None:
                raise
            emptied, events = split
            return batch_decoder.decode(emptied), events

    @staticmethod
    def decode(raw: bytes | msgspec.Raw, index: int, implied: str | None) -> IncomingEvent:
        """One event of a body that did not decode whole (or a single-event body)."""
        if len(raw) > MAX_EVENT:
            raise EventError(_label(implied, index), f"event is over {MAX_EVENT // 1024} KB", "event_too_large")
        try:
            return event_decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise validation_message(exc, _label(implied, index)) from None
        except msgspec.DecodeError as exc:
            raise EventError(_label(implied, index), f"not valid JSON: {exc}") from None
        except RecursionError:
            raise EventError(_label(implied, index), f"nested deeper than {MAX_DEPTH} levels; send flatter data",
                             "too_deep") from None

    async def accept(self, scope, headers: dict[str, str], source: Source,
                     incoming: Sequence[IncomingEvent | bytes | msgspec.Raw], implied: str | None,
                     sent_at: float | None, reset: bool, cors: list[tuple[bytes, bytes]], peer: str | None,
                     ip: str | None, suspect: bool, trusted: bool, nul: bool = False) -> Answer:
        cookies = ei.parse_cookies(headers.get("cookie", ""))
        # "<anonymous id>.<the day it was last renewed>" (a bare id from before renewals were dated)
        anonymous_id, _, renewed_on = cookies.get(ei.DFID, "").partition(".")
        fresh = reset or not anonymous_id or not ei.cookie_value_ok(anonymous_id)
        if fresh:
            anonymous_id = uuid4()
        pin_unauth = cookies.get(ei.PIN_UNAUTH)
        if not pin_unauth or not ei.cookie_value_ok(pin_unauth):
            # The site's server without the browser's cookie: a fresh one per call would be a new
            # external_id each time.
            pin_unauth = None if trusted else uuid4()
            cookies.pop(ei.PIN_UNAUTH, None)  # so that it counts as not sent
        cookie_epik = cookies.get(ei.EPIK)
        if cookie_epik is not None and not ei.cookie_value_ok(cookie_epik):
            cookie_epik = None  # never echoed back into Set-Cookie
        received_at = time.time()
        today = str(int(received_at // ei.DAY))
        gpc = headers.get("sec-gpc") == "1"
        ctx = RequestContext(  # positional, in field order
            source,
            ip,
            headers.get("user-agent"),
            anonymous_id,
            pin_unauth,
            cookie_epik,
            query_epik(scope["query_string"]),
            received_at,
            received_at - sent_at if sent_at is not None else 0.0,  # skew
            suspect,
            trusted,
            gpc,
            gpc or source.consent.enabled,  # guarded
        )
        stored = None
        if not fresh:
            stored = self.s.store.cached_identity(anonymous_id)
            if stored is self.s.store.MISSING:
                stored = await self.s.store.identity(anonymous_id)
        # The site's server without the browser's cookie: identity memory by each event's userId.
        # (Only for the server key: a page could name any userId and lend it its hashes.)
        by_user: dict[str, StoredIdentity | None] | None = {} if trusted and fresh else None
        remember: dict[str, StoredIdentity] = {}

        events: list[EdgeEvent] = []
        rejected: list[Rejected] = []
        slice_ends = time.perf_counter() + WORK_SLICE
        for index, inc in enumerate(incoming):
            try:
                if type(inc) is not IncomingEvent:
                    inc = self.decode(cast("bytes | msgspec.Raw", inc), index, implied)
                if nul:
                    text.settle_nul(inc)
                user_id = None
                if by_user is not None:
                    user_id = str(inc.userId) if inc.userId is not None and inc.userId != "" else None
                    if user_id is not None and user_id not in by_user:
                        by_user[user_id] = await self.s.store.user_identity(user_id)
                    stored = by_user.get(user_id) if user_id is not None else None
                event, changed = build_event(inc, implied, ctx, stored)
            except EventError as exc:
                label = _label(implied, index)
                message = str(exc) if str(exc).startswith(label) else f"{label}.{exc}"
                rejected.append(Rejected(index, exc.code, message))
                continue
            except text.Unstorable as exc:
                rejected.append(Rejected(index, "unstorable_text", f"{_label(implied, index)}.{exc.field}: {exc}"))
                continue
            finally:
                if time.perf_counter() > slice_ends:  # let /healthz, the admin app and delivery in
                    await asyncio.sleep(0)
                    slice_ends = time.perf_counter() + WORK_SLICE
            events.append(event)
            if changed is not None:
                if by_user is None:
                    stored = remember[anonymous_id] = changed
                elif user_id is not None:
                    by_user[user_id] = remember[user_id] = changed

        suppressed = 0
        if self.s.store.suppressions:  # an erased person's new events: none while nobody was erased
            events, suppressed = self.unsuppressed(source, events, received_at)
            if suppressed:
                remember = {}
        if rejected:
            self.count_rejected(source, rejected)
        if not events and not suppressed:
            first = rejected[0]
            status = 413 if first.code == "event_too_large" else 400
            return HttpError(status, first.code, first.message, rejected=rejected).answer(cors)

        if events:
            await self.commit(source, events, remember, by_user is not None)
        self.s.activity.received(source.id, received_at)
        answer = encoder.encode(Accepted(True, len(events) + suppressed, rejected))
        if trusted or not events:
            # No cookies for the site's servers: an HTTP client that keeps them would send one _dfid
            # with every later call, and every customer's events would share one browser's memory.
            return 200, answer, cors
        origin = headers.get("origin")  # every browser's POST carries one; a server's does not
        if origin is not None and (kind := arrival(headers.get("sec-fetch-site"), origin, headers.get("host"))):
            self.s.activity.arrived(source.id, kind, received_at, origin, headers.get("host"))
        wanted, deleted = self.cookies(source, events, ctx, cookies, today if fresh or renewed_on != today else None)
        if wanted or deleted:
            secure = self.trust.scheme(peer, scope["scheme"], headers.get("x-forwarded-proto")) == "https"
            domain = source.cookie_domain
            cors = cors + [ei.set_cookie(name, value, secure, domain) for name, value in wanted]
            cors += [ei.delete_cookie(name, secure, domain) for name in deleted]
        return 200, answer, cors

    def unsuppressed(self, source: Source, events: list[EdgeEvent], now: float) -> tuple[list[EdgeEvent], int]:
        """The events that are no erased person's (README: Erasure); the others are dropped, and
        counted for the source page. The browser is answered as for any accepted event."""
        kept = [ev for ev in events if not self.s.store.suppressions.suppressed(ev, now)]
        dropped = len(events) - len(kept)
        if dropped:
            self.s.activity.record(source.id, "suppressed", "events of an erased person, dropped", dropped)
        return kept, dropped

    def count_rejected(self, source: Source, rejected: list[Rejected]) -> None:
        by_code: dict[str, list[Rejected]] = {}
        for r in rejected:
            by_code.setdefault(r.code, []).append(r)
        for code, group in by_code.items():
            self.s.activity.record(source.id, code, group[0].message, len(group))

    async def commit(self, source: Source, events: list[EdgeEvent], remember: dict[str, StoredIdentity],
                     by_user: bool = False) -> None:
        """Queue every deliverable event for each of the source's integrations, and save the
        identity memory the events changed (by anonymous id, or `by_user` id); durable on return."""
        integrations, disabled = self.routes(source.id)
        deliverable = [ev for ev in events if ev.type in DELIVERED_TYPES] if integrations or disabled else []
        items: list[QueueItem] = []
        offers: list[tuple[str, int, bool]] = []
        if deliverable:
            at = deliverable[0].received_at
            if integrations:
                lines = event_encoder.encode_lines(deliverable)[:-1]  # one request's events: one queue item
            for target in integrations:
                priorities = target.priorities(deliverable)
                items += queue_items(target.integration_id, lines, priorities, at)
                offers.append((target.integration_id, len(priorities), any(priorities)))
            # A disabled integration receives nothing, but what it skips is counted.
            items += [QueueItem(topic, b"", at, 0, len(deliverable), skipped=True) for topic in disabled]
        if remember:
            save = self.s.store.save_user_identity if by_user else self.s.store.save_identity
            await asyncio.gather(*(save(key, identity) for key, identity in remember.items()))
        await self.s.queue.append(items)
        for topic, count, priority in offers:
            self.s.notify(topic, count, priority)
        if self.s.hub.watched:
            self.s.hub.publish([
                DebugRecord(at=ev.received_at, source_id=source.id, event_id=ev.message_id,
                            event=ev.name or ev.type, status="queued", incoming=msgspec.Raw(event_encoder.encode(ev)),
                            message=None if integrations else "no enabled integration for this source")
                for ev in events
            ])

    @staticmethod
    def cookies(source: Source, events: list[EdgeEvent], ctx: RequestContext, sent: dict[str, str],
                renew: str | None) -> tuple[list[tuple[str, str]], list[str]]:
        """(cookies to set, cookies to delete). A browser's first response of a day (`renew`: the
        day) sets every identity cookie it may again, so that their lifetime runs from the last
        visit, with no request of its own; its other responses that day set only what is new
        (two Set-Cookie headers on every response would cost a single-event request about 3%).
        Under consent, the advertising ones only while the newest event grants advertising; an
        answer without it deletes them."""
        wanted = [(ei.DFID, f"{ctx.anonymous_id}.{renew}")] if renew else []
        newest = events[-1]
        if not source.consent.enabled or ads_allowed(newest.consent, source):
            if renew or ei.PIN_UNAUTH not in sent:
                # set for browsers only (not `trusted`), whose pin_unauth is never None
                wanted.append((ei.PIN_UNAUTH, cast("str", ctx.pin_unauth)))
            click_id = ctx.cookie_epik
            for ev in reversed(events):  # the newest click id is the one to remember
                if ev.click_id:
                    click_id = ev.click_id
                    break
            if click_id and (renew or click_id != ctx.cookie_epik):
                wanted.append((ei.EPIK, click_id))
            return wanted, []
        if newest.consent is None:  # no answer on this page: the advertising cookies are left alone
            return wanted, []
        return wanted, [name for name in ei.ADVERTISING_COOKIES if name in sent]

    # --- Starlette routes -------------------------------------------------------------------

    def served_tag(self, source_id: str | None) -> ServedTag:
        """The plain tag (legacy paths), or a source's own: its endpoint's name, whether consent is
        enforced and, for the pintrk bridge, the event mapping of its first enabled integration
        (derived from delivery/pinterest/mapping.py when first asked after a change)."""
        source = self.s.store.source(source_id) if source_id else None
        if source is None:
            return self.tag.plain
        served = self._tags.get(source.id)
        if served is None:
            enabled = [i for i in self.s.store.integrations(source.id) if i.enabled]
            config: dict = {"e": serving_of(source).endpoint}
            if enabled:
                config["m"] = tag_mapping(enabled[0].options, enabled[0].config.event_map)
            if source.pintrk_bridge:
                config["b"] = 1
            if source.consent.enabled:
                config["c"] = 1  # the tag deletes the advertising cookies when advertising is refused
            served = self._tags[source.id] = self.tag.with_config(msgspec.json.encode(config))
        return served

    async def healthz(self, request: Request) -> Response:
        return health_response(self.s.storage_problem())

    async def preflight(self, request: Request) -> Response:
        origin = request.headers.get("origin")
        if origin and not any(origin_allowed(s, origin) for s in self.s.store.sources()):
            status, body, _ = HttpError(403, "origin_not_allowed",
                                            f"origin {origin} is not allowed by any source").answer([])
            return Response(body, status, media_type="application/json")
        headers = {k.decode(): v.decode() for k, v in cors_headers(origin)}
        headers.update({"Access-Control-Allow-Methods": "POST, OPTIONS",
                        "Access-Control-Allow-Headers": "Content-Type, Authorization",
                        "Access-Control-Max-Age": "86400"})
        return Response(status_code=204, headers=headers)


class EdgeApp:
    """ASGI entry: ingestion POSTs straight to Edge.ingest, the tag and preflights by their path,
    everything else to Starlette."""

    def __init__(self, edge: Edge, fallback: Starlette) -> None:
        self.edge = edge
        self.fallback = fallback

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            method = scope["method"]
            if method == "POST":
                implied = self.edge.paths.ingest.get(scope["path"], _NOT_OURS)
                if implied is not _NOT_OURS:  # (inline: a coroutine of its own costs a request 1.5k instructions)
                    try:
                        status, body, extra = await self.edge.ingest(scope, receive, implied)
                    except ConnectionAbortedError:
                        return  # the client went away mid-body; nothing was accepted
                    except Exception as exc:
                        request_id = failure_id()
                        errors.failure(f"ingestion failed (request {request_id})", exc)
                        status, body, extra = HttpError(
                            500, "internal_error",
                            f"internal error (request {request_id}); the events were not accepted, retry").answer([])
                    await send({"type": "http.response.start", "status": status,
                                "headers": [*_JSON, (b"content-length", str(len(body)).encode()), *extra]})
                    await send({"type": "http.response.body", "body": body})
                    return
            elif method in ("GET", "HEAD"):
                source_id = self.edge.paths.tags.get(scope["path"], _NOT_OURS)
                if source_id is not _NOT_OURS:
                    await self.edge.served_tag(source_id).response(Headers(scope=scope))(scope, receive, send)
                    return
            elif method == "OPTIONS" and scope["path"] in self.edge.paths.ingest:
                await (await self.edge.preflight(Request(scope, receive)))(scope, receive, send)
                return
        await self.fallback(scope, receive, send)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def create_edge_app(services: Services) -> EdgeApp:
    edge = Edge(services)
    return EdgeApp(edge, Starlette(routes=[Route("/healthz", edge.healthz, methods=["GET"])]))
