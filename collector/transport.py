"""The servers' HTTP protocol: uvicorn's, with each response leaving in one send(), and our
JSON error shape when the request is not even valid HTTP.

uvicorn writes a response's head and its body separately and uvloop sends each at once: two
send() calls and two TCP segments per answer. On the ingest path the second one was a tenth
of a request's cost (the server's system time, from /proc: 19 us per request, against 12 us
when the answer was a bodiless 204). Here the writes made in one turn of the event loop are
joined and sent when that turn ends.
"""

from __future__ import annotations

import asyncio
from typing import cast

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class OneSendPerTurn:
    """A transport whose writes within one turn of the event loop go out together."""

    __slots__ = ("_transport", "_loop", "_pending")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending = []
        if not self._transport.is_closing():
            self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


_MALFORMED = msgspec.json.encode({"error": {
    "code": "malformed_http",
    "message": "the request is not valid HTTP/1.1 (its request line or a header, such as Transfer-Encoding, "
               "could not be parsed); fix the client or the proxy in front of this server"}})


class OneSendHTTPProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # a Transport by duck typing: what it does not define is the wrapped transport's (__getattr__)
        super().connection_made(cast(asyncio.Transport, OneSendPerTurn(transport, self.loop)))

    def send_400_response(self, msg: str) -> None:
        """uvicorn answers an unparsable request in text/plain before any app sees it; every
        other error of ours is `{"error": {"code", "message"}}` in JSON, so this one is too."""
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_MALFORMED), _MALFORMED))
        self.transport.close()


class Limits(msgspec.Struct, frozen=True):
    head_timeout: float = 10.0  # the request line and headers must arrive within this
    body_timeout: float = 30.0  # and the body within this after them (512 KB at 20 KB/s)
    max_head: int = 16 * 1024  # bytes of request line and headers
    max_connections: int = 10_000  # open at once; more are answered 503 and closed


def _json_answer(status: bytes, code: str, message: str) -> bytes:
    body = msgspec.json.encode({"error": {"code": code, "message": message}})
    return (b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, len(body), body))


class GuardedHTTPProtocol(OneSendHTTPProtocol):
    """Bounds what one connection may cost. uvicorn closes idle keep-alive connections, but it
    waits forever for a request head that never completes and accepts headers of any size:
    300 silent connections took the process's file descriptors, and both ports with them.
    Subclass with `limits` set (see `guarded`).

    A request only sets a deadline; one timer per connection looks at it and re-arms itself
    (two timers armed and cancelled per request cost 7% of a single-event request)."""

    limits = Limits()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._refused = len(self.server_state.connections) >= self.limits.max_connections
        if self._refused:  # never registered: uvicorn does not count or track it
            transport.write(_TOO_MANY)
            transport.close()
            return
        super().connection_made(transport)
        self._head_raw = 0  # bytes received while the current request's head is incomplete
        self._in_head = True
        self._head_too_large = False
        self._deadline: float | None = self.loop.time() + self.limits.head_timeout
        self._timed_out: bytes | None = _HEAD_TIMEOUT  # what a missed deadline answers (None: just close)
        self._timer = self.loop.call_later(self.limits.head_timeout, self._check_deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._timer.cancel()
        super().connection_lost(exc)

    def _check_deadline(self) -> None:
        """Too slow: a head gets 408; a body just ends (the app sees the client disconnect)."""
        now = self.loop.time()
        if self.transport.is_closing():
            return
        if self._deadline is not None and now >= self._deadline:
            if self._timed_out is not None:
                self.transport.write(self._timed_out)
            self.transport.close()
            return
        wait = self._deadline - now if self._deadline is not None else self.limits.head_timeout
        self._timer = self.loop.call_later(wait, self._check_deadline)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._head_raw += len(data)
        super().data_received(data)
        # A header still incomplete past the limit: the parser reports a header only once it
        # is whole, and would buffer one without end.
        if self._in_head and self._head_raw > self.limits.max_head and not self.transport.is_closing():
            self._head_too_large = True
            self.send_400_response("")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a keep-alive connection's next request: its head is timed too
            self._deadline, self._timed_out = self.loop.time() + self.limits.head_timeout, _HEAD_TIMEOUT

    def on_headers_complete(self) -> None:
        # The head may have come whole in one packet with the body behind it: measured exactly
        # only when the bytes received say it could be over the limit.
        if self._head_raw > self.limits.max_head and _head_size(self.url, self.headers) > self.limits.max_head:
            self._head_too_large = True
            raise ValueError("request head too large")  # the parser stops; send_400_response answers
        self._in_head, self._head_raw = False, 0
        self._deadline, self._timed_out = self.loop.time() + self.limits.body_timeout, None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._deadline = None  # the app answers; then uvicorn's keep-alive timeout applies
        self._in_head = True  # what comes next on this connection is the next request's head
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self._head_too_large:
            self.transport.write(_json_answer(
                b"431 Request Header Fields Too Large", "headers_too_large",
                f"the request line and headers are over {self.limits.max_head // 1024} KB"))
            self.transport.close()
            return
        super().send_400_response(msg)


def _head_size(url: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    return len(url) + sum(len(name) + len(value) + 4 for name, value in headers)


_HEAD_TIMEOUT = _json_answer(b"408 Request Timeout", "request_timeout", "the request did not arrive in time")
_TOO_MANY = _json_answer(b"503 Service Unavailable", "too_many_connections",
                         "this server has too many open connections; retry shortly")


def guarded(limits: Limits) -> type[GuardedHTTPProtocol]:
    """The protocol class for one server, with its limits."""
    return type("GuardedHTTPProtocol", (GuardedHTTPProtocol,), {"limits": limits})
