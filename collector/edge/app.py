"""The edge app (port 8080): serves the tag and takes events in (design sections 3 and 4)."""

from __future__ import annotations

import math
import time
import uuid
from urllib.parse import urlsplit

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collector.edge import identity as ei
from collector.edge.ingest import Built, EventError, RequestContext, build_event, unix_seconds, validation_message
from collector.edge.tag import TagFile
from collector.edge.wire import (
    Accepted,
    ErrorBody,
    ErrorDetail,
    Rejected,
    batch_decoder,
    encoder,
    event_decoder,
    single_decoder,
)
from collector.services import Services
from delivery.config import Source
from delivery.pinterest.mapping import DELIVERED_TYPES, is_priority
from delivery.queue import QueueItem
from delivery.ratelimit import TokenBucket
from delivery.store import DebugRecord

MAX_BODY = 512 * 1024
MAX_EVENT = 32 * 1024
JSON = "application/json"


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 rejected: list[Rejected] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.rejected = rejected or []


def error_response(exc: HttpError, cors: dict[str, str] | None = None) -> Response:
    body = encoder.encode(ErrorBody(ErrorDetail(exc.code, exc.message), exc.rejected))
    return Response(body, exc.status, {**exc.headers, **(cors or {})}, media_type=JSON)


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


class Edge:
    def __init__(self, services: Services) -> None:
        self.s = services
        self.trust = ei.ProxyTrust(services.settings.trusted_networks())
        self.tag = TagFile(services.settings.static_dir)
        self.buckets: dict[str, TokenBucket] = {}

    # --- helpers ----------------------------------------------------------------------

    async def read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_BODY:
            raise HttpError(413, "body_too_large", f"request body is over {MAX_BODY // 1024} KB; send smaller batches")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY:
                raise HttpError(413, "body_too_large", f"request body is over {MAX_BODY // 1024} KB; send smaller batches")
            chunks.append(chunk)
        return b"".join(chunks)

    def cors_headers(self, origin: str | None) -> dict[str, str]:
        if not origin:
            return {}
        return {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true", "Vary": "Origin"}

    def source_for(self, key: str | None) -> Source:
        if not key:
            raise HttpError(401, "missing_pipeline_key",
                            "no pipeline key: send pipeline_key in the body or Authorization: Bearer dk_...")
        source = self.s.store.source_by_key(key)
        if source is None:
            raise HttpError(401, "unknown_pipeline_key", "unknown or revoked pipeline key; copy the current one from the admin UI")
        return source

    def check_rate(self, source: Source, events: int) -> None:
        bucket = self.buckets.get(source.id)
        if bucket is None or bucket.configured_rate != source.rate_limit_per_second or bucket.burst != source.rate_limit_burst:
            bucket = self.buckets[source.id] = TokenBucket(source.rate_limit_per_second, source.rate_limit_burst)
        wait = bucket.try_take(events)
        if wait > 0:
            raise HttpError(429, "rate_limited",
                            f"over this source's limit of {source.rate_limit_per_second:g} events/s; retry later",
                            {"Retry-After": str(max(1, math.ceil(wait)))})

    def check_backpressure(self) -> None:
        if self.s.queue.depth() >= self.s.settings.queue_max:
            raise HttpError(503, "queue_full", "the delivery queue is full; events are not dropped, retry shortly",
                            {"Retry-After": "5"})

    # --- endpoints ----------------------------------------------------------------------

    async def serve_tag(self, request: Request) -> Response:
        return self.tag.response(request.headers)

    async def healthz(self, request: Request) -> Response:
        return Response(b'{"ok":true}', media_type=JSON)

    async def preflight(self, request: Request) -> Response:
        origin = request.headers.get("origin")
        if origin and not any(origin_allowed(s, origin) for s in self.s.store.sources()):
            return error_response(HttpError(403, "origin_not_allowed", f"origin {origin} is not allowed by any source"))
        headers = {
            **self.cors_headers(origin),
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type, Authorization",
            "Access-Control-Max-Age": "86400",
        }
        return Response(status_code=204, headers=headers)

    async def batch(self, request: Request) -> Response:
        return await self.ingest(request, None)

    async def track(self, request: Request) -> Response:
        return await self.ingest(request, "track")

    async def page(self, request: Request) -> Response:
        return await self.ingest(request, "page")

    async def identify(self, request: Request) -> Response:
        return await self.ingest(request, "identify")

    async def group(self, request: Request) -> Response:
        return await self.ingest(request, "group")

    async def ingest(self, request: Request, implied: str | None) -> Response:
        origin = request.headers.get("origin")
        cors: dict[str, str] = {}
        try:
            body = await self.read_body(request)
            key, raws, sent_at, reset = self.envelope(body, implied, request)
            source = self.source_for(key)
            if origin and not origin_allowed(source, origin):
                raise HttpError(403, "origin_not_allowed", f"origin {origin} is not allowed for this source")
            cors = self.cors_headers(origin)
            self.check_backpressure()
            self.check_rate(source, len(raws))
            return await self.accept(request, source, raws, implied, sent_at, reset, cors)
        except HttpError as exc:
            return error_response(exc, cors)

    def envelope(self, body: bytes, implied: str | None, request: Request):
        """(pipeline key, raw events, batch sentAt, reset) from the body."""
        bearer = request.headers.get("authorization", "")
        header_key = bearer[7:].strip() if bearer[:7].lower() == "bearer " else None
        try:
            if implied is None:
                envelope = batch_decoder.decode(body)
                raws = [bytes(r) for r in envelope.batch]
                sent_at = unix_seconds(envelope.sentAt) if envelope.sentAt else None
            else:
                envelope = single_decoder.decode(body)
                raws, sent_at = [body], None
        except msgspec.ValidationError as exc:
            raise HttpError(400, "invalid_body", str(validation_message(exc, "body"))) from None
        except msgspec.DecodeError as exc:
            raise HttpError(400, "malformed_json", f"body is not valid JSON: {exc}") from None
        if implied is None and not raws:
            raise HttpError(400, "empty_batch", "batch: empty; send at least one event")
        return envelope.pipeline_key or header_key, raws, sent_at, envelope.reset

    async def accept(self, request: Request, source: Source, raws: list[bytes], implied: str | None,
                     sent_at: float | None, reset: bool, cors: dict[str, str]) -> Response:
        cookies = request.cookies
        new_cookies: dict[str, str] = {}
        anonymous_id = cookies.get(ei.DFID)
        if reset or not anonymous_id or not ei.cookie_value_ok(anonymous_id):
            anonymous_id = new_cookies[ei.DFID] = str(uuid.uuid4())
        pin_unauth = cookies.get(ei.PIN_UNAUTH)
        if not pin_unauth or not ei.cookie_value_ok(pin_unauth):
            pin_unauth = new_cookies[ei.PIN_UNAUTH] = str(uuid.uuid4())
        headers = request.headers
        peer = request.client.host if request.client else None
        ctx = RequestContext(
            source=source,
            ip=self.trust.client_ip(peer, headers.get("x-forwarded-for")),
            user_agent=headers.get("user-agent"),
            anonymous_id=anonymous_id,
            pin_unauth=pin_unauth,
            cookie_epik=cookies.get(ei.EPIK),
            query_epik=ei.epik_from_query(request.url.query),
            received_at=time.time(),
            sent_at=sent_at,
        )
        stored = None if ei.DFID in new_cookies else await self.s.store.identity(anonymous_id)
        remember = None

        built: list[Built] = []
        rejected: list[Rejected] = []
        prefix = "batch" if implied is None else "body"
        for index, raw in enumerate(raws):
            label = f"{prefix}[{index}]" if implied is None else prefix
            if len(raw) > MAX_EVENT:
                rejected.append(Rejected(index, "event_too_large", f"{label}: event is over {MAX_EVENT // 1024} KB"))
                continue
            try:
                try:
                    incoming = event_decoder.decode(raw)
                except msgspec.ValidationError as exc:
                    raise validation_message(exc, label) from None
                except msgspec.DecodeError as exc:
                    raise EventError(label, f"not valid JSON: {exc}") from None
                result = build_event(incoming, implied, ctx, stored)
            except EventError as exc:
                message = str(exc) if str(exc).startswith(label) else f"{label}.{exc}"
                rejected.append(Rejected(index, exc.code, message))
                continue
            built.append(result)
            if result.remember is not None:
                stored = remember = result.remember

        if not built:
            first = rejected[0]
            status = 413 if first.code == "event_too_large" else 400
            return error_response(HttpError(status, first.code, first.message, rejected=rejected), cors)

        await self.commit(source, built, anonymous_id, remember)
        epik = next((b.event.click_id for b in reversed(built) if b.event.click_id), None)
        if epik and epik != ctx.cookie_epik:
            new_cookies[ei.EPIK] = epik
        response = Response(encoder.encode(Accepted(True, len(built), rejected)), 200, cors, media_type=JSON)
        self.set_cookies(response, request, source, new_cookies)
        return response

    async def commit(self, source: Source, built: list[Built], anonymous_id: str, remember) -> None:
        """Queue every deliverable event for each of the source's integrations; durable on return."""
        integrations = [i for i in self.s.store.integrations(source.id) if i.enabled]
        items: list[QueueItem] = []
        for b in built:
            ev = b.event
            if ev.type not in DELIVERED_TYPES or not integrations:
                continue
            payload = msgspec.json.encode(ev)
            for integ in integrations:
                priority = 1 if is_priority(ev, integ.options) else 0
                items.append(QueueItem(integ.id, payload, ev.received_at, priority))
        if remember is not None:
            await self.s.store.save_identity(anonymous_id, remember)
        await self.s.queue.append(items)
        for topic in {i.topic for i in items}:
            self.s.notify(topic)
        if self.s.hub.watched:
            self.s.hub.publish([
                DebugRecord(at=b.event.received_at, source_id=source.id, event_id=b.event.message_id,
                            event=b.event.name or b.event.type, status="queued",
                            incoming=msgspec.Raw(msgspec.json.encode(b.event)),
                            message=None if integrations else "no enabled integration for this source")
                for b in built
            ])

    def set_cookies(self, response: Response, request: Request, source: Source, values: dict[str, str]) -> None:
        if not values:
            return
        peer = request.client.host if request.client else None
        scheme = self.trust.scheme(peer, request.url.scheme, request.headers.get("x-forwarded-proto"))
        for name, value in values.items():
            max_age, http_only = ei.COOKIE_RULES[name]
            response.raw_headers.append((
                b"set-cookie",
                ei.cookie_header(name, value, max_age=max_age, secure=scheme == "https", http_only=http_only,
                                 domain=source.cookie_domain).encode("latin-1"),
            ))


def create_edge_app(services: Services) -> Starlette:
    edge = Edge(services)
    routes = [
        Route("/d.js", edge.serve_tag, methods=["GET", "HEAD"]),
        Route("/datafly.js", edge.serve_tag, methods=["GET", "HEAD"]),
        Route("/healthz", edge.healthz, methods=["GET"]),
    ]
    for path, handler in (("/v1/batch", edge.batch), ("/v1/t", edge.track), ("/v1/p", edge.page),
                          ("/v1/i", edge.identify), ("/v1/g", edge.group)):
        routes.append(Route(path, handler, methods=["POST"]))
        routes.append(Route(path, edge.preflight, methods=["OPTIONS"]))
    app = Starlette(routes=routes)
    app.state.edge = edge
    return app
