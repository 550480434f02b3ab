"""Serving the browser tag: read once, gzip once, strong ETag, revalidated with 304."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

from starlette.datastructures import Headers
from starlette.responses import Response

TAG_FILE = "datafly.js"
# Short enough that a fixed tag reaches every browser within the hour; revalidation is cheap.
CACHE_CONTROL = "public, max-age=3600, stale-while-revalidate=86400"


class TagFile:
    def __init__(self, static_dir: str) -> None:
        path = Path(static_dir) / TAG_FILE
        if not path.exists():
            raise FileNotFoundError(f"the browser tag is missing: {path} (set SIGNAL_STATIC_DIR to the static/ folder)")
        self.raw = path.read_bytes()
        self.gzipped = gzip.compress(self.raw, compresslevel=9, mtime=0)
        digest = hashlib.sha256(self.raw).hexdigest()[:32]
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
