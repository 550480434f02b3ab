"""The admin app (port 8084): management API, health, metrics, OpenAPI, and the UI."""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from collector.admin import metrics, openapi
from collector.admin.api import ROUTES, Api, json_response
from collector.admin.errors import ApiError, error_response
from collector.admin.session import Sessions
from collector.admin.ui import ui_routes
from collector.services import Services

log = logging.getLogger("signal_edge.admin")
PREFIX = "/v1/admin"
UNSAFE_METHODS = {"POST", "PATCH", "PUT", "DELETE"}


class Guard:
    """Bearer token (scripts) or the UI's signed session cookie plus CSRF header (browsers)."""

    def __init__(self, services: Services, sessions: Sessions) -> None:
        self.services = services
        self.sessions = sessions

    async def check(self, request: Request) -> None:
        header = request.headers.get("authorization")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise ApiError(401, "unauthorized", "use Authorization: Bearer <admin token>",
                               headers={"WWW-Authenticate": "Bearer"})
            if not await self.services.auth.check(token.strip()):
                raise ApiError(401, "unauthorized",
                               "admin token not recognised; if it was rotated, use the new one "
                               "(`signal-edge admin-token --rotate` issues one)", headers={"WWW-Authenticate": "Bearer"})
            return
        session = self.sessions.read(request, self.services.auth.digest)
        if session is None:
            raise ApiError(401, "unauthorized", "missing admin token: send Authorization: Bearer <admin token>",
                           headers={"WWW-Authenticate": "Bearer"})
        if request.method in UNSAFE_METHODS and not self.sessions.csrf_ok(request, session):
            raise ApiError(403, "csrf_failed", "missing or wrong X-CSRF-Token header; reload the page")

    def wrap(self, handler):
        async def endpoint(request: Request) -> Response:
            try:
                await self.check(request)
                return await handler(request)
            except ApiError as exc:
                return error_response(exc)

        endpoint.__name__ = handler.__name__
        return endpoint


def create_admin_app(services: Services) -> Starlette:
    api = Api(services)
    sessions = Sessions(services.auth.secret_key)
    guard = Guard(services, sessions)
    document = openapi.build()

    async def healthz(request: Request) -> Response:
        return json_response({"ok": True, "queue_depth": services.queue.depth()})

    async def metrics_endpoint(request: Request) -> Response:
        return PlainTextResponse(await metrics.render(services), media_type="text/plain; version=0.0.4")

    async def openapi_endpoint(request: Request) -> Response:
        return json_response(document)

    routes = [Route(PREFIX + r.path, guard.wrap(getattr(api, r.handler)), methods=[r.method]) for r in ROUTES]
    routes += [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route(PREFIX + "/openapi.json", openapi_endpoint, methods=["GET"]),
        *ui_routes(services, sessions),
    ]

    async def http_error(request: Request, exc: HTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(ApiError(exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}"))

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("admin request failed: %s %s", request.method, request.url.path)
        return error_response(ApiError(500, "internal_error", "internal error; the server log has the details"))

    return Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error})
