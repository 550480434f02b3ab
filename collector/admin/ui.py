"""The admin UI: server-rendered pages; small vanilla JS modules in static/admin/ do the
actions through the management API (session cookie + X-CSRF-Token header)."""

from __future__ import annotations

import hmac
import html
import math
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from collector.admin.api import iso, snippet
from collector.admin.auth import Throttle
from collector.admin.oauth import CALLBACK, Connect, redirect_uri
from collector.admin.session import Sessions
from collector.services import Services
from delivery.pinterest.catalog import TROUBLESHOOTING
from delivery.pinterest.variants import VARIANTS
from delivery.secrets import mask

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
NAV = (("/integrations", "Integrations"), ("/sources", "Sources"), ("/debugger", "Debugger"))
e = html.escape


def layout(title: str, body: str, csrf: str | None, active: str = "", script: str | None = None) -> HTMLResponse:
    nav = ""
    if csrf is not None:
        links = "".join(
            f'<a href="{href}"{" aria-current=page" if href == active else ""}>{label}</a>' for href, label in NAV
        )
        nav = (f'<nav aria-label="Main">{links}<form method="post" action="/logout" class="logout">'
               f'<input type="hidden" name="csrf" value="{e(csrf)}"><button type="submit">Log out</button></form></nav>')
    module = f'<script type="module" src="/static/admin/{script}"></script>' if script else ""
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{e(title)} · signal-edge</title><link rel="stylesheet" href="/static/admin/admin.css">
{f'<meta name="csrf-token" content="{e(csrf)}">' if csrf else ""}{module}</head>
<body><header><a class="brand" href="/">signal-edge</a>{nav}</header>
<main id="main"><h1>{e(title)}</h1>{body}</main>
<p id="status" role="status" aria-live="polite" class="status"></p></body></html>"""
    return HTMLResponse(page, headers=SECURITY_HEADERS)


def time_tag(at: float | None) -> str:
    """A moment for people: the ISO time, shown in the browser's zone by the page's script."""
    if at is None:
        return "never"
    stamp = iso(at)
    return f'<time datetime="{stamp}">{stamp}</time>'


def status_of(integ) -> str:
    if not integ.enabled:
        return "disabled"
    return "paused" if integ.paused else integ.health.status


def health_badge(status: str) -> str:
    return f'<span class="badge {e(status)}">{e(status)}</span>'


class Ui:
    def __init__(self, services: Services, sessions: Sessions, throttle: Throttle) -> None:
        self.s = services
        self.sessions = sessions
        self.throttle = throttle

    def page(handler):  # noqa: N805 - a decorator for the methods below
        async def endpoint(self, request: Request) -> Response:
            session = await self.sessions.read(request)
            if session is None:
                return RedirectResponse("/login?next=" + request.url.path, 303)
            return await handler(self, request, session.csrf)
        return endpoint

    # --- login ---------------------------------------------------------------------------

    async def login_form(self, request: Request, error: str = "") -> Response:
        alert = f'<p class="error" role="alert">{e(error)}</p>' if error else ""
        body = f"""{alert}<form method="post" action="/login" class="card narrow">
<label for="token">Admin token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required>
<p class="help">Printed once when signal-edge first started (or by <code>signal-edge admin-token --rotate</code>).</p>
<button type="submit">Log in</button></form>"""
        return layout("Log in", body, None)

    async def login(self, request: Request) -> Response:
        client = request.client.host if request.client else "?"
        wait = self.throttle.retry_after(client)
        if wait > 0:
            response = await self.login_form(request, f"Too many failed logins from your address: wait "
                                                      f"{math.ceil(wait / 60)} minutes and try again.")
            response.status_code = 429
            response.headers["Retry-After"] = str(math.ceil(wait))
            return response
        fields = await form(request)
        token = (fields.get("token") or [""])[0].strip()
        if not await self.s.auth.check(token):
            self.throttle.failed(client)
            await self.s.store.audit("login_failed", "admin_session", client, None, {"client": client})
            response = await self.login_form(request, "That admin token is not valid. Check it, or issue a new one "
                                                      "with `signal-edge admin-token --rotate`.")
            response.status_code = 401
            return response
        self.throttle.succeeded(client)
        response = RedirectResponse("/integrations", 303)
        session = await self.sessions.start(response, request.url.scheme == "https", client)
        await self.s.store.audit("login", "admin_session", session.key[:12], None, {"client": client})
        return response

    async def logout(self, request: Request) -> Response:
        session = await self.sessions.read(request)
        fields = await form(request)
        if session and not hmac.compare_digest((fields.get("csrf") or [""])[0], session.csrf):
            return Response("CSRF check failed: reload the page and try again.", 403)
        response = RedirectResponse("/login", 303)
        ended = await self.sessions.end(request, response)
        if ended is not None:
            client = request.client.host if request.client else "?"
            await self.s.store.audit("logout", "admin_session", ended.key[:12], None, {"client": client})
        return response

    # --- pages ---------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        return RedirectResponse("/integrations", 303)

    @page
    async def sources(self, request: Request, csrf: str) -> Response:
        rows = "".join(
            f'<tr><td><a href="/sources/{e(x.id)}">{e(x.name)}</a></td><td><code>{e(x.id)}</code></td>'
            f"<td>{e(x.domain or 'any site')}</td><td>{len(self.s.store.integrations(x.id))}</td></tr>"
            for x in self.s.store.sources()
        ) or '<tr><td colspan="4">No sources yet: create one below.</td></tr>'
        body = f"""<div class="table"><table><caption>Sources</caption>
<thead><tr><th scope="col">Name</th><th scope="col">Id</th><th scope="col">Domain</th><th scope="col">Integrations</th></tr></thead>
<tbody>{rows}</tbody></table></div>
<form id="new-source" class="card"><h2>New source</h2>
<label for="source-name">Name</label><input id="source-name" name="name" required maxlength="200">
<label for="source-domain">Site domain <span class="help">(optional; events from other sites are refused)</span></label>
<input id="source-domain" name="domain" placeholder="example.com">
<label for="source-country">Default country for phone numbers <span class="help">(ISO code, optional)</span></label>
<input id="source-country" name="default_country" maxlength="2" placeholder="US">
<button type="submit">Create source</button></form>"""
        return layout("Sources", body, csrf, "/sources", "sources.js")

    @page
    async def source(self, request: Request, csrf: str) -> Response:
        src = self.s.store.source(request.path_params["id"])
        if src is None:
            return layout("Source not found", '<p><a href="/sources">Back to sources</a></p>', csrf, "/sources")
        code = snippet(self.s.settings.edge_url, src.pipeline_key)
        body = f"""<dl class="facts"><dt>Id</dt><dd><code>{e(src.id)}</code></dd>
<dt>Pipeline key</dt><dd><code id="pipeline-key">{e(src.pipeline_key)}</code></dd>
<dt>Domain</dt><dd>{e(src.domain or 'any site')}</dd>
<dt>Consent enforced</dt><dd>{'yes' if src.consent.enabled else 'no'}</dd></dl>
<h2>Paste this into every page</h2>
<label for="snippet">Snippet</label>
<textarea id="snippet" readonly rows="5">{e(code)}</textarea>
<p><button type="button" id="copy-snippet">Copy snippet</button>
<button type="button" id="rotate-key" data-source="{e(src.id)}" class="danger">Rotate pipeline key</button></p>
<p class="help">Rotating issues a new key at once; pages with the old key are refused until they carry the new snippet.</p>"""
        return layout(src.name, body, csrf, "/sources", "sources.js")

    @page
    async def integrations(self, request: Request, csrf: str) -> Response:
        rows = []
        for integ in self.s.store.integrations():
            stats = await self.s.queue.stats(integ.id)
            source = self.s.store.source(integ.source_id)
            rows.append(
                f'<tr><td><a href="/integrations/{e(integ.id)}">{e(integ.name)}</a></td>'
                f"<td>{e(VARIANTS[integ.variant].label)}</td><td>{e(source.name if source else integ.source_id)}</td>"
                f"<td>{health_badge(status_of(integ))}</td>"
                f"<td>{stats.delivered}</td><td>{stats.queued + stats.in_flight}</td><td>{stats.dead_lettered}</td></tr>"
            )
        table = "".join(rows) or '<tr><td colspan="7">No integrations yet.</td></tr>'
        error = request.query_params.get("error")
        alert = f'<p class="error" role="alert">{e(error)}</p>' if error else ""
        body = f"""{alert}<p><a class="button" href="/integrations/new">Add Integration</a></p>
<div class="table"><table><caption>Integrations</caption>
<thead><tr><th scope="col">Name</th><th scope="col">Variant</th><th scope="col">Source</th><th scope="col">Health</th>
<th scope="col">Delivered</th><th scope="col">Queued</th><th scope="col">Dead letters</th></tr></thead>
<tbody>{table}</tbody></table></div>{await self.deleted_with_dead_letters()}"""
        return layout("Integrations", body, csrf, "/integrations")

    async def deleted_with_dead_letters(self) -> str:
        deleted = {topic: n for topic, n in (await self.s.queue.dead_letter_topics()).items()
                   if self.s.store.integration(topic) is None}
        if not deleted:
            return ""
        rows = "".join(f'<tr><td><a href="/integrations/{e(topic)}"><code>{e(topic)}</code></a></td><td>{n}</td></tr>'
                       for topic, n in sorted(deleted.items()))
        return f"""<div class="table"><table><caption>Deleted integrations with dead letters</caption>
<thead><tr><th scope="col">Integration</th><th scope="col">Dead letters</th></tr></thead><tbody>{rows}</tbody></table></div>"""

    @page
    async def new_integration(self, request: Request, csrf: str) -> Response:
        options = "".join(f'<option value="{e(x.id)}">{e(x.name)} ({e(x.id)})</option>' for x in self.s.store.sources())
        if not options:
            body = '<p>Create a <a href="/sources">source</a> first: an integration sends one source\'s events.</p>'
            return layout("Add Integration", body, csrf, "/integrations")
        body = f"""<form id="integration-form" class="wizard" novalidate>
<fieldset><legend>1. Destination</legend>
<label class="choice"><input type="radio" name="vendor" value="pinterest" checked> Pinterest Conversions API</label>
</fieldset>
<fieldset id="variants"><legend>2. Variant</legend><p class="help">Loading…</p></fieldset>
<fieldset><legend>3. Source and credentials</legend>
<label for="source_id">Source</label><select id="source_id" name="source_id">{options}</select>
<label for="name">Name</label><input id="name" name="name" value="Pinterest Conversions API" required maxlength="200">
<div id="credentials"></div>
<p class="help">Paste tokens, or give the Pinterest app's id and secret and connect: signal-edge then keeps the access
token fresh itself. Register this redirect URI in the app: <code id="redirect-uri">{e(redirect_uri(self.s, request))}</code></p>
<button type="button" id="connect" class="secondary">Connect with Pinterest</button></fieldset>
<fieldset id="consent"><legend>4. Consent categories</legend></fieldset>
<p class="error" id="form-error" role="alert" hidden></p>
<button type="submit" id="save">Save</button></form>"""
        return layout("Add Integration", body, csrf, "/integrations", "integration-form.js")

    @page
    async def integration(self, request: Request, csrf: str) -> Response:
        integ = self.s.store.integration(request.path_params["id"])
        if integ is None:
            return await self.deleted_integration(request.path_params["id"], csrf)
        stats = await self.s.queue.stats(integ.id)
        health = integ.health
        explanation = TROUBLESHOOTING.get(health.problem, "") if health.problem else ""
        said = f'<p class="help">Pinterest said: {e(health.message)}</p>' if health.message else ""
        problem = f'<p class="problem" id="health-explanation">{e(explanation)}</p>{said}' if explanation else ""
        last_error = (f'<p class="help">Last error ({e(iso(stats.last_error_at) or "")}): {e(stats.last_error)}</p>'
                      if stats.last_error else "")
        counts = "".join(
            f"<div><dt>{label}</dt><dd id=\"count-{key}\">{getattr(stats, key)}</dd></div>"
            for key, label in (("accepted", "Accepted"), ("delivered", "Delivered"), ("queued", "Queued"),
                               ("in_flight", "In flight"), ("filtered", "Filtered (consent)"),
                               ("dead_lettered", "Dead letters"), ("skipped_disabled", "Skipped while disabled"))
        )
        variants = "".join(
            f'<option value="{k}"{" selected" if k == integ.variant else ""}>{e(v.label)}</option>'
            for k, v in VARIANTS.items()
        )
        cfg = integ.config
        body = f"""<section class="card" aria-labelledby="health-h"><h2 id="health-h">Health</h2>
<p>{health_badge(status_of(integ))} <span class="help">checked {e(iso(health.at) or 'never')}</span></p>
{problem}{last_error}
<button type="button" id="send-test" data-integration="{e(integ.id)}">Send test event</button>
<button type="button" id="pause" class="secondary" data-paused="{'true' if integ.paused else 'false'}">{'Resume' if integ.paused else 'Pause'}</button>
<p class="help">Paused: events are still queued, and nothing is sent until you resume. Disabled (below): nothing is queued.</p>
<p id="test-result" role="status" aria-live="polite"></p></section>
{self.connection(integ, request)}
<section class="card" aria-labelledby="counts-h"><h2 id="counts-h">Delivery</h2><dl class="counts">{counts}</dl></section>
<section class="card" aria-labelledby="match-h"><h2 id="match-h">Match quality</h2>
<div id="match-quality" data-integration="{e(integ.id)}"><p class="help">Loading…</p></div></section>
<section class="card" aria-labelledby="dead-h"><h2 id="dead-h">Dead letters</h2>
<div id="dead-letters" data-integration="{e(integ.id)}"><p class="help">Loading…</p></div></section>
<form id="edit-integration" class="card" data-integration="{e(integ.id)}"><h2>Edit</h2>
<label for="edit-name">Name</label><input id="edit-name" name="name" value="{e(integ.name)}" required maxlength="200">
<label for="edit-variant">Variant</label><select id="edit-variant" name="variant">{variants}</select>
<label for="edit-ad-account">Ad Account ID</label><input id="edit-ad-account" name="ad_account_id" value="{e(cfg.ad_account_id)}" inputmode="numeric" pattern="\\d{{1,18}}">
<label for="edit-access">API access token <span class="help">(leave blank to keep {e(_masked(cfg.access_token))})</span></label>
<input id="edit-access" name="access_token" type="password" autocomplete="off">
<label for="edit-conversion">Conversion access token <span class="help">(leave blank to keep {e(_masked(cfg.conversion_token))})</span></label>
<input id="edit-conversion" name="conversion_token" type="password" autocomplete="off">
<label for="edit-app-id">Pinterest app id</label><input id="edit-app-id" name="app_id" value="{e(cfg.app_id or '')}">
<label for="edit-app-secret">Pinterest app secret <span class="help">(leave blank to keep {e(_masked(cfg.app_secret))})</span></label>
<input id="edit-app-secret" name="app_secret" type="password" autocomplete="off">
<label for="edit-refresh">Refresh token <span class="help">(leave blank to keep {e(_masked(cfg.refresh_token))})</span></label>
<input id="edit-refresh" name="refresh_token" type="password" autocomplete="off">
<label class="choice"><input type="checkbox" name="test_mode"{" checked" if cfg.test_mode else ""}> Test mode (Pinterest validates but does not record)</label>
<label class="choice"><input type="checkbox" name="enabled"{" checked" if integ.enabled else ""}> Enabled</label>
<button type="submit">Save changes</button></form>
<p><a href="/debugger?integration_id={e(integ.id)}">Watch this integration in the debugger</a></p>"""
        return layout(integ.name, body, csrf, "/integrations", "integration-page.js")

    def connection(self, integ, request: Request) -> str:
        """Connect with Pinterest: the state of the connection, and what to do."""
        cfg, q = integ.config, request.query_params
        said = ""
        if q.get("connected"):
            said = '<p class="ok" role="status">Connected: signal-edge now gets its access tokens itself.</p>'
        elif q.get("error"):
            said = f'<p class="error" role="alert">{e(q["error"])}</p>'
        if integ.oauth:
            state = (f"<p>Connected (app <code>{e(cfg.app_id)}</code>). The access token expires "
                     f"{time_tag(cfg.access_token_expires_at)}; last refreshed {time_tag(cfg.token_refreshed_at)}; the "
                     f"refresh token lasts until {time_tag(cfg.refresh_token_expires_at)}, and each refresh renews it.</p>"
                     '<button type="button" id="mint-conversion" class="secondary">Mint a conversion token</button> '
                     '<span class="help">a token for conversions only, that does not expire</span>')
        elif cfg.app_id:
            state = "<p>Not connected yet: sign in at Pinterest to let signal-edge refresh the access token itself.</p>"
        else:
            state = ('<p class="help">Pasted tokens expire after 30 days. Give the Pinterest app\'s id and secret below, '
                     "then connect, and signal-edge keeps the access token fresh itself.</p>")
        connect = (f'<a class="button" id="connect" href="/oauth/pinterest/start?integration_id={e(integ.id)}">'
                   f'{"Connect again" if integ.oauth else "Connect with Pinterest"}</a>' if cfg.app_id else "")
        return f"""<section class="card" aria-labelledby="connect-h"><h2 id="connect-h">Connection to Pinterest</h2>
{said}{state} {connect}
<p class="help">Redirect URI to register in the Pinterest app: <code>{e(redirect_uri(self.s, request))}</code></p></section>"""

    async def deleted_integration(self, topic: str, csrf: str) -> Response:
        """What is left of a deleted integration: its dead letters, to replay elsewhere or export."""
        if topic not in await self.s.queue.dead_letter_topics():
            response = layout("Integration not found", '<p><a href="/integrations">Back</a></p>', csrf, "/integrations")
            response.status_code = 404
            return response
        targets = "".join(f'<option value="{e(x.id)}">{e(x.name)} ({e(x.id)})</option>'
                          for x in self.s.store.integrations())
        body = f"""<p class="help">This integration was deleted. The events it still held are dead letters: replay them
into another integration, or export them.</p>
<label for="replay-into">Replay into</label><select id="replay-into">{targets}</select>
<section class="card" aria-labelledby="dead-h"><h2 id="dead-h">Dead letters</h2>
<div id="dead-letters" data-integration="{e(topic)}"><p class="help">Loading…</p></div></section>"""
        return layout(f"Deleted integration {topic}", body, csrf, "/integrations", "dead-letters.js")

    @page
    async def debugger(self, request: Request, csrf: str) -> Response:
        q = request.query_params
        sources = "".join(
            f'<option value="{e(x.id)}"{" selected" if q.get("source_id") == x.id else ""}>{e(x.name)}</option>'
            for x in self.s.store.sources())
        integrations = "".join(
            f'<option value="{e(x.id)}"{" selected" if q.get("integration_id") == x.id else ""}>{e(x.name)}</option>'
            for x in self.s.store.integrations())
        statuses = "".join(
            f'<option value="{s}"{" selected" if q.get("status") == s else ""}>{s}</option>'
            for s in ("queued", "delivered", "retrying", "failed", "filtered", "skipped"))
        body = f"""<form id="filters" class="filters">
<div><label for="f-source">Source</label><select id="f-source" name="source_id"><option value="">All</option>{sources}</select></div>
<div><label for="f-integration">Integration</label><select id="f-integration" name="integration_id"><option value="">All</option>{integrations}</select></div>
<div><label for="f-status">Status</label><select id="f-status" name="status"><option value="">All</option>{statuses}</select></div>
</form>
<p class="help" id="live-state" aria-live="polite">Connecting…</p>
<div class="table"><table id="events"><caption>Events, newest first</caption>
<thead><tr><th scope="col">Time</th><th scope="col">Event</th><th scope="col">Pinterest</th><th scope="col">Status</th>
<th scope="col">Details</th></tr></thead><tbody></tbody></table></div>
<section id="detail" class="card" hidden aria-labelledby="detail-h"><h2 id="detail-h" tabindex="-1">Event</h2>
<div id="detail-body"></div><button type="button" id="close-detail">Close</button></section>"""
        return layout("Debugger", body, csrf, "/debugger", "debugger.js")


def _masked(secret: str | None) -> str:
    return mask(secret) or "nothing"


MAX_FORM = 8 * 1024


async def form(request: Request) -> dict[str, list[str]]:
    """A small url-encoded form (login, logout); anything past MAX_FORM is not read."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            break
    return parse_qs(body[:MAX_FORM].decode("utf-8", "replace"))


def ui_routes(services: Services, sessions: Sessions, throttle: Throttle) -> list:
    ui = Ui(services, sessions, throttle)
    connect = Connect(services, sessions)
    return [
        Route("/", ui.home, methods=["GET"]),
        Route("/login", ui.login_form, methods=["GET"]),
        Route("/login", ui.login, methods=["POST"]),
        Route("/logout", ui.logout, methods=["POST"]),
        Route("/sources", ui.sources, methods=["GET"]),
        Route("/sources/{id}", ui.source, methods=["GET"]),
        Route("/integrations", ui.integrations, methods=["GET"]),
        Route("/integrations/new", ui.new_integration, methods=["GET"]),
        Route("/integrations/{id}", ui.integration, methods=["GET"]),
        Route("/debugger", ui.debugger, methods=["GET"]),
        Route("/oauth/pinterest/start", connect.start, methods=["GET"]),
        Route(CALLBACK, connect.callback, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=services.settings.static_dir), name="static"),
    ]

