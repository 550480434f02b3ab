"""The admin UI: pages rendered from templates (templating.py) over view models that the JSON API
builds too (views.py); small vanilla JS modules in static/admin/ do the actions through the
management API (session cookie + X-CSRF-Token header)."""

from __future__ import annotations

import hmac
import math
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from collector.admin import flash, views
from collector.admin.alerts import RULES
from collector.admin.api import Api
from collector.admin.auth import Throttle
from collector.admin.oauth import CALLBACK, Connect, redirect_uri
from collector.admin.peers import Peers
from collector.admin.session import Sessions
from collector.admin.templating import render, templates
from collector.services import Services
from delivery.pinterest.catalog import CONSENT_CATEGORIES, catalog
from delivery.pinterest.mapping import PROFILE_HELP
from delivery.pinterest.variants import VARIANTS

FAVICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><circle cx="16" cy="16" r="15" fill="#b3001b"/>'
           '<path d="M9 17l5 5 9-11" stroke="#fff" stroke-width="3.5" fill="none" stroke-linecap="round"/></svg>')
templates.env.globals.update(status_of=views.shown_status, categories=CONSENT_CATEGORIES)


def not_found_page(request: Request) -> Response:
    return render(request, "message.html", "Page not found", None, status=404,
                  text="There is no page at", code=request.url.path[:200],
                  links=(("/integrations", "Go to the integrations"), ("/sources", "the sources")))


def safe_next(value: str | None) -> str:
    """Where to go after logging in: a path on this server, never another site."""
    if value and value.startswith("/") and not value.startswith(("//", "/\\")) and "\\" not in value[:3]:
        return value
    return "/integrations"


Page = Callable[["Ui", Request], Awaitable[Response]]


def page(handler: Page) -> Page:
    """A page for a logged-in session; without one, the login form, which comes back here."""
    async def endpoint(self: Ui, request: Request) -> Response:
        session = await self.sessions.read(request)
        if session is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse("/login?next=" + quote(target, safe=""), 303)
        request.state.session = session
        return await handler(self, request)
    return endpoint


class Ui:
    def __init__(self, services: Services, sessions: Sessions, throttle: Throttle, peers: Peers) -> None:
        self.s = services
        self.api = Api(services)
        self.sessions = sessions
        self.throttle = throttle
        self.peers = peers

    async def show(self, request: Request, template: str, title: str, active: str, script: str | None = None,
                   status: int = 200, **context) -> Response:
        """A page for the logged-in session, with what the server left to tell it (flash.py), once."""
        session = request.state.session
        notice = await flash.take(self.s.store, session.key)
        return render(request, template, title, session.csrf, active=active, script=script, notice=notice,
                      status=status, **context)

    # --- login ---------------------------------------------------------------------------

    async def login_form(self, request: Request, error: str = "", next_path: str | None = None) -> Response:
        target = safe_next(next_path or request.query_params.get("next"))
        return render(request, "login.html", "Log in", None, next=target, error=error)

    async def login(self, request: Request) -> Response:
        client = self.peers.client(request)
        fields = await form(request)
        target = safe_next((fields.get("next") or [""])[0])
        token = (fields.get("token") or [""])[0].strip()
        if await self.s.auth.check(token):  # never throttled: others' mistakes must not lock an admin out
            response: Response = RedirectResponse(target, 303)
            session = await self.sessions.start(response, self.peers.https(request), client)
            await self.s.store.audit("login", "admin_session", session.key[:12], None, {"client": client})
            return response
        wait = self.throttle.retry_after(client)
        if wait > 0:
            response = await self.login_form(request, f"Too many failed logins from your address: wait "
                                                      f"{math.ceil(wait / 60)} minutes and try again.", target)
            response.status_code = 429
            response.headers["Retry-After"] = str(math.ceil(wait))
            return response
        self.throttle.failed(client)
        await self.s.store.audit("login_failed", "admin_session", client, None, {"client": client})
        response = await self.login_form(request, "That admin token is not valid. Check it, or issue a new one "
                                                  "with `signal-edge admin-token --rotate`.", target)
        response.status_code = 401
        return response

    async def logout(self, request: Request) -> Response:
        session = await self.sessions.read(request)
        fields = await form(request)
        if session and not hmac.compare_digest((fields.get("csrf") or [""])[0], session.csrf):
            return Response("CSRF check failed: reload the page and try again.", 403)
        response = RedirectResponse("/login", 303)
        ended = await self.sessions.end(request, response)
        if ended is not None:
            await self.s.store.audit("logout", "admin_session", ended.key[:12], None,
                                     {"client": self.peers.client(request)})
        return response

    # --- pages ---------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        return RedirectResponse("/integrations", 303)

    async def favicon(self, request: Request) -> Response:
        return Response(FAVICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})

    async def integrations_of(self, source_id: str | None = None) -> list:
        return [await self.api.integration_out(x) for x in self.s.store.integrations(source_id)]

    def redirect_uri(self, request: Request) -> str:
        return redirect_uri(self.s, request, self.peers.https(request))

    def not_found(self, request: Request, what: str, back: tuple[str, str], active: str) -> Response:
        return render(request, "message.html", f"{what} not found", request.state.session.csrf, active=active,
                      status=404, links=(back,))

    @page
    async def sources(self, request: Request) -> Response:
        sources = await self.api.sources_out(self.s.store.sources())
        counts = {x.id: len(self.s.store.integrations(x.id)) for x in sources}
        return await self.show(request, "sources.html", "Sources", "/sources", "sources.js", sources=sources,
                                integrations=counts)

    @page
    async def source(self, request: Request) -> Response:
        found = self.s.store.source(request.path_params["id"])
        if found is None:
            return self.not_found(request, "Source", ("/sources", "Back to the sources"), "/sources")
        source = await self.api.one_source_out(found)
        return await self.show(
            request, "source.html", source.name, "/sources", "source-page.js", page={"source": source.id},
            source=source, integrations=await self.integrations_of(source.id), track_example=views.TRACK_EXAMPLE,
            identify_example=views.IDENTIFY_EXAMPLE, gpc_choices=views.GPC_CHOICES, ldp_choices=views.LDP_CHOICES)

    @page
    async def integrations(self, request: Request) -> Response:
        integrations = await self.integrations_of()
        sources = {x.id: x for x in self.s.store.sources()}
        deleted = [await views.deleted_integration(self.s.store, self.s.queue, topic, n)
                   for topic, n in sorted((await self.s.queue.dead_letter_topics()).items())
                   if self.s.store.integration(topic) is None]
        return await self.show(request, "integrations.html", "Integrations", "/integrations",
                               integrations=integrations, sources=sources, deleted=deleted,
                               variants={k: v.label for k, v in VARIANTS.items()})

    @page
    async def new_integration(self, request: Request) -> Response:
        sources = await self.api.sources_out(self.s.store.sources())
        found = catalog()
        return await self.show(
            request, "integration_new.html", "Add Integration", "/integrations",
            "integration-form.js" if sources else None, sources=sources, catalog=found,
            fields={f.key: f for f in found.credentials}, token_fields=views.TOKEN_FIELDS,
            app_fields=views.APP_FIELDS, held_refresh_field=views.HELD_REFRESH_FIELD,
            redirect_uri=self.redirect_uri(request))

    @page
    async def integration(self, request: Request) -> Response:
        found = self.s.store.integration(request.path_params["id"])
        if found is None:
            return await self.deleted_integration(request, request.path_params["id"])
        integ = await self.api.integration_out(found)
        source = self.s.store.source(integ.source_id)
        return await self.show(
            request, "integration.html", integ.name, "/integrations", "integration-page.js",
            page={"integration": integ.id}, integ=integ, health=views.health_view(integ),
            source=await self.api.one_source_out(source) if source else None, counts=views.COUNTS,
            profiles=[(k, views.PROFILE_LABELS.get(k, k)) for k in PROFILE_HELP],
            variant_choices=[(k, v.label) for k, v in VARIANTS.items()], preview_example=views.PREVIEW_EXAMPLE,
            redirect_uri=self.redirect_uri(request))

    async def deleted_integration(self, request: Request, topic: str) -> Response:
        """What is left of a deleted integration: its dead letters, to replay elsewhere or export."""
        held = (await self.s.queue.dead_letter_topics()).get(topic)
        if held is None:
            return self.not_found(request, "Integration", ("/integrations", "Back to the integrations"),
                                  "/integrations")
        gone = await views.deleted_integration(self.s.store, self.s.queue, topic, held)
        return await self.show(request, "integration_deleted.html", gone.title, "/integrations",
                               "deleted-integration.js", page={"integration": topic, "source": gone.source_id or ""},
                               gone=gone, targets=await self.integrations_of())

    @page
    async def debugger(self, request: Request) -> Response:
        q = request.query_params
        return await self.show(
            request, "debugger.html", "Debugger", "/debugger", "debugger.js",
            sources=await self.api.sources_out(self.s.store.sources()), integrations=await self.integrations_of(),
            statuses=views.DEBUGGER_STATUSES,
            chosen={k: q.get(k) for k in ("source_id", "integration_id", "status")})

    @page
    async def alerts(self, request: Request) -> Response:
        return await self.show(request, "alerts.html", "Alerts", "/alerts", "alerts.js", rules=RULES,
                               interval=self.s.settings.alert_interval)

    @page
    async def erasure(self, request: Request) -> Response:
        return await self.show(request, "erasure.html", "Erasure", "/erasure", "erasure.js")


MAX_FORM = 8 * 1024


async def form(request: Request) -> dict[str, list[str]]:
    """A small url-encoded form (login, logout); anything past MAX_FORM is not read."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            break
    return parse_qs(body[:MAX_FORM].decode("utf-8", "replace"))


def ui_routes(services: Services, sessions: Sessions, throttle: Throttle, peers: Peers) -> list:
    ui = Ui(services, sessions, throttle, peers)
    connect = Connect(services, sessions, peers)
    return [
        Route("/", ui.home, methods=["GET"]),
        Route("/favicon.ico", ui.favicon, methods=["GET"]),
        Route("/login", ui.login_form, methods=["GET"]),
        Route("/login", ui.login, methods=["POST"]),
        Route("/logout", ui.logout, methods=["POST"]),
        Route("/sources", ui.sources, methods=["GET"]),
        Route("/sources/{id}", ui.source, methods=["GET"]),
        Route("/integrations", ui.integrations, methods=["GET"]),
        Route("/integrations/new", ui.new_integration, methods=["GET"]),
        Route("/integrations/{id}", ui.integration, methods=["GET"]),
        Route("/debugger", ui.debugger, methods=["GET"]),
        Route("/alerts", ui.alerts, methods=["GET"]),
        Route("/erasure", ui.erasure, methods=["GET"]),
        Route("/oauth/pinterest/start", connect.start, methods=["GET"]),
        Route(CALLBACK, connect.callback, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=services.settings.static_dir), name="static"),
    ]
