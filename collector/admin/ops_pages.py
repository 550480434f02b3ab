"""The UI pages of running the service: Alerts and Erasure (their content lives beside their API,
in collector/admin/alerts.py and erasure.py)."""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from collector.admin import alerts, erasure
from collector.admin.session import Sessions
from collector.admin.ui import layout
from collector.services import Services


def ops_pages(services: Services, sessions: Sessions) -> list[Route]:
    def page(title: str, path: str, body, script: str):
        async def endpoint(request: Request) -> Response:
            session = await sessions.read(request)
            if session is None:
                return RedirectResponse("/login?next=" + quote(request.url.path, safe=""), 303)
            return layout(title, body(), session.csrf, path, script)
        return Route(path, endpoint, methods=["GET"])

    return [page("Alerts", "/alerts", lambda: alerts.page_body(services.settings), "alerts.js"),
            page("Erasure", "/erasure", erasure.page_body, "erasure.js")]
