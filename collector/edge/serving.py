"""Same-origin serving: the paths a source's tag and ingestion answer on (design sections 3, 9).

A site mounts the edge under a path of its own origin (Caddy's `handle_path /sig/*`, which strips
the prefix, or `handle /sig/*`, which keeps it), so browsers see first-party requests to the
site's own address: Safari then keeps the cookies the edge sets for their whole lifetime, where it
caps those set by a subdomain on another address at 7 days. The names are opaque by default:
ad-blocking lists match well-known paths (/d.js, /v1/batch, /collect, ...) on any domain.

Every path is known in advance, so a request is routed by one dict look-up (`Routes`).
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache
from itertools import count
from typing import NamedTuple

from delivery.config import Serving, Source

LEGACY_TAG = ("/d.js", "/datafly.js")
LEGACY_INGEST: dict[str, str | None] = {"/v1/batch": None, "/v1/t": "track", "/v1/p": "page", "/v1/i": "identify",
                                        "/v1/g": "group"}
RESERVED = frozenset({*LEGACY_TAG, *LEGACY_INGEST, "/healthz"})
# Words that ad-blocking lists match in paths: no default name holds one, and none may be chosen.
FORBIDDEN_WORDS = ("analytics", "track", "collect", "pixel", "datafly")
STUB = ('<script>!function(w,n){var d=w[n]=w[n]||[];"page track identify group consent reset flush"'
        '.split(" ").forEach(function(m){d[m]=d[m]||function(){d.push([m,[].slice.call(arguments)])}})}'
        '(window,"_df")</script>')


def forbidden_word(text: str) -> str | None:
    lowered = text.lower()
    return next((word for word in FORBIDDEN_WORDS if word in lowered), None)


@lru_cache(maxsize=4096)
def default_serving(source_id: str) -> Serving:
    """Opaque names derived from the source's id: the same on every node, and stable without
    being stored (a source created before same-origin serving has them too)."""
    for n in count():
        letters = base64.b32encode(hashlib.sha256(f"{source_id}/{n}".encode()).digest()).decode().lower()
        serving = Serving("/" + letters[:5], letters[5:13] + ".js", letters[13:21])
        if not any(forbidden_word(part) for part in (serving.prefix, serving.script, serving.endpoint)):
            return serving
    raise AssertionError("unreachable")


def serving_of(source: Source) -> Serving:
    return source.serving or default_serving(source.id)


def own_paths(serving: Serving) -> list[str]:
    """The root paths that belong to one source: what the proxy leaves when it strips the prefix."""
    return ["/" + serving.script, "/" + serving.endpoint]


class Routes:
    """Path -> what answers it, for the legacy paths and every source's own, with and without
    its prefix. Rebuilt when sources change; a request costs one dict look-up."""

    def __init__(self, sources: list[Source]) -> None:
        self.tags: dict[str, str | None] = dict.fromkeys(LEGACY_TAG)  # path -> source id (None: the plain tag)
        self.ingest: dict[str, str | None] = dict(LEGACY_INGEST)  # path -> the event type it implies
        for source in sources:
            serving = serving_of(source)
            for prefix in ("", serving.prefix):
                self.tags[f"{prefix}/{serving.script}"] = source.id
                self.ingest[f"{prefix}/{serving.endpoint}"] = None
            # A page that loads /d.js through `handle /sig/*` posts to /sig/v1/batch.
            for path in LEGACY_TAG:
                self.tags.setdefault(serving.prefix + path, None)
            for path, implied in LEGACY_INGEST.items():
                self.ingest.setdefault(serving.prefix + path, implied)


class Conflict(NamedTuple):
    field: str  # prefix | script | endpoint
    message: str
    taken: bool = False  # another source answers there


def conflict(serving: Serving, source_id: str, sources: list[Source]) -> Conflict | None:
    """What is wrong with these names, when they cannot be served."""
    for field in ("prefix", "script", "endpoint"):
        word = forbidden_word(getattr(serving, field))
        if word:
            return Conflict(field, f"holds '{word}', a word ad-blocking lists match in paths; choose an opaque "
                                   "name (the default is one)")
    if serving.script.removesuffix(".js") == serving.endpoint:
        return Conflict("endpoint", "must differ from the script's name")
    if serving.prefix.split("/")[1] in ("v1", "healthz"):
        return Conflict("prefix", "is a path the edge answers itself; choose another one, such as /sig")
    mine = own_paths(serving)
    for path in mine:
        if path in RESERVED:
            field = "script" if path == mine[0] else "endpoint"
            return Conflict(field, f"{path} is a path the edge answers itself; choose another name")
    for other in sources:
        if other.id == source_id:
            continue
        theirs = own_paths(serving_of(other))
        for field, path in zip(("script", "endpoint"), mine, strict=True):
            if path in theirs:
                return Conflict(field, f"source {other.id} already answers on {path}; choose another name", True)
    return None


def script_tag(src: str, pipeline_key: str) -> str:
    return f'{STUB}\n<script async src="{src}" data-pipeline-key="{pipeline_key}"></script>'


def same_origin_snippet(serving: Serving, pipeline_key: str) -> str:
    """The snippet for pages of the site that mounts the edge: the script's path on the site itself."""
    return script_tag(f"{serving.prefix}/{serving.script}", pipeline_key)


def caddy_block(serving: Serving, upstream: str = "127.0.0.1:8080") -> str:
    """What goes inside the site's own Caddy block, before the site's own handling."""
    return (f"handle_path {serving.prefix}/* {{\n\treverse_proxy {upstream}\n}}\n"
            "handle {\n\t# the site itself, as before\n}")
