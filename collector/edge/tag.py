"""Serving the browser tag: read once, gzip once per variant, strong ETag, revalidated with 304.

What is served is the file without its comment lines and indentation (`compact`): the file stays
readable, and browsers get a fifth fewer bytes. A source's own tag (served under its own name)
carries its settings in place of the file's empty `/*config*/{}`: its endpoint's name, the event
mapping for the pintrk bridge, whether the bridge is on and whether consent is enforced."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

from starlette.datastructures import Headers
from starlette.responses import Response

TAG_FILE = "datafly.js"
CONFIG_MARK = b"/*config*/{}"
# Short enough that a fixed tag reaches every browser within the hour; revalidation is cheap.
CACHE_CONTROL = "public, max-age=3600, stale-while-revalidate=86400"


def compact(source: bytes) -> bytes:
    """The lines without indentation, and without those that are only a comment. Line breaks
    stay, so automatic semicolon insertion reads the code as before; a comment after code on
    the same line would stay (the tag keeps its comments on lines of their own)."""
    lines = (line.strip() for line in source.split(b"\n"))
    return b"\n".join(line for line in lines if line and not line.startswith((b"//", b"/*")))


class ServedTag:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.gzipped = gzip.compress(raw, compresslevel=9, mtime=0)
        digest = hashlib.sha256(raw).hexdigest()[:32]
        self.etags = {"identity": f'"{digest}"', "gzip": f'"{digest}-gz"'}

    def response(self, headers: Headers) -> Response:
        encoding = "gzip" if "gzip" in headers.get("accept-encoding", "") else "identity"
        etag = self.etags[encoding]
        common = {"ETag": etag, "Cache-Control": CACHE_CONTROL, "Vary": "Accept-Encoding"}
        if etag in headers.get("if-none-match", ""):
            return Response(status_code=304, headers=common)
        if encoding == "gzip":
            common["Content-Encoding"] = "gzip"
            body = self.gzipped
        else:
            body = self.raw
        return Response(body, headers=common, media_type="application/javascript; charset=utf-8")


class TagFile:
    def __init__(self, static_dir: str) -> None:
        path = Path(static_dir) / TAG_FILE
        if not path.exists():
            raise FileNotFoundError(f"the browser tag is missing: {path} (set SIGNAL_STATIC_DIR to the static/ folder)")
        self.template = compact(path.read_bytes())
        if CONFIG_MARK not in self.template:
            raise ValueError(f"{path} lacks {CONFIG_MARK.decode()}, where a source's settings go")
        self.plain = ServedTag(self.template)

    def with_config(self, config: bytes) -> ServedTag:
        """The tag with `config` (a JSON object) in place of its empty settings."""
        return ServedTag(self.template.replace(CONFIG_MARK, config, 1))
