"""What the browser tag needs to hand its event ids to a Pinterest Tag (pintrk) still on the
page: Pinterest deduplicates a tag event and a Conversions API event that carry the same
event_id for the same event, so the site does not count a conversion twice."""

from __future__ import annotations

from delivery.events import EdgeEvent
from delivery.pinterest.mapping import Options, effective_mapping, event_name, name_key

# The Conversions API events that the Pinterest Tag knows, by the name pintrk('track', ...) takes.
# The others (custom, and the events the tag has no name for) are not bridged.
TAG_NAMES = {
    "page_visit": "pagevisit",
    "add_to_cart": "addtocart",
    "checkout": "checkout",
    "signup": "signup",
    "lead": "lead",
    "search": "search",
    "view_category": "viewcategory",
    "watch_video": "watchvideo",
}
PAGE_KEY = ""  # the tag looks a page view up under "" (a track event always has a name)


def _event(etype: str, name: str | None) -> EdgeEvent:
    return EdgeEvent("", etype, "", 0.0, 0.0, name)


def tag_mapping(options: Options, overrides: dict[str, str]) -> dict[str, str]:
    """Event name (as name_key compares it) -> pintrk event, for every name the integration maps
    to an event the tag knows; the names and events come from the mapping in effect."""
    found = {}
    page = TAG_NAMES.get(event_name(_event("page", None), options))
    if page:
        found[PAGE_KEY] = page
    for name, _, _ in effective_mapping(options, overrides):
        tag = TAG_NAMES.get(event_name(_event("track", name), options))
        if tag:
            found[name_key(name)] = tag
    return found
