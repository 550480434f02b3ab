"""OneSendPerTurn: what uvicorn writes in one turn of the event loop leaves in one send()."""

from __future__ import annotations

import asyncio
import json
import socket
from urllib.parse import urlsplit

import httpx

from collector.transport import OneSendPerTurn
from tests.support import Recording, post_batch


def test_writes_of_one_turn_leave_together_and_close_flushes_first():
    async def main():
        real = Recording()
        transport = OneSendPerTurn(real, asyncio.get_running_loop())
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        transport.write(b"{}")
        assert real.sent == [] and transport.get_write_buffer_size() == 40
        await asyncio.sleep(0)
        assert real.sent == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
        transport.write(b"last")
        transport.close()  # what was written goes before the close
        assert real.sent[-1] == b"last" and real.closed
        transport.write(b"late")
        await asyncio.sleep(0)  # a write after close is dropped, as the transport itself would
        assert real.sent[-1] == b"last"
        assert transport.is_closing()  # everything else is the real transport's
    asyncio.run(main())


def test_the_servers_answer_through_it(edge):
    """Keep-alive requests on one connection get whole, ordered answers."""
    with httpx.Client(base_url=edge.url) as client:
        for _ in range(3):
            assert client.get("/healthz").json()["ok"] is True
        assert post_batch(edge.url, "dk_nope", [{"type": "page"}]).status_code == 401


def test_a_request_that_is_not_valid_http_gets_our_json_error(edge):
    """Found by the admin API fuzz test: a bad Transfer-Encoding header was answered by uvicorn in
    text/plain, which no error of the API's document is."""
    for url in (edge.url, edge.admin_url):
        address = urlsplit(url)
        with socket.create_connection((address.hostname, address.port), timeout=5) as conn:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: 76\r\n\r\n")
            answer = b""
            while chunk := conn.recv(4096):  # the server closes the connection after its answer
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 ") and b"content-type: application/json" in head.lower()
        assert json.loads(body)["error"]["code"] == "malformed_http"


def test_the_uvicorn_hooks_the_protocols_override_still_exist_with_the_same_parameters():
    """transport.py subclasses uvicorn's private HttpToolsProtocol; pyproject bounds uvicorn's
    version, and this names the hook that moved when that bound is raised."""
    import inspect

    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from collector.transport import GuardedHTTPProtocol, OneSendHTTPProtocol

    for cls in (OneSendHTTPProtocol, GuardedHTTPProtocol):
        for name, ours in vars(cls).items():
            if not inspect.isfunction(ours) or name.startswith("_"):  # ours, not overrides
                continue
            theirs = getattr(HttpToolsProtocol, name, None)
            assert theirs is not None, f"uvicorn's HttpToolsProtocol no longer has {name}()"
            assert list(inspect.signature(theirs).parameters) == list(inspect.signature(ours).parameters), name
    # The state the guarded protocol reads: connections counted by uvicorn, the parser's url/headers.
    source = inspect.getsource(HttpToolsProtocol)
    for attribute in ("self.server_state", "self.url", "self.headers", "self.loop", "self.transport"):
        assert attribute in source, f"uvicorn's protocol no longer sets {attribute}"
