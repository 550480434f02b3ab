"""The admin app (port 8084): management API, health, metrics, OpenAPI, and the UI."""

from __future__ import annotations

import logging
import math

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from collector.admin import alerts, erasure, metrics, openapi
from collector.admin.api import ROUTES, Api, json_response
from collector.admin.auth import Throttle
from collector.admin.errors import ApiError, error_response
from collector.admin.peers import Peers
from collector.admin.session import Sessions
from collector.admin.ui import not_found_page, ui_routes
from collector.health import health_response
from collector.services import Services
from delivery.errorlog import ErrorLog, failure_id
from delivery.store import StorageError

log = logging.getLogger("signal_edge.admin")
errors = ErrorLog(log)
PREFIX = "/v1/admin"
UNSAFE_METHODS = {"POST", "PATCH", "PUT", "DELETE"}


class Guard:
    """Bearer token (scripts) or the UI's session cookie plus CSRF header (browsers)."""

    def __init__(self, services: Services, sessions: Sessions, throttle: Throttle, peers: Peers) -> None:
        self.services = services
        self.sessions = sessions
        self.throttle = throttle
        self.peers = peers

    async def check(self, request: Request) -> None:
        header = request.headers.get("authorization")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise ApiError(401, "unauthorized", "use Authorization: Bearer <admin token>",
                               headers={"WWW-Authenticate": "Bearer"})
            if await self.services.auth.check(token.strip()):
                return  # the right token is never throttled: others' mistakes must not lock an admin out
            client = self.peers.client(request)
            wait = self.throttle.retry_after(client)
            if wait > 0:
                raise ApiError(429, "too_many_failures", "too many wrong admin tokens from this address; "
                               f"try again in {math.ceil(wait)}s", headers={"Retry-After": str(math.ceil(wait))})
            self.throttle.failed(client)
            raise ApiError(401, "unauthorized",
                           "admin token not recognised; if it was rotated, use the new one "
                           "(`signal-edge admin-token --rotate` issues one)", headers={"WWW-Authenticate": "Bearer"})
        session = await self.sessions.read(request)
        if session is None:
            raise ApiError(401, "unauthorized", "missing admin token: send Authorization: Bearer <admin token>",
                           headers={"WWW-Authenticate": "Bearer"})
        if request.method in UNSAFE_METHODS and not self.sessions.csrf_ok(request, session):
            raise ApiError(403, "csrf_failed", "missing or wrong X-CSRF-Token header; reload the page")
        request.state.session = session  # a handler may leave the page a notice (flash.py)

    def wrap(self, handler):
        async def endpoint(request: Request) -> Response:
            try:
                await self.check(request)
                return await handler(request)
            except ApiError as exc:
                return error_response(exc)

        endpoint.__name__ = handler.__name__
        return endpoint


def wants_html(request: Request) -> bool:
    """A person's browser (a mistyped address in the UI), not a script."""
    return request.method in ("GET", "HEAD") and "text/html" in request.headers.get("accept", "")


LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def host_of(header: str) -> str:
    """The host of a Host header, without its port ("[::1]:8084" -> "::1")."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostGuard:
    """Answers only requests addressed to a name it is configured for: a page on another site
    that rebinds its own name to 127.0.0.1 (DNS rebinding) must not reach the admin API."""

    def __init__(self, app, allowed: set[str]) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket") and scope["path"] != "/healthz":
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            if host_of(host) not in self.allowed:
                shown = host[:100] or "(none)"
                response = error_response(ApiError(
                    421, "host_not_allowed", f"this admin server does not answer to the host name {shown}; "
                    "reach it as localhost, or add the name to SIGNAL_ADMIN_HOSTS"))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def allowed_hosts(settings) -> set[str]:
    hosts = set(LOCAL_HOSTS) | {h.lower() for h in settings.admin_hosts}
    if settings.admin_host not in ("0.0.0.0", "::", ""):
        hosts.add(settings.admin_host.lower())
    return hosts


def create_admin_app(services: Services) -> HostGuard:
    api = Api(services)
    sessions = Sessions(services.store, services.auth.secret_key)
    throttle = Throttle()
    peers = Peers(services.settings)
    guard = Guard(services, sessions, throttle, peers)
    handlers = [(api, ROUTES), (alerts.AlertsApi(services), alerts.ROUTES),
                (erasure.ErasureApi(services), erasure.ROUTES)]
    document = openapi.build([route for _, table in handlers for route in table])

    async def healthz(request: Request) -> Response:
        return health_response(services.storage_problem(), services.queue.depth())

    async def metrics_endpoint(request: Request) -> Response:
        return PlainTextResponse(await metrics.render(services), media_type="text/plain; version=0.0.4")

    async def openapi_endpoint(request: Request) -> Response:
        return json_response(document)

    routes = [Route(PREFIX + r.path, guard.wrap(getattr(handler, r.handler)), methods=[r.method])
              for handler, table in handlers for r in table]
    routes += [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route(PREFIX + "/openapi.json", openapi_endpoint, methods=["GET"]),
        *ui_routes(services, sessions, throttle, peers),
    ]

    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404 and not request.url.path.startswith(PREFIX + "/") and wants_html(request):
            return not_found_page(request)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(ApiError(exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}"))

    async def server_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, StorageError):
            log.warning("admin request %s %s: %s", request.method, request.url.path, exc)
            return error_response(ApiError(503, "storage_unavailable", f"{exc}; try again shortly",
                                           headers={"Retry-After": "5"}))
        request_id = failure_id()
        errors.failure(f"admin request {request.method} {request.url.path} failed (request {request_id})", exc)
        return error_response(ApiError(500, "internal_error",
                                       f"internal error (request {request_id}); the server log has the details"))

    # Starlette types every handler as taking any Exception; it calls http_error with HTTPExceptions only.
    on_error = {HTTPException: http_error, Exception: server_error}
    app = Starlette(routes=routes, exception_handlers=on_error)  # type: ignore[arg-type]
    return HostGuard(app, allowed_hosts(services.settings))
