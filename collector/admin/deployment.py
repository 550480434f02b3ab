"""The source page's deployment check: how the source's browser requests arrive (as this node saw
them), what browsers then do with the edge's cookies, and the exact fix; and the same-origin
setup to copy (snippet and Caddy block). The UI shows both (templates/_deployment.html)."""

from __future__ import annotations

import time

from collector.activity import ActivityLog, ArrivalKind
from collector.admin import schemas as s
from collector.edge.serving import caddy_block, same_origin_snippet, serving_of
from delivery.config import Source

WARN_WITHIN = 24 * 3600  # a cross-site request this recent keeps the warning up
MAX_SHOWN = 200  # characters of an origin or a host shown (they come from browsers)


def _shown(text: str | None) -> str | None:
    return text[:MAX_SHOWN] if text else text


def serving_out(source: Source, edge_port: int) -> s.ServingOut:
    serving = serving_of(source)
    return s.ServingOut(serving.prefix, serving.script, serving.endpoint, f"{serving.prefix}/{serving.script}",
                        same_origin_snippet(serving, source.pipeline_key),
                        caddy_block(serving, f"127.0.0.1:{edge_port}"))


def cross_site_warning(activity: ActivityLog, source_id: str, now: float) -> bool:
    found = activity.arrivals.get((source_id, ArrivalKind.CROSS_SITE))
    return found is not None and now - found.at < WARN_WITHIN


def deployment(source: Source, activity: ActivityLog, now: float | None = None) -> s.DeploymentOut:
    now = time.time() if now is None else now
    seen = {kind: found for kind in ArrivalKind if (found := activity.arrivals.get((source.id, kind)))}
    arrivals = [s.ArrivalOut(kind, a.requests, _iso(a.at), _shown(a.origin), _shown(a.host))
                for kind, a in seen.items()]
    warning = cross_site_warning(activity, source.id, now)
    if warning:
        status = ArrivalKind.CROSS_SITE
    elif seen:
        status = max((kind for kind in seen if kind != ArrivalKind.CROSS_SITE),
                     key=lambda kind: seen[kind].at, default=ArrivalKind.CROSS_SITE)
    else:
        return s.DeploymentOut(s.DeploymentStatus.UNKNOWN, False, "No page has sent an event to this node yet: open a "
                               "page with the snippet, and this shows how its requests arrive.", "", "", None, [])
    last = seen[status]
    prefix = serving_of(source).prefix
    origin, host = _shown(last.origin) or "the pages", _shown(last.host) or "the edge"
    if status == ArrivalKind.SAME_ORIGIN:
        return s.DeploymentOut(s.DeploymentStatus(status), False,
                               f"Pages on {origin} send to their own origin: the edge is first-party.",
                               "Keeps _dfid 400 days and _pin_unauth and _epik 365 days after the last visit "
                               "(cookies a site's own server sets).", "The same: 400 and 365 days after the last "
                               "visit.", None, arrivals)
    same_origin_fix = (f"Serve the edge from the site's own origin: mount it under {prefix} in the site's Caddy "
                       "block (below) and paste the same-origin snippet into every page.")
    if status == ArrivalKind.SAME_SITE:
        return s.DeploymentOut(
            s.DeploymentStatus(status), False, f"Pages on {origin} send to {host}, another host of the same site.",
            f"Keeps the cookies only 7 days after the last visit when {host} is served from another address than the "
            "site (a CNAME to another provider, or an address outside the site's range): a Pinterest click is "
            "forgotten after a week.", "Keeps them 400 and 365 days after the last visit (same-site cookies).",
            same_origin_fix, arrivals)
    return s.DeploymentOut(
        s.DeploymentStatus(status), warning,
        f"Pages on {origin} send to {host}, on another site: browsers treat the edge as a third party.",
        "Keeps none of the cookies the edge sets (third-party cookies are blocked): every page gets a new visitor "
        "id, and a Pinterest click is forgotten after one page.",
        "Keeps none of them either: SameSite=Lax cookies are not set by cross-site requests.",
        same_origin_fix + " (A subdomain of the site, such as data.<your site>, is the next best: same-site.)",
        arrivals)


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))

