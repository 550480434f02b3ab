"""The admin UI: server-rendered pages; small vanilla JS modules in static/admin/ do the
actions through the management API (session cookie + X-CSRF-Token header)."""

from __future__ import annotations

import hmac
import html
import math
from urllib.parse import parse_qs, quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from collector.admin import deployment, flash
from collector.admin.api import config_warnings, dead_letters_source, iso, snippet
from collector.admin.auth import Throttle
from collector.admin.oauth import CALLBACK, Connect, redirect_uri
from collector.admin.peers import Peers
from collector.admin.session import Sessions
from collector.services import Services
from delivery.config import SERVER_KEY_PREFIX
from delivery.pinterest.catalog import CONSENT_CATEGORIES, TROUBLESHOOTING
from delivery.pinterest.mapping import PROFILE_HELP
from delivery.pinterest.variants import VARIANTS
from delivery.secrets import mask

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
NAV = (("/integrations", "Integrations"), ("/sources", "Sources"), ("/debugger", "Debugger"), ("/alerts", "Alerts"),
       ("/erasure", "Erasure"))
FAVICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><circle cx="16" cy="16" r="15" fill="#b3001b"/>'
           '<path d="M9 17l5 5 9-11" stroke="#fff" stroke-width="3.5" fill="none" stroke-linecap="round"/></svg>')
TRACK_EXAMPLE = """_df.track("Order Completed", {
  order_id: "ORD-1001", total: 129.99, currency: "USD",
  products: [{product_id: "SKU-A", name: "Widget", price: 49.99, quantity: 2}]
});"""
IDENTIFY_EXAMPLE = """_df.identify("user-123", {
  email: "jane@example.com",   // hashed with SHA-256 at the edge, never stored raw
  phone: "+1 415 555 0100"
});"""
e = html.escape


def layout(title: str, body: str, csrf: str | None, active: str = "", script: str | None = None,
           status: int = 200, head: str = "") -> HTMLResponse:
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
<title>{e(title)} · signal-edge</title><link rel="icon" href="/favicon.ico" type="image/svg+xml">
<link rel="stylesheet" href="/static/admin/admin.css">{head}
{f'<meta name="csrf-token" content="{e(csrf)}">' if csrf else ""}<script type="module" src="/static/admin/page.js"></script>{module}</head>
<body><header><a class="brand" href="/">signal-edge</a>{nav}</header>
<main id="main"><h1>{e(title)}</h1>{body}</main>
<p id="status" role="status" aria-live="polite" class="status"></p></body></html>"""
    return HTMLResponse(page, status, headers=SECURITY_HEADERS)


def not_found_page(path: str) -> HTMLResponse:
    body = (f'<p>There is no page at <code>{e(path[:200])}</code>.</p>'
            '<p><a href="/integrations">Go to the integrations</a> or <a href="/sources">the sources</a>.</p>')
    return layout("Page not found", body, None, status=404)


def time_tag(at: float | None) -> str:
    """A moment for people: local time with the zone (page.js), the ISO time on hover."""
    if at is None:
        return "never"
    stamp = iso(at)
    return f'<time datetime="{stamp}" title="{stamp}">{stamp}</time>'


def name_link(name: str, href: str) -> str:
    """A name that may be long: cut to the column with an ellipsis, whole on hover."""
    return f'<a class="truncate" href="{e(href)}" title="{e(name)}">{e(name)}</a>'


def table(caption: str, headers: tuple[str, ...], rows: list[tuple[str, ...]], empty: str, attrs: str = "") -> str:
    """A table that becomes labelled cards on a phone (each cell carries its column's name)."""
    head = "".join(f'<th scope="col">{h}</th>' for h in headers)
    body = "".join("<tr>" + "".join(f'<td data-label="{h}">{cell}</td>' for h, cell in zip(headers, row)) + "</tr>"
                   for row in rows) or f'<tr><td colspan="{len(headers)}">{empty}</td></tr>'
    return (f'<div class="table"><table class="cards"{attrs}><caption>{caption}</caption><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def status_of(integ) -> str:
    if not integ.enabled:
        return "disabled"
    return "paused" if integ.paused else integ.health.status


def health_badge(status: str) -> str:
    return f'<span class="badge {e(status)}">{e(status)}</span>'


def checkboxes(name: str, chosen: list[str], prefix: str) -> str:
    return "".join(f'<label class="choice"><input type="checkbox" name="{name}" value="{c}" id="{prefix}-{c}"'
                   f'{" checked" if c in chosen else ""}> {c}</label>' for c in CONSENT_CATEGORIES)


def safe_next(value: str | None) -> str:
    """Where to go after logging in: a path on this server, never another site."""
    if value and value.startswith("/") and not value.startswith(("//", "/\\")) and "\\" not in value[:3]:
        return value
    return "/integrations"


class Ui:
    def __init__(self, services: Services, sessions: Sessions, throttle: Throttle, peers: Peers) -> None:
        self.s = services
        self.sessions = sessions
        self.throttle = throttle
        self.peers = peers

    def page(handler):  # noqa: N805 - a decorator for the methods below
        async def endpoint(self, request: Request) -> Response:
            session = await self.sessions.read(request)
            if session is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse("/login?next=" + quote(target, safe=""), 303)
            request.state.session = session
            return await handler(self, request, session.csrf)
        return endpoint

    # --- login ---------------------------------------------------------------------------

    async def login_form(self, request: Request, error: str = "", next_path: str | None = None) -> Response:
        target = safe_next(next_path or request.query_params.get("next"))
        invalid = ' aria-invalid="true" aria-describedby="token-error"' if error else ""
        alert = f'<p class="field-error" id="token-error" role="alert">{e(error)}</p>' if error else ""
        body = f"""<form method="post" action="/login" class="card narrow">
<input type="hidden" name="next" value="{e(target)}">
<label for="token">Admin token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required{invalid}>{alert}
<p class="help">Printed once when signal-edge first started (or by <code>signal-edge admin-token --rotate</code>).</p>
<button type="submit">Log in</button></form>"""
        return layout("Log in", body, None)

    async def login(self, request: Request) -> Response:
        client = self.peers.client(request)
        fields = await form(request)
        target = safe_next((fields.get("next") or [""])[0])
        token = (fields.get("token") or [""])[0].strip()
        if await self.s.auth.check(token):  # never throttled: others' mistakes must not lock an admin out
            response = RedirectResponse(target, 303)
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

    @page
    async def sources(self, request: Request, csrf: str) -> Response:
        sources = self.s.store.sources()
        await self.s.activity.flush()
        activity = await self.s.store.activity([x.id for x in sources]) if sources else {}
        rows = [(name_link(x.name, f"/sources/{x.id}"), f"<code>{e(x.id)}</code>", e(x.domain or "any site"),
                 str(len(self.s.store.integrations(x.id))), str(sum(activity[x.id].refused.values())),
                 time_tag(activity[x.id].last_event_at)) for x in sources]
        body = table("Sources", ("Name", "Id", "Domain", "Integrations", "Refused", "Last event"), rows,
                     "No sources yet: create one below.") + f"""
<form id="new-source" class="card" novalidate><h2>New source</h2>
<label for="source-name">Name</label><input id="source-name" name="name" required maxlength="200">
<label for="source-domain">Site domain <span class="help">(optional; events from other sites are refused)</span></label>
<input id="source-domain" name="domain" placeholder="shop.example.com">
<label for="source-country">Default country for phone numbers <span class="help">(two letters, optional)</span></label>
<input id="source-country" name="default_country" maxlength="2" placeholder="US">
<button type="submit">Create source</button></form>"""
        return layout("Sources", body, csrf, "/sources", "sources.js")

    @page
    async def source(self, request: Request, csrf: str) -> Response:
        src = self.s.store.source(request.path_params["id"])
        if src is None:
            return layout("Source not found", '<p><a href="/sources">Back to the sources</a></p>', csrf, "/sources",
                          status=404)
        code = snippet(self.s.settings.edge_url, src.pipeline_key)
        integrations = self.s.store.integrations(src.id)
        linked = "".join(f"<li>{name_link(i.name, f'/integrations/{i.id}')} {health_badge(status_of(i))}</li>"
                         for i in integrations) or "<li>None yet: <a href=\"/integrations/new\">add one</a>.</li>"
        server_key = f"<code>{SERVER_KEY_PREFIX}****{e(src.server_key_hint)}</code>" if src.server_key_hint else "none"
        privacy = src.privacy
        ldp = "".join(f'<option value="{k}"{" selected" if privacy.ldp == k else ""}>{label}</option>' for k, label in
                      (("off", "Off"), ("all", "Every visitor"), ("states", "Visitors from these US states")))
        gpc = "".join(f'<option value="{k}"{" selected" if privacy.gpc == k else ""}>{label}</option>' for k, label in
                      (("opt_out", "Send their events with opt_out: true"), ("no_delivery", "Send their events nowhere")))
        previous = "".join(f"<li><code>{e(r.key)}</code> works until {time_tag(r.until)}</li>" for r in src.retired_keys)
        previous = (f'<p class="help">Replaced keys, accepted until their overlap ends (then refused and counted '
                    f'below as <code>expired_pipeline_key</code>):</p><ul class="plain" id="previous-keys">{previous}</ul>'
                    if previous else "")
        body = f"""<section class="card" aria-labelledby="facts-h"><h2 id="facts-h">Overview</h2>
<dl class="facts"><dt>Id</dt><dd><code>{e(src.id)}</code></dd>
<dt>Pipeline key</dt><dd><code id="pipeline-key">{e(src.pipeline_key)}</code></dd>
<dt>Domain</dt><dd>{e(src.domain or 'any site')}</dd>
<dt>Last event received</dt><dd id="last-event">…</dd>
<dt>Integrations</dt><dd><ul class="plain">{linked}</ul></dd></dl></section>
<section class="card" aria-labelledby="refused-h"><h2 id="refused-h">Refused requests and events</h2>
<div id="refusals" data-source="{e(src.id)}" aria-live="polite"><p class="help">Loading…</p></div></section>
<section class="card" aria-labelledby="snippet-h"><h2 id="snippet-h">Paste this into every page</h2>
<label for="snippet">Snippet</label>
<textarea id="snippet" readonly rows="5">{e(code)}</textarea>
<p><button type="button" id="copy-snippet">Copy snippet</button>
<button type="button" id="rotate-key" data-source="{e(src.id)}" class="danger">Rotate pipeline key</button></p>
<p class="help">Rotating issues a new key at once; pages with the old key keep working for 7 days, then are refused
until they carry the new snippet.</p>{previous}
<h3>Then send events</h3>
<p class="help">Page views are sent by the snippet. Purchases and other actions:</p>
<pre tabindex="0"><code>{e(TRACK_EXAMPLE)}</code></pre>
<p class="help">When a visitor logs in or gives their email (it improves Pinterest's match rate):</p>
<pre tabindex="0"><code>{e(IDENTIFY_EXAMPLE)}</code></pre></section>
{deployment.section(src, self.s.settings.port)}
<form id="consent-form" class="card" novalidate><h2>Consent and privacy</h2>
<label class="choice"><input type="checkbox" name="enabled" id="consent-enabled"{" checked" if src.consent.enabled else ""}>
Enforce consent: an integration receives an event only when the visitor granted the integration's categories</label>
<fieldset class="inner"><legend>Categories granted when the page says nothing</legend>
{checkboxes("default_categories", src.consent.default_categories, "consent")}</fieldset>
<p class="help">Pages report consent with <code>_df.consent({{advertising: true}})</code>. With consent enforced, the
edge writes no advertising identifier (<code>_pin_unauth</code>, <code>_epik</code>, the click id) before the visitor
grants advertising, and deletes them when it is refused; <code>data-consent="wait"</code> on the script holds the
page's events until the consent call.</p>
<label for="privacy-gpc">Visitors whose browser sends Global Privacy Control (Sec-GPC: 1)</label>
<select id="privacy-gpc" name="gpc">{gpc}</select>
<label for="privacy-ldp">Limited data processing (US state privacy laws)</label>
<select id="privacy-ldp" name="ldp">{ldp}</select>
<label for="privacy-states">US states for limited data processing <span class="help">(two-letter codes, comma-separated)</span></label>
<input id="privacy-states" name="ldp_states" value="{e(', '.join(s.upper() for s in privacy.ldp_states))}" placeholder="CA, CO">
<label for="privacy-params">URL parameters to remove before sending <span class="help">(comma-separated)</span></label>
<input id="privacy-params" name="url_params_to_remove" value="{e(', '.join(privacy.url_params_to_remove))}" placeholder="token, session">
<button type="submit">Save consent and privacy</button></form>
<section class="card" aria-labelledby="server-h"><h2 id="server-h">Server key</h2>
<p>Current: <span id="server-key">{server_key}</span></p>
<p class="help">For events your own servers send (order confirmations, say): they may give the visitor's IP address and
User-Agent. Keep it secret: it is shown once.</p>
<button type="button" id="issue-server-key" class="secondary" data-source="{e(src.id)}">Issue a server key</button>
<p id="new-server-key" role="status"></p></section>
<form id="edit-source" class="card" data-source="{e(src.id)}" novalidate><h2>Edit</h2>
<label for="edit-name">Name</label><input id="edit-name" name="name" value="{e(src.name)}" required maxlength="200">
<label for="edit-domain">Site domain <span class="help">(empty: any site)</span></label>
<input id="edit-domain" name="domain" value="{e(src.domain or '')}" placeholder="shop.example.com">
<label for="edit-origins">Other allowed origins <span class="help">(one per line, such as https://app.example.com)</span></label>
<textarea id="edit-origins" name="allowed_origins" rows="3">{e(chr(10).join(src.allowed_origins))}</textarea>
<label for="edit-country">Default country for phone numbers</label>
<input id="edit-country" name="default_country" value="{e(src.default_country or '')}" maxlength="2" placeholder="US">
<button type="submit">Save changes</button></form>
<section class="card" aria-labelledby="delete-h"><h2 id="delete-h">Delete</h2>
<p class="help">A source with integrations cannot be deleted: delete its integrations first.</p>
<button type="button" id="delete-source" class="danger" data-source="{e(src.id)}">Delete this source</button>
<p class="field-error" id="delete-error" role="alert" hidden></p></section>"""
        return layout(src.name, body, csrf, "/sources", "source-page.js")

    @page
    async def integrations(self, request: Request, csrf: str) -> Response:
        rows = []
        for integ in self.s.store.integrations():
            stats = await self.s.queue.stats(integ.id)
            source = self.s.store.source(integ.source_id)
            rows.append((name_link(integ.name, f"/integrations/{integ.id}"), e(VARIANTS[integ.variant].label),
                         name_link(source.name, f"/sources/{source.id}") if source else e(integ.source_id),
                         health_badge(status_of(integ)), str(stats.delivered), str(stats.queued + stats.in_flight),
                         str(stats.dead_lettered)))
        body = (f'{await self.notice(request)}<p><a class="button" href="/integrations/new">Add Integration</a></p>' +
                table("Integrations", ("Name", "Variant", "Source", "Health", "Delivered", "Queued", "Dead letters"),
                      rows, "No integrations yet.") + await self.deleted_with_dead_letters())
        return layout("Integrations", body, csrf, "/integrations")

    def redirect_uri(self, request: Request) -> str:
        return redirect_uri(self.s, request, self.peers.https(request))

    async def notice(self, request: Request) -> str:
        """What this server left to tell this session (flash.py), once."""
        said = await flash.take(self.s.store, request.state.session.key)
        if said is None:
            return ""
        kind, message = said
        return (f'<p class="ok" role="status">{e(message)}</p>' if kind == "ok" else
                f'<p class="field-error" role="alert">{e(message)}</p>')

    async def deleted_with_dead_letters(self) -> str:
        deleted = {topic: n for topic, n in (await self.s.queue.dead_letter_topics()).items()
                   if self.s.store.integration(topic) is None}
        if not deleted:
            return ""
        rows = [(f'<a href="/integrations/{e(topic)}"><code>{e(topic)}</code></a>', str(n))
                for topic, n in sorted(deleted.items())]
        return table("Deleted integrations with dead letters", ("Integration", "Dead letters"), rows, "")

    @page
    async def new_integration(self, request: Request, csrf: str) -> Response:
        options = "".join(f'<option value="{e(x.id)}" data-consent="{"on" if x.consent.enabled else "off"}">'
                          f'{e(x.name)} ({e(x.id)})</option>' for x in self.s.store.sources())
        if not options:
            body = '<p>Create a <a href="/sources">source</a> first: an integration sends one source\'s events.</p>'
            return layout("Add Integration", body, csrf, "/integrations")
        body = f"""<form id="integration-form" class="wizard" novalidate>
<p class="field-error" id="form-error" role="alert" hidden></p>
<fieldset><legend>1. Destination</legend>
<label class="choice"><input type="radio" name="vendor" value="pinterest" checked> Pinterest Conversions API</label>
</fieldset>
<fieldset id="variants"><legend>2. Variant</legend><p class="help">Loading…</p></fieldset>
<fieldset><legend>3. Source and credentials</legend>
<label for="source_id">Source</label><select id="source_id" name="source_id">{options}</select>
<label for="name">Name</label><input id="name" name="name" value="Pinterest Conversions API" required maxlength="200">
<div id="credentials"></div>
<label class="choice"><input type="checkbox" name="test_mode" id="test_mode"> Test mode: Pinterest checks the events but
does not record them (turn it off to go live)</label>
<p class="help">Paste tokens, or give the Pinterest app's id and secret and connect: signal-edge then keeps the access
token fresh itself. Register this redirect URI in the app: <code id="redirect-uri">{e(self.redirect_uri(request))}</code></p>
<button type="button" id="connect" class="secondary">Connect with Pinterest</button></fieldset>
<fieldset id="consent"><legend>4. Consent categories</legend>
<p class="help">Events reach Pinterest only when the visitor granted all of these.</p>
{checkboxes("consent_categories", ["advertising"], "consent")}
<p class="note" id="consent-note" hidden>This source does not enforce consent, so these categories have no effect yet:
switch consent on on the <a id="consent-source-link" href="/sources">source's page</a>.</p></fieldset>
<div id="form-warnings" class="warning" role="status" hidden></div>
<button type="submit" id="save">Save</button></form>"""
        return layout("Add Integration", body, csrf, "/integrations", "integration-form.js")

    @page
    async def integration(self, request: Request, csrf: str) -> Response:
        integ = self.s.store.integration(request.path_params["id"])
        if integ is None:
            return await self.deleted_integration(request.path_params["id"], csrf)
        stats = await self.s.queue.stats(integ.id)
        source = self.s.store.source(integ.source_id)
        health = integ.health
        explanation = TROUBLESHOOTING.get(health.problem, "") if health.problem else ""
        said = f'<p class="help">Pinterest said: {e(health.message)}</p>' if health.message else ""
        problem = f'<p class="problem" id="health-explanation">{e(explanation)}</p>{said}' if explanation else ""
        last_error = (f'<p class="help">Last error ({time_tag(stats.last_error_at)}): {e(stats.last_error)}</p>'
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
        profiles = "".join(f'<option value="{k}"{" selected" if k == integ.config.event_names else ""}>'
                           f'{"Pinterest current names" if k == "current" else "The seed table"} ({k})</option>'
                           for k in PROFILE_HELP)
        warnings = "".join(f"<li>{e(w)}</li>" for w in config_warnings(integ.config))
        warned = (f'<section class="warning" aria-labelledby="warn-h"><h2 id="warn-h">Warnings</h2><ul>{warnings}</ul>'
                  "</section>" if warnings else "")
        consent = (("enforced" if source.consent.enabled else "not enforced by the source, so these categories have "
                    f'no effect yet: switch consent on on the <a href="/sources/{e(source.id)}">source\'s page</a>')
                   if source else "")
        cfg = integ.config
        body = f"""{warned}<section class="card" aria-labelledby="health-h"><h2 id="health-h">Health</h2>
<p>{health_badge(status_of(integ))} <span class="help">checked {time_tag(health.at)}</span></p>
{problem}{last_error}
<button type="button" id="send-test" data-integration="{e(integ.id)}">Send test event</button>
<button type="button" id="pause" class="secondary" data-paused="{'true' if integ.paused else 'false'}">{'Resume' if integ.paused else 'Pause'}</button>
<p class="help">Paused: events are still queued, and nothing is sent until you resume. Disabled (below): nothing is queued.</p>
<div id="test-result" role="status" aria-live="polite"></div>
<p><a href="/debugger?integration_id={e(integ.id)}">Watch this integration in the debugger</a>
· <a href="/debugger?integration_id={e(integ.id)}&amp;status=queued">its queued events</a></p></section>
<section class="card" aria-labelledby="about-h"><h2 id="about-h">Source and consent</h2>
<dl class="facts"><dt>Source</dt><dd>{name_link(source.name, f'/sources/{source.id}') if source else e(integ.source_id)}</dd>
<dt>Consent categories</dt><dd id="consent-categories">{e(', '.join(integ.consent_categories) or 'none required')}</dd>
<dt>Consent</dt><dd id="consent-state">{consent}</dd>
<dt>Test mode</dt><dd>{'on: Pinterest checks the events but does not record them' if cfg.test_mode else 'off'}</dd></dl></section>
{await self.connection(integ, request)}
<section class="card" aria-labelledby="counts-h"><h2 id="counts-h">Delivery</h2><dl class="counts">{counts}</dl></section>
<div class="pair"><section class="card" aria-labelledby="match-h"><h2 id="match-h">Match quality</h2>
<div id="match-quality" data-integration="{e(integ.id)}"><p class="help">Loading…</p></div></section>
{event_quality_panel(integ.id)}</div>
<section class="card" aria-labelledby="mapping-h"><h2 id="mapping-h">Event mapping</h2>
<div id="mapping"><p class="help">Loading…</p></div>
<form id="mapping-form" novalidate>
<label for="event-names">Event names</label>
<select id="event-names" name="event_names">{profiles}</select>
<p class="help">Pinterest's current names are the default; the seed's table is for a deployment migrating from it.</p>
<h3>Your overrides</h3>
<p class="help">An override sends an event name as the Pinterest event you choose (names match ignoring case).</p>
<div id="overrides"></div>
<button type="button" id="add-override" class="secondary">Add an override</button>
<label class="choice"><input type="checkbox" name="send_custom_event_name" id="send-custom"{" checked" if cfg.send_custom_event_name else ""}>
Send custom event names (custom_data.custom_event_name) for events that map to custom</label>
<p class="field-error" id="mapping-error" role="alert" hidden></p>
<button type="submit">Save mapping</button></form></section>
<section class="card" aria-labelledby="preview-h"><h2 id="preview-h">What would this event become?</h2>
<form id="preview-form" novalidate>
<label for="preview-event">An event, as the tag or your server sends it (JSON)</label>
<textarea id="preview-event" name="event" rows="7">{{"type": "track", "event": "Order Completed",
 "properties": {{"order_id": "ORD-1", "total": 49.99, "currency": "USD"}},
 "context": {{"traits": {{"email": "jane@example.com"}}}}}}</textarea>
<p class="field-error" id="preview-error" role="alert" hidden></p>
<button type="submit" class="secondary">Show the Pinterest payload</button></form>
<div id="preview-result" aria-live="polite"></div></section>
<section class="card" aria-labelledby="dead-h"><h2 id="dead-h">Dead letters</h2>
<div id="dead-letters" data-integration="{e(integ.id)}"><p class="help">Loading…</p></div></section>
<form id="edit-integration" class="card" data-integration="{e(integ.id)}" novalidate><h2>Edit</h2>
<p class="field-error" id="edit-error" role="alert" hidden></p>
<label for="edit-name">Name</label><input id="edit-name" name="name" value="{e(integ.name)}" required maxlength="200">
<label for="edit-variant">Variant</label><select id="edit-variant" name="variant">{variants}</select>
<label for="edit-ad-account">Ad Account ID</label><input id="edit-ad-account" name="ad_account_id" value="{e(cfg.ad_account_id)}" inputmode="numeric">
<label for="edit-access">API access token <span class="help">(leave blank to keep {e(_masked(cfg.access_token))})</span></label>
<input id="edit-access" name="access_token" type="password" autocomplete="off">
<label for="edit-conversion">Conversion access token <span class="help">(leave blank to keep {e(_masked(cfg.conversion_token))})</span></label>
<input id="edit-conversion" name="conversion_token" type="password" autocomplete="off">
<label for="edit-app-id">Pinterest app id</label><input id="edit-app-id" name="app_id" value="{e(cfg.app_id or '')}">
<label for="edit-app-secret">Pinterest app secret <span class="help">(leave blank to keep {e(_masked(cfg.app_secret))})</span></label>
<input id="edit-app-secret" name="app_secret" type="password" autocomplete="off">
<label for="edit-refresh">Refresh token <span class="help">(leave blank to keep {e(_masked(cfg.refresh_token))})</span></label>
<input id="edit-refresh" name="refresh_token" type="password" autocomplete="off">
<fieldset class="inner" id="edit-consent"><legend>Consent categories</legend>
{checkboxes("consent_categories", integ.consent_categories, "edit-consent")}</fieldset>
<label class="choice"><input type="checkbox" name="test_mode"{" checked" if cfg.test_mode else ""}> Test mode (Pinterest checks but does not record)</label>
<label class="choice"><input type="checkbox" name="enabled"{" checked" if integ.enabled else ""}> Enabled</label>
<button type="submit">Save changes</button></form>
<section class="card" aria-labelledby="delete-h"><h2 id="delete-h">Delete</h2>
<p class="help">Events still queued for it become dead letters, which you can replay into another integration or export.</p>
<button type="button" id="delete-integration" class="danger">Delete this integration</button></section>"""
        return layout(integ.name, body, csrf, "/integrations", "integration-page.js")

    async def connection(self, integ, request: Request) -> str:
        """Connect with Pinterest: the state of the connection, and what to do."""
        cfg, said = integ.config, await self.notice(request)
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
<p class="help">Redirect URI to register in the Pinterest app: <code>{e(self.redirect_uri(request))}</code></p></section>"""

    async def deleted_integration(self, topic: str, csrf: str) -> Response:
        """What is left of a deleted integration: its dead letters, to replay elsewhere or export."""
        if topic not in await self.s.queue.dead_letter_topics():
            return layout("Integration not found", '<p><a href="/integrations">Back to the integrations</a></p>', csrf,
                          "/integrations", status=404)
        origin = await dead_letters_source(self.s.store, self.s.queue, topic) or ""
        targets = "".join(
            f'<option value="{e(x.id)}" data-source="{e(x.source_id)}"{" selected" if x.source_id == origin else ""}>'
            f'{e(x.name)} ({e(x.id)})</option>' for x in self.s.store.integrations())
        body = f"""<p class="help">This integration was deleted. The events it still held are dead letters: replay them
into another integration, or export them.</p>
<label for="replay-into">Replay into</label><select id="replay-into" aria-describedby="other-source">{targets}</select>
<p class="warning" id="other-source" role="status" hidden>That integration belongs to another source: its events
would go to another site's ad account. You will be asked to confirm.</p>
<section class="card" aria-labelledby="dead-h"><h2 id="dead-h">Dead letters</h2>
<div id="dead-letters" data-integration="{e(topic)}" data-source="{e(origin)}"><p class="help">Loading…</p></div></section>"""
        return layout(f"Deleted integration {topic}", body, csrf, "/integrations", "dead-letters.js")

    @page
    async def debugger(self, request: Request, csrf: str) -> Response:
        q = request.query_params
        sources = "".join(
            f'<option value="{e(x.id)}"{" selected" if q.get("source_id") == x.id else ""}>{e(x.name)}</option>'
            for x in self.s.store.sources())
        integrations = "".join(
            f'<option value="{e(x.id)}" data-source="{e(x.source_id)}" data-enabled="{"true" if x.enabled else "false"}"'
            f'{" selected" if q.get("integration_id") == x.id else ""}>{e(x.name)}</option>'
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
<div class="table"><table id="events" class="cards"><caption>Events, newest first</caption>
<thead><tr><th scope="col">Time</th><th scope="col">Event</th><th scope="col">Integration</th><th scope="col">Pinterest</th>
<th scope="col">Status</th><th scope="col">Details</th></tr></thead><tbody></tbody></table></div>
<p class="help" id="empty" hidden>No events match these filters yet.</p>
<section id="detail" class="card" hidden aria-labelledby="detail-h"><h2 id="detail-h" tabindex="-1">Event</h2>
<div id="detail-body"></div><button type="button" id="close-detail">Close</button></section>"""
        return layout("Debugger", body, csrf, "/debugger", "debugger.js")


def event_quality_panel(integration_id: str) -> str:
    """Pinterest's Event Quality Score beside our own match panel; static/admin/event-quality.js
    fills it from GET /v1/admin/integrations/{id}/event-quality."""
    return f"""<section class="card" aria-labelledby="eqs-h"><h2 id="eqs-h">Pinterest's Event Quality Score</h2>
<p class="help">Pinterest's own verdict on the events it received through the Conversions API: per signal, the share
of each event type that carried it, and the issues Pinterest found. Read every few hours, or now.</p>
<div id="event-quality" data-integration="{e(integration_id)}" aria-live="polite"><p class="help">Loading…</p></div>
<button type="button" id="eqs-refresh" class="secondary">Read it again now</button></section>"""


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


def ui_routes(services: Services, sessions: Sessions, throttle: Throttle, peers: Peers) -> list:
    ui = Ui(services, sessions, throttle, peers)
    connect = Connect(services, sessions, peers, layout)
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
        Route("/oauth/pinterest/start", connect.start, methods=["GET"]),
        Route(CALLBACK, connect.callback, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=services.settings.static_dir), name="static"),
    ]
