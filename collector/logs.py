"""Log output: plain text lines, or one JSON object per line (`SIGNAL_LOG_FORMAT=json`) with
`time`, `level`, `logger`, `message` and, when known, `request_id`, `integration` and `source`
(from the line's `extra` or its task's context, delivery/logcontext.py). Messages never hold
PII or secrets: the edge hashes PII before anything can log it, and tokens are never logged.

`SIGNAL_ACCESS_LOG=1` adds a line per request (AccessLog below). It wraps the apps only when it
is on: off, a request costs nothing more.
"""

from __future__ import annotations

import logging
import secrets
import sys
import time
from datetime import UTC, datetime

import msgspec

from delivery import logcontext
from delivery.pii import decoded, redact_text

_encode = msgspec.json.Encoder().encode
ACCESS = logging.getLogger("signal_edge.access")
_ACCESS_FIELDS = ("method", "path", "status", "duration_ms", "app")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = logcontext.current()
        for key in logcontext.FIELDS:
            value = getattr(record, key, None) or context.get(key)
            if value:
                line[key] = value
        for key in _ACCESS_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return _encode(line).decode()


def configure(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
        logging.captureWarnings(True)  # a library's warning is a JSON line too
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # uvicorn says "Started server process", "Waiting for application startup"... per server: our
    # own line per server ("edge listening on ...") says it once.
    logging.getLogger("uvicorn.error").setLevel(max(logging.WARNING, root.level))


class AccessLog:
    """ASGI middleware: one line per request (method, path without its query, status, duration),
    under a request id that the answer carries as X-Request-Id and every line logged while the
    request is served carries too. No client address, query string or body: they may be personal."""

    def __init__(self, app, name: str) -> None:
        self.app, self.name = app, name

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = secrets.token_hex(6)
        logcontext.bind(request_id=request_id)  # this request's task only
        status = 0
        started = time.perf_counter()

        async def sending(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = shown_path(scope["path"])
            ACCESS.info("%s %s %d", scope["method"], path, status, extra={
                "method": scope["method"], "path": path, "status": status, "app": self.name,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "source": scope.get("signal_edge.source")})


def shown_path(path: str) -> str:
    """A request path as the access log keeps it: cut short, any address or phone number in it
    (a stranger may ask for /jane@example.com) redacted."""
    return redact_text(decoded(path[:200]))
