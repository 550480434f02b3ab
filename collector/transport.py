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

import msgspec
from uvicorn.protocols.http.auto import AutoHTTPProtocol


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


class OneSendHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(OneSendPerTurn(transport, self.loop))

    def send_400_response(self, msg: str) -> None:
        """uvicorn answers an unparsable request in text/plain before any app sees it; every
        other error of ours is `{"error": {"code", "message"}}` in JSON, so this one is too."""
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_MALFORMED), _MALFORMED))
        self.transport.close()
