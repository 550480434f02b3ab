"""bench/loadgen.py: the benchmark's load generator counts what servers really answered.

Its figures decide whether the ingest targets are met, so a miscounted answer (a body cut at
the wrong length, a lost connection that hangs a turn) would be a wrong verdict, not a crash.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support import Recording, ServerThread

_spec = importlib.util.spec_from_file_location("bench_loadgen", Path(__file__).parent.parent / "bench" / "loadgen.py")
loadgen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(loadgen)


def connected(target) -> tuple:
    conn = loadgen._Connection(target)
    wire = Recording()
    conn.connection_made(wire)
    return conn, wire


def test_answers_are_cut_at_their_content_length_however_they_arrive():
    target = loadgen.Target("t", 1, b"REQ")
    target.driving = True
    conn, wire = connected(target)
    conn.send()
    ok = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 29\r\n\r\n{"success":true,"accepted":1}'
    refused = b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 2\r\nRetry-After: 1\r\n\r\n{}"
    empty = b"HTTP/1.1 204 No Content\r\ndate: x\r\n\r\n"
    stream = ok + refused + empty + ok
    # byte by byte, then everything at once: the same four answers
    for piece in [stream[i:i + 1] for i in range(len(stream))] + [stream]:
        conn.data_received(piece)
    assert (target.answers, target.non2xx) == (8, 2)
    assert conn.buffer == b""
    assert len(wire.sent) == 1 + 8  # the first request, then one more after each answer
    assert len(target.latencies) == 8


def test_a_turn_ends_when_its_last_answer_is_in_or_its_connection_is_lost():
    loop = asyncio.new_event_loop()
    try:
        target = loadgen.Target("t", 1, b"REQ")
        target.idle = loop.create_future()
        first, _ = connected(target)
        second, _ = connected(target)
        target.driving = True
        first.send()
        second.send()
        target.driving = False
        first.data_received(b"HTTP/1.1 204 No Content\r\n\r\n")
        assert target.in_flight == 1 and not target.idle.done()
        second.connection_lost(None)
        assert target.idle.done()
        assert (target.answers, target.lost, target.in_flight) == (1, 1, 0)
    finally:
        loop.close()


async def _accepted(request: Request) -> Response:
    await request.body()
    return JSONResponse({"success": True, "accepted": 1})


async def _refused(request: Request) -> Response:
    return JSONResponse({"error": {"code": "rate_limited"}}, status_code=429)


def test_drive_takes_turns_between_real_servers_and_counts_their_answers():
    app = Starlette(routes=[Route("/v1/batch", _accepted, methods=["POST"]),
                            Route("/refused", _refused, methods=["POST"])])
    server = ServerThread(app).start()
    try:
        # the server runs in this process: its CPU time is counted as a server's
        good = loadgen.Target("good", server.port, loadgen.post(b'{"batch":[]}', "_dfid=abc"), os.getpid())
        bad = loadgen.Target("bad", server.port, loadgen.post(b"{}", path="/refused"))
        loadgen.drive([good, bad], seconds=0.4, core=min(os.sched_getaffinity(0)), turn=0.1, connections=4)
    finally:
        server.stop()
    assert good.non2xx == 0 and bad.non2xx == bad.answers
    for target in (good, bad):
        assert target.turns == 4  # 0.4 s in turns of 0.1 s
        assert target.answers >= 4 * 4  # every turn waits for the answers on its 4 connections
        assert len(target.latencies) == target.answers
        assert 0 < target.percentile(50) <= target.percentile(99) <= target.percentile(99.9)
        assert target.in_flight == 0
    assert good.cpu_per_request() > 0 and bad.server_cpu == 0  # bad has no pid: nothing counted
