"""What one connection may cost (issue 16): slow heads, huge heads, slow bodies, floods of
connections. A real server, real sockets; the admin port must answer throughout."""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlsplit

import httpx

from tests.support import wait_for

PARTIAL_HEAD = b"POST /v1/batch HTTP/1.1\r\nHost: data.example.com\r\nContent-Type: text/plain\r\n"


def connect(url: str) -> socket.socket:
    address = urlsplit(url)
    return socket.create_connection((address.hostname, address.port), timeout=30)


def read_all(conn: socket.socket) -> bytes:
    answer = b""
    while chunk := conn.recv(65536):
        answer += chunk
    return answer


def closed_by_server(conn: socket.socket) -> bool:
    conn.setblocking(False)
    try:
        while True:
            if conn.recv(65536) == b"":
                return True
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


def admin_answers(edge) -> bool:
    return httpx.get(edge.admin_url + "/healthz", timeout=2).status_code == 200


def test_300_half_open_connections_are_closed_and_the_admin_port_answers_meanwhile(edge_factory):
    edge = edge_factory()
    started = time.monotonic()
    conns = [connect(edge.url) for _ in range(300)]
    for conn in conns:
        conn.sendall(PARTIAL_HEAD)  # and never the blank line that ends the head
    open_conns = list(conns)
    while open_conns:
        assert time.monotonic() - started < 20, f"{len(open_conns)} connections still open after 20 s"
        assert admin_answers(edge)
        open_conns = [c for c in open_conns if not closed_by_server(c)]
        time.sleep(0.5)
    assert time.monotonic() - started >= 9, "closed before the 10 s head timeout"
    # The edge itself still takes events.
    assert httpx.get(edge.url + "/healthz").status_code == 200
    for conn in conns:
        conn.close()


def test_a_head_too_slow_gets_408_and_a_body_too_slow_is_cut(edge_factory):
    edge = edge_factory(env={"SIGNAL_HEAD_TIMEOUT": "1", "SIGNAL_BODY_TIMEOUT": "1"})
    with connect(edge.url) as conn:
        conn.sendall(PARTIAL_HEAD)
        answer = read_all(conn)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_timeout"

    with connect(edge.url) as conn:  # the head arrives, the body never finishes
        conn.sendall(PARTIAL_HEAD + b"Content-Length: 1000\r\n\r\n" + b'{"batch": [')
        started = time.monotonic()
        assert read_all(conn) == b"" and time.monotonic() - started < 5

    with connect(edge.url) as conn:  # keep-alive: the second request's head is timed too
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.recv(65536).startswith(b"HTTP/1.1 200 ")
        conn.sendall(b"GET /healthz HTTP/1.1\r\n")
        rest = read_all(conn)
        assert rest.startswith(b"HTTP/1.1 408 ")


def test_a_head_over_16_kb_gets_431(edge_factory):
    edge = edge_factory()
    for url in (edge.url, edge.admin_url):
        with connect(url) as conn:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
            answer = read_all(conn)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 431 "), head
        assert json.loads(body)["error"]["code"] == "headers_too_large"
    # A 32 MB header is refused as early: the server does not read on.
    with connect(edge.url) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = 0
        try:
            while sent < 32 * 1024 * 1024:
                conn.sendall(b"a" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
    assert sent < 32 * 1024 * 1024, "the server kept reading a 32 MB header"


def test_connections_over_the_cap_are_refused_and_the_admin_port_still_answers(edge_factory):
    edge = edge_factory(env={"SIGNAL_MAX_CONNECTIONS": "50"})
    held = [connect(edge.url) for _ in range(50)]
    wait_for(lambda: admin_answers(edge), what="the admin port")
    extra = [connect(edge.url) for _ in range(30)]
    for conn in extra:
        answer = read_all(conn)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"too_many_connections" in answer
    assert admin_answers(edge)
    for conn in held:
        conn.close()
    wait_for(lambda: httpx.get(edge.url + "/healthz", timeout=2).status_code == 200, what="the edge to recover")
