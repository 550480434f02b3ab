"""The edge app (port 8080): serves the tag and takes events in (design sections 3 and 4).

The five ingestion routes are plain ASGI, ahead of Starlette: they are the hot path, and
Starlette's middleware stack, router scan and Request/Response objects cost as much per
request as our own work does. Everything else (the tag, health, preflight) is Starlette.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from itertools import groupby
from urllib.parse import urlsplit

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collector.edge import identity as ei
from collector.edge.ids import uuid4
from collector.edge.limits import ClientBuckets, client_key
from collector.edge.ingest import EventError, RequestContext, build_event, unix_seconds, validation_message
from collector.edge.split import split_batch
from collector.edge.tag import TagFile
from collector.edge.wire import (
    Accepted,
    BatchBody,
    ErrorBody,
    ErrorDetail,
    IncomingEvent,
    Rejected,
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
from delivery.queue import QueueItem
from delivery.ratelimit import TokenBucket
from delivery.store import DebugRecord, StorageError

log = logging.getLogger("signal_edge.edge")
errors = ErrorLog(log)
STORAGE_RETRY_AFTER = 5  # seconds a client waits after a 503 for a storage fault
MAX_BODY = 512 * 1024
MAX_EVENT = 32 * 1024
MAX_EVENTS = 500  # events per request, as Datafly's gateway allows
INGEST_ROUTES = {"/v1/batch": None, "/v1/t": "track", "/v1/p": "page", "/v1/i": "identify", "/v1/g": "group"}
_JSON = [(b"content-type", b"application/json")]

Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]  # status, body, extra headers
# The request headers ingestion reads; the others are never decoded.
_READ_HEADERS = {name.encode(): name for name in (
    "content-length", "origin", "authorization", "cookie", "user-agent", "x-forwarded-for", "x-forwarded-proto")}


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
        return found


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
        # source -> its enabled integrations, and the ids of its disabled ones
        self._routes: dict[str, tuple[list[Target], list[str]]] = {}
        services.store.subscribe(lambda kind, object_id: self._routes.clear())

    def routes(self, source_id: str) -> tuple[list[Target], list[str]]:
        found = self._routes.get(source_id)
        if found is None:
            integrations = self.s.store.integrations(source_id)
            found = self._routes[source_id] = ([Target(i.id, i.options) for i in integrations if i.enabled],
                                               [i.id for i in integrations if not i.enabled])
        return found

    # --- checks ---------------------------------------------------------------------------

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
            raise HttpError(401, "unknown_pipeline_key", "unknown or revoked pipeline key; copy the current one from the admin UI")
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
        if bucket is None or bucket.configured_rate != source.rate_limit_per_second or bucket.burst != source.rate_limit_burst:
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
        headers = read_headers(scope["headers"])
        origin = headers.get("origin")
        cors: list[tuple[bytes, bytes]] = []
        source = key = None
        try:
            body = await self.read_body(receive, headers)
            key, events, sent_at, reset = self.envelope(body, implied, headers)
            source, trusted = self.source_for(key)
            if origin and not origin_allowed(source, origin):
                raise HttpError(403, "origin_not_allowed", f"origin {origin} is not allowed for this source")
            cors = cors_headers(origin)
            if len(events) > MAX_EVENTS:
                raise HttpError(413, "too_many_events",
                                f"batch: {len(events)} events; send at most {MAX_EVENTS} per request")
            self.check_backpressure()
            client = scope.get("client")
            peer = client[0] if client else None
            ip = self.trust.client_ip(peer, headers.get("x-forwarded-for"))
            self.check_rate(source, len(events), None if trusted else ip)
            suspect = b"@" in body or b"+" in body  # an address or an international number may be in it
            return await self.accept(scope, headers, source, events, implied, sent_at, reset, cors, peer, ip,
                                     suspect, trusted)
        except HttpError as exc:
            self.refused(source, key, headers, exc.code, origin if exc.code == "origin_not_allowed" else exc.message)
            return exc.answer(cors)
        except StorageError as exc:
            log.warning("ingestion refused with 503: %s", exc)
            error = HttpError(503, "storage_unavailable", f"{exc}; nothing was accepted, retry shortly",
                              {"Retry-After": str(STORAGE_RETRY_AFTER)})
            self.refused(source, key, headers, error.code, error.message)
            return error.answer(cors)

    def refused(self, source: Source | None, key: str | None, headers: dict[str, str], reason: str, detail: str) -> None:
        """Count a refused request for the source page and /metrics. Refused before its body named a
        source (too large, not JSON), it counts for the source of its Authorization header, if any."""
        if reason in ("unknown_pipeline_key", "unknown_server_key"):
            self.s.activity.unknown_key(key or "", reason)
            return
        if source is None and (bearer := _bearer(headers)):
            source = self.s.store.source_by_key(bearer)
        self.s.activity.record(source.id if source else None, reason, detail)

    def envelope(self, body: bytes, implied: str | None, headers: dict[str, str]):
        """(pipeline key, events, batch sentAt, reset) from the body. The events come decoded
        when the whole body decoded in one call (the usual case), else as raw JSON to decode one
        by one, so that one bad or oversized event is rejected alone."""
        try:
            if implied is not None:
                envelope = single_decoder.decode(body)
                events = [body]
            else:
                envelope = None
                if len(body) <= MAX_EVENT:  # no event in it can be too large
                    try:
                        envelope = decoded_batch_decoder.decode(body)
                    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
                        pass  # decoded again below, event by event, to say which one is wrong
                if envelope is None:
                    envelope, events = self.decode_batch(body)
                else:
                    events = envelope.batch
                if not events:
                    raise HttpError(400, "empty_batch", "batch: empty; send at least one event")
        except msgspec.ValidationError as exc:
            raise HttpError(400, "invalid_body", str(validation_message(exc, "body"))) from None
        except msgspec.DecodeError as exc:
            raise HttpError(400, "malformed_json", f"body is not valid JSON: {exc}") from None
        except RecursionError:
            raise HttpError(400, "too_deep", f"body: nested deeper than {MAX_DEPTH} levels; send flatter data") from None
        sent_at = unix_seconds(envelope.sentAt) if implied is None and envelope.sentAt else None
        return envelope.pipeline_key or _bearer(headers), events, sent_at, envelope.reset

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
                     incoming: list[IncomingEvent] | list[bytes] | list[msgspec.Raw], implied: str | None,
                     sent_at: float | None, reset: bool, cors: list[tuple[bytes, bytes]], peer: str | None,
                     ip: str | None, suspect: bool, trusted: bool) -> Answer:
        cookies = ei.parse_cookies(headers.get("cookie", ""))
        new_cookies: dict[str, str] = {}
        anonymous_id = cookies.get(ei.DFID)
        if reset or not anonymous_id or not ei.cookie_value_ok(anonymous_id):
            anonymous_id = new_cookies[ei.DFID] = uuid4()
        pin_unauth = cookies.get(ei.PIN_UNAUTH)
        if not pin_unauth or not ei.cookie_value_ok(pin_unauth):
            pin_unauth = new_cookies[ei.PIN_UNAUTH] = uuid4()
        received_at = time.time()
        ctx = RequestContext(  # positional, in field order
            source,
            ip,
            headers.get("user-agent"),
            anonymous_id,
            pin_unauth,
            cookies.get(ei.EPIK),  # cookie_epik
            query_epik(scope["query_string"]),
            received_at,
            received_at - sent_at if sent_at is not None else 0.0,  # skew
            suspect,
            trusted,
        )
        stored = None
        if ei.DFID not in new_cookies:
            stored = self.s.store.cached_identity(anonymous_id)
            if stored is self.s.store.MISSING:
                stored = await self.s.store.identity(anonymous_id)
        remember = None

        events: list[EdgeEvent] = []
        rejected: list[Rejected] = []
        for index, inc in enumerate(incoming):
            try:
                if type(inc) is not IncomingEvent:
                    inc = self.decode(inc, index, implied)
                event, changed = build_event(inc, implied, ctx, stored)
            except EventError as exc:
                label = _label(implied, index)
                message = str(exc) if str(exc).startswith(label) else f"{label}.{exc}"
                rejected.append(Rejected(index, exc.code, message))
                continue
            events.append(event)
            if changed is not None:
                stored = remember = changed

        if rejected:
            self.count_rejected(source, rejected)
        if not events:
            first = rejected[0]
            status = 413 if first.code == "event_too_large" else 400
            return HttpError(status, first.code, first.message, rejected=rejected).answer(cors)

        await self.commit(source, events, anonymous_id, remember)
        self.s.activity.received(source.id, received_at)
        for ev in reversed(events):  # the newest click id is the one to remember
            if ev.click_id:
                if ev.click_id != ctx.cookie_epik:
                    new_cookies[ei.EPIK] = ev.click_id
                break
        extra = cors + self.cookies(peer, scope["scheme"], headers, source, new_cookies)
        return 200, encoder.encode(Accepted(True, len(events), rejected)), extra

    def count_rejected(self, source: Source, rejected: list[Rejected]) -> None:
        by_code: dict[str, list[Rejected]] = {}
        for r in rejected:
            by_code.setdefault(r.code, []).append(r)
        for code, group in by_code.items():
            self.s.activity.record(source.id, code, group[0].message, len(group))

    async def commit(self, source: Source, events: list[EdgeEvent], anonymous_id: str, remember) -> None:
        """Queue every deliverable event for each of the source's integrations; durable on return."""
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
        if remember is not None:
            await self.s.store.save_identity(anonymous_id, remember)
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

    def cookies(self, peer: str | None, scheme: str, headers: dict[str, str], source: Source,
                values: dict[str, str]) -> list[tuple[bytes, bytes]]:
        if not values:
            return []
        secure = self.trust.scheme(peer, scheme, headers.get("x-forwarded-proto")) == "https"
        out = []
        for name, value in values.items():
            max_age, http_only = ei.COOKIE_RULES[name]
            cookie = ei.cookie_header(name, value, max_age=max_age, secure=secure, http_only=http_only,
                                      domain=source.cookie_domain)
            out.append((b"set-cookie", cookie.encode("latin-1")))
        return out

    # --- Starlette routes -------------------------------------------------------------------

    async def serve_tag(self, request: Request) -> Response:
        return self.tag.response(request.headers)

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
    """ASGI entry: ingestion POSTs straight to Edge.ingest, everything else to Starlette."""

    def __init__(self, edge: Edge, fallback: Starlette) -> None:
        self.edge = edge
        self.fallback = fallback

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in INGEST_ROUTES:
            try:
                status, body, extra = await self.edge.ingest(scope, receive, INGEST_ROUTES[scope["path"]])
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
        await self.fallback(scope, receive, send)


def create_edge_app(services: Services) -> EdgeApp:
    edge = Edge(services)
    routes = [
        Route("/d.js", edge.serve_tag, methods=["GET", "HEAD"]),
        Route("/datafly.js", edge.serve_tag, methods=["GET", "HEAD"]),
        Route("/healthz", edge.healthz, methods=["GET"]),
        *(Route(path, edge.preflight, methods=["OPTIONS"]) for path in INGEST_ROUTES),
    ]
    return EdgeApp(edge, Starlette(routes=routes))
