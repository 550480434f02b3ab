"""The source page's deployment check: how the source's browser requests arrive (as this node saw
them), what browsers then do with the edge's cookies, and the exact fix; and the same-origin
setup to copy (snippet and Caddy block). The UI's section is rendered here, apart from the page."""

from __future__ import annotations

import html
import time

from collector.activity import ActivityLog
from collector.admin import schemas as s
from collector.edge.arrival import CROSS_SITE, KINDS, SAME_ORIGIN, SAME_SITE
from collector.edge.serving import caddy_block, same_origin_snippet, serving_of
from delivery.config import Source

WARN_WITHIN = 24 * 3600  # a cross-site request this recent keeps the warning up
MAX_SHOWN = 200  # characters of an origin or a host shown (they come from browsers)
e = html.escape


def _shown(text: str | None) -> str | None:
    return text[:MAX_SHOWN] if text else text


def serving_out(source: Source, edge_port: int) -> s.ServingOut:
    serving = serving_of(source)
    return s.ServingOut(serving.prefix, serving.script, serving.endpoint, f"{serving.prefix}/{serving.script}",
                        same_origin_snippet(serving, source.pipeline_key),
                        caddy_block(serving, f"127.0.0.1:{edge_port}"))


def cross_site_warning(activity: ActivityLog, source_id: str, now: float) -> bool:
    found = activity.arrivals.get((source_id, CROSS_SITE))
    return found is not None and now - found.at < WARN_WITHIN


def deployment(source: Source, activity: ActivityLog, now: float | None = None) -> s.DeploymentOut:
    now = time.time() if now is None else now
    seen = {kind: found for kind in KINDS if (found := activity.arrivals.get((source.id, kind)))}
    arrivals = [s.ArrivalOut(kind, a.requests, _iso(a.at), _shown(a.origin), _shown(a.host))
                for kind, a in seen.items()]
    warning = cross_site_warning(activity, source.id, now)
    if warning:
        status = CROSS_SITE
    elif seen:
        status = max((kind for kind in seen if kind != CROSS_SITE), key=lambda kind: seen[kind].at,
                     default=CROSS_SITE)
    else:
        return s.DeploymentOut("unknown", False, "No page has sent an event to this node yet: open a page with the "
                               "snippet, and this shows how its requests arrive.", "", "", None, [])
    last = seen[status]
    prefix = serving_of(source).prefix
    origin, host = _shown(last.origin) or "the pages", _shown(last.host) or "the edge"
    if status == SAME_ORIGIN:
        return s.DeploymentOut(status, False, f"Pages on {origin} send to their own origin: the edge is first-party.",
                               "Keeps _dfid 400 days and _pin_unauth and _epik 365 days after the last visit "
                               "(cookies a site's own server sets).", "The same: 400 and 365 days after the last "
                               "visit.", None, arrivals)
    same_origin_fix = (f"Serve the edge from the site's own origin: mount it under {prefix} in the site's Caddy "
                       "block (below) and paste the same-origin snippet into every page.")
    if status == SAME_SITE:
        return s.DeploymentOut(
            status, False, f"Pages on {origin} send to {host}, another host of the same site.",
            f"Keeps the cookies only 7 days after the last visit when {host} is served from another address than the "
            "site (a CNAME to another provider, or an address outside the site's range): a Pinterest click is "
            "forgotten after a week.", "Keeps them 400 and 365 days after the last visit (same-site cookies).",
            same_origin_fix, arrivals)
    return s.DeploymentOut(
        status, warning, f"Pages on {origin} send to {host}, on another site: browsers treat the edge as a third party.",
        "Keeps none of the cookies the edge sets (third-party cookies are blocked): every page gets a new visitor "
        "id, and a Pinterest click is forgotten after one page.",
        "Keeps none of them either: SameSite=Lax cookies are not set by cross-site requests.",
        same_origin_fix + " (A subdomain of the site, such as data.<your site>, is the next best: same-site.)",
        arrivals)


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def section(source: Source, edge_port: int) -> str:
    """The source page's section: the deployment check (filled in and kept current by
    static/admin/deployment.js), the same-origin snippet and Caddy block, and the names."""
    out = serving_out(source, edge_port)
    bridge = " checked" if source.pintrk_bridge else ""
    return f"""<section class="card" aria-labelledby="deploy-h"><h2 id="deploy-h">Serve it from your own site</h2>
<div id="deployment" aria-live="polite"><p class="help">Checking how this source's requests arrive…</p></div>
<p class="help">Mount the edge under a path of your site, so that its cookies are first-party: Safari keeps them for
their whole lifetime (a data subdomain on another address gets 7 days), and ad blockers do not know the names.</p>
<label for="same-origin-snippet">Script tag for pages of your site, with the edge under {e(out.prefix)}</label>
<textarea id="same-origin-snippet" readonly rows="4">{e(out.snippet)}</textarea>
<p class="help">In the site's Caddy block, before the site's own handling (<code>handle {out.prefix}/*</code>, which
keeps the prefix, works too):</p>
<pre tabindex="0" id="caddy-block"><code>{e(out.caddy)}</code></pre>
<form id="serving-form" novalidate><h3>Paths</h3>
<label for="serving-prefix">Path prefix on your site</label>
<input id="serving-prefix" name="prefix" value="{e(out.prefix)}" required>
<label for="serving-script">Tag file, under the prefix</label>
<input id="serving-script" name="script" value="{e(out.script)}" required>
<label for="serving-endpoint">Ingestion path, under the prefix</label>
<input id="serving-endpoint" name="endpoint" value="{e(out.endpoint)}" required>
<label class="choice"><input type="checkbox" name="pintrk_bridge" id="pintrk-bridge"{bridge}> <span>Hand each event's
id to a Pinterest Tag (<code>pintrk</code>) still on the page, so Pinterest counts each conversion once</span></label>
<button type="submit" class="secondary">Save paths</button></form></section>"""
