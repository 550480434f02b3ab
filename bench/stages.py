"""Where a single-event request's time goes: the ingest path stage by stage.

In process, on a real SQLite file, with the tag's request (bench/ingest.py: Chrome's headers,
both identity cookies, a Product Added with its page context) to a source that names its
domain and has one Pinterest integration. Each stage is the code `Edge.ingest` runs for it,
called alone in a loop on the same input (the best of 5 repeats, so the host's noise is left
out), on core 0. The append is timed as it runs under load: 32 requests' items appended at
once (one group commit), the process's CPU (the event loop and the SQLite thread) per item.
The whole request in process (`EdgeApp` called with the scope uvicorn would build) is set
beside the sum; and, from a live server driven over 32 connections, the CPU per request that
the HTTP server, the event loop and the kernel add (its /proc time less the in-process figure),
and the same for the raw ASGI app (bench/bare_app.py --app raw): the stack's own cost.

    .venv/bin/python bench/stages.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import LOAD_CORE, SERVER_CORE, table
from edge_app import open_edge
from ingest import Bare, Edge as EdgeServer, tag_request
from loadgen import drive

from collector.edge import identity as ei  # noqa: E402
from collector.edge.app import cors_headers, queue_items, read_headers, suspect  # noqa: E402
from collector.edge.arrival import arrival  # noqa: E402
from collector.edge.ingest import RequestContext, build_event  # noqa: E402
from collector.edge.wire import Accepted, encoder  # noqa: E402
from delivery.events import event_encoder  # noqa: E402
from delivery.pinterest.scrub import scrub_event  # noqa: E402
from delivery.urls import scrub_url  # noqa: E402

REPEATS = 5
ASYNCIO = os.path.dirname(asyncio.__file__)
CONCURRENT = 32  # requests whose appends share a commit, as with 32 connections


def scope_of(request: bytes) -> tuple[dict, bytes]:
    """The ASGI scope uvicorn builds for `request`, and its body."""
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    method, path, _ = lines[0].split(b" ")
    headers = [(name.strip().lower(), value.strip()) for name, _, value in (line.partition(b":") for line in lines[1:])]
    return {"type": "http", "method": method.decode(), "path": path.decode(), "query_string": b"", "scheme": "http",
            "headers": headers, "client": ("203.0.113.7", 51234), "server": ("127.0.0.1", 8080),
            "http_version": "1.1", "root_path": ""}, body


def per_call(fn, n: int) -> float:
    """Seconds per call of `fn`, the best of REPEATS loops of `n` calls."""
    best = float("inf")
    for _ in range(REPEATS):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - started) / n)
    return best


async def in_process(db: Path, n: int) -> tuple[list[list], float, float]:
    """(stage rows, the sum of the stages, the whole request's CPU in process), in seconds."""
    services, app = await open_edge(str(db))
    edge = app.edge
    try:
        cookie = f"{ei.DFID}=0b6f1c2e-5d4a-4b3c-9e8f-7a6b5c4d3e2f.{int(time.time() // ei.DAY)}; {ei.PIN_UNAUTH}=pin-1"
        scope, body = scope_of(tag_request("dk_bench", 1, cookie))
        sent = []

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            sent.append(message)

        for _ in range(200):  # warm: caches, the allocator, the identity memory
            await app(scope, receive, send)
        assert sent[0]["status"] == 200, sent[1]["body"]

        headers = read_headers(scope["headers"])
        key, events, sent_at, _ = edge.envelope(body, None, headers)
        source, _ = edge.source_for(key)
        origin = headers["origin"]
        ip = edge.trust.client_ip(scope["client"][0], None)
        cookies = ei.parse_cookies(headers["cookie"])
        anonymous_id = cookies[ei.DFID].partition(".")[0]

        def context() -> RequestContext:
            now = time.time()
            return RequestContext(source, ip, headers.get("user-agent"), anonymous_id, cookies[ei.PIN_UNAUTH], None,
                                  None, now, now - sent_at, False, False, False, False)

        ctx = context()
        stored = services.store.cached_identity(anonymous_id)
        inc = events[0]
        page = inc.context.page
        params = source.privacy.url_params_to_remove
        event, _ = build_event(inc, None, ctx, stored)
        target = edge.routes(source.id)[0][0]
        lines = event_encoder.encode_lines([event])[:-1]
        items = queue_items(target.integration_id, lines, target.priorities([event]), event.received_at)

        def identity() -> None:
            found = ei.parse_cookies(headers["cookie"])
            dfid, _, _ = found[ei.DFID].partition(".")
            ei.cookie_value_ok(dfid), ei.cookie_value_ok(found[ei.PIN_UNAUTH])
            context()
            services.store.cached_identity(dfid)

        def answer() -> None:
            encoder.encode(Accepted(True, 1, []))
            services.activity.received(source.id, ctx.received_at)
            services.activity.arrived(source.id, arrival(headers.get("sec-fetch-site"), origin, headers.get("host")),
                                      ctx.received_at, origin, headers.get("host"))
            edge.cookies(source, [event], ctx, cookies, None)

        stages = [
            ("read the headers, decode the body (msgspec)", lambda: (
                read_headers(scope["headers"]), b"\\" in body, suspect(body), edge.envelope(body, None, headers))),
            ("key and origin checks", lambda: (
                edge.source_for(key), edge.origin_ok(source, origin), cors_headers(origin))),
            ("per-client bucket, source bucket, backpressure", lambda: (
                edge.trust.client_ip(scope["client"][0], headers.get("x-forwarded-for")), edge.check_backpressure(),
                edge.check_rate(source, 1, ip))),
            ("identity: cookies, request context, identity memory", identity),
            ("URL scrubbing (page URL, referrer)", lambda: (
                scrub_url(page.url, params), scrub_url(page.referrer, params))),
            ("PII redaction (properties, userId, title)", lambda: scrub_event(
                "track", inc.properties, None, None, None, None, None, None, page.title, source.default_country, params,
                False)),
            ("building the queued event (all of build_event)", lambda: build_event(inc, None, ctx, stored)),
            ("encoding: JSON Lines, priority, queue item", lambda: queue_items(
                target.integration_id, event_encoder.encode_lines([event])[:-1], target.priorities([event]),
                event.received_at)),
            ("the answer: body, activity, cookies", answer),
        ]
        rows = [[name, per_call(fn, n), opcodes(fn)] for name, fn in stages]
        # build_event includes the two scrubbing stages: shown without them
        build = rows[6]
        build[0] = "building the queued event (less the two above)"
        build[1] = max(0.0, build[1] - rows[4][1] - rows[5][1])
        build[2] -= rows[4][2] + rows[5][2]
        rows.insert(8, ["the append: one group commit of 32 requests, CPU per request", await append_cpu(
            services.queue, items), None])
        whole = float("inf")
        for _ in range(REPEATS):  # CPU: the event loop's and the SQLite thread's, not the fsync's wait
            started = time.process_time()
            for _ in range(n // CONCURRENT):
                await asyncio.gather(*(app(scope, receive, send) for _ in range(CONCURRENT)))
            whole = min(whole, (time.process_time() - started) / (n // CONCURRENT * CONCURRENT))
        return rows, sum(r[1] for r in rows), whole, await whole_opcodes(app, scope, receive, send)
    finally:
        await services.close()


def opcodes(fn) -> int:
    """Python bytecodes one call of `fn` executes (sys.settrace): what the interpreter does,
    the work in C (msgspec, re2, SQLite) not counted. Unlike time, the host's noise moves it not."""
    count = 0

    def tracer(frame, event, arg):
        nonlocal count
        frame.f_trace_opcodes = True
        count += event == "opcode"
        return tracer

    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(None)
    return count


async def whole_opcodes(app, scope, receive, send) -> int:
    """The bytecodes of one whole request in process, the append's hand-over included (the
    asyncio loop's own are left out: the server runs uvloop, in C)."""
    count = 0

    def tracer(frame, event, arg):
        nonlocal count
        if frame.f_code.co_filename.startswith(ASYNCIO):
            return None
        frame.f_trace_opcodes = True
        count += event == "opcode"
        return tracer

    sys.settrace(tracer)
    try:
        await app(scope, receive, send)
    finally:
        sys.settrace(None)
    return count


async def append_cpu(queue, items) -> float:
    """CPU seconds of the process (event loop and SQLite thread) per append, CONCURRENT at once."""
    best = float("inf")
    for _ in range(REPEATS):
        cpu = time.process_time()
        for _ in range(50):
            await asyncio.gather(*(queue.append(items) for _ in range(CONCURRENT)))
        best = min(best, (time.process_time() - cpu) / (50 * CONCURRENT))
    return best


# The live server cut short after each stage (bench/stages.py --serve-cut N): what each adds to a
# request's CPU, measured on the server as it runs, in the same turns as the raw ASGI app.
CUTS = [
    ("our ASGI entry, body read, answer (cut before any check)", 1),
    ("+ headers, body decoded, key, origin, buckets, backpressure", 2),
    ("+ identity, scrubbing, the event built, the answer, cookies", 3),
    ("+ encoding, queue item, notify (the append stubbed out)", 4),
    ("+ the durable append: the whole request", 5),
]
_ANSWER = b'{"success":true,"accepted":1}'


def serve_cut(level: int, argv: list[str]) -> int:
    """`signal-edge serve` with the ingest path cut short at `level` (5: whole)."""
    import collector.edge.app as edge_app
    from collector.cli import main as cli
    from delivery.sqlite.event_queue import SqliteEventQueue

    async def answered(self, scope, receive, implied):
        await self.read_body(receive, {})
        return 200, _ANSWER, []

    async def accepted(self, scope, headers, source, incoming, implied, sent_at, reset, cors, *rest):
        return 200, _ANSWER, cors

    async def committed(self, *args):
        return None

    async def appended(self, items):
        self._depth += sum(item.events for item in items)

    if level == 1:
        edge_app.Edge.ingest = answered
    elif level == 2:
        edge_app.Edge.accept = accepted
    elif level == 3:
        edge_app.Edge.commit = committed
    elif level == 4:
        SqliteEventQueue.append = appended
    return cli(argv)


def live(seconds: float) -> tuple[float, list[float]]:
    """CPU per request under load over 32 connections, from /proc: the raw ASGI app's, and the
    edge's cut after each of CUTS, all driven in the same turns."""
    from delivery.pinterest.sandbox import Sandbox
    from tests.support import ServerThread

    tmp = Path(tempfile.mkdtemp(prefix="signal-edge-bench-"))
    pinterest = ServerThread(Sandbox()).start()
    raw, edges = Bare("raw"), []
    try:
        for _, level in CUTS:
            edges.append(EdgeServer(tmp, pinterest.url, program=[__file__, "--serve-cut", str(level)]))
        targets = [raw.target("raw"), *(edge.target(f"cut {level}") for edge, (_, level) in zip(edges, CUTS))]
        drive(targets, seconds, int(LOAD_CORE))
        return targets[0].cpu_per_request(), [t.cpu_per_request() for t in targets[1:]]
    finally:
        for edge in edges:
            edge.stop()
        raw.stop()
        pinterest.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def measure(seconds: float = 3.0, n: int = 5000) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="signal-edge-stages-"))
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(SERVER_CORE)})
    try:
        rows, total, whole, whole_ops = asyncio.run(in_process(tmp / "stages.db", n))
    finally:
        os.sched_setaffinity(0, allowed)
        shutil.rmtree(tmp, ignore_errors=True)
    raw_cpu, cut_cpu = live(seconds)
    return {"rows": rows, "total": total, "whole": whole, "whole_ops": whole_ops, "raw_cpu": raw_cpu,
            "cut_cpu": cut_cpu}


def report(r: dict) -> None:
    us = lambda s: f"{s * 1e6:.1f}"  # noqa: E731
    rows = [[name, us(s), "" if ops is None else ops] for name, s, ops in r["rows"]]
    rows += [["sum of the stages", us(r["total"]), sum(ops or 0 for _, _, ops in r["rows"])],
             ["the whole request in process, CPU (EdgeApp, 32 at once)", us(r["whole"]), r["whole_ops"]]]
    print("\nThe ingest path of one tag request (single event), stage by stage, in process")
    print(table(["stage", "us", "bytecodes"], rows))
    rows, before = [["the raw ASGI app (the stack)", us(r["raw_cpu"]), ""]], r["raw_cpu"]
    for (name, _), cpu in zip(CUTS, r["cut_cpu"]):
        rows.append([name, us(cpu), f"+{(cpu - before) * 1e6:.1f}"])
        before = cpu
    print("\nLive, 32 connections, the server's CPU per request (/proc), the edge cut short after each stage")
    print(table(["server", "us", "the stage adds"], rows))


def main() -> None:
    if sys.argv[1:2] == ["--serve-cut"]:
        sys.exit(serve_cut(int(sys.argv[2]), sys.argv[3:]))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="load on the live servers")
    args = parser.parse_args()
    report(measure(args.seconds))


if __name__ == "__main__":
    main()
