"""The control for `--workers`: bare_app.py's endpoint that answers only once its request is
committed to PostgreSQL, in a group commit that starts at most every 2 ms on one kept
connection: the shape of signal-edge's appends, without signal-edge. `--workers N` runs N
processes on SO_REUSEPORT sockets, as `signal-edge serve --workers` does (uvicorn's own
--workers shares one listening socket, and kept-alive connections then mostly land on one
process, which measures one process twice).

    python bench/bare_pg_app.py --port 9000 --database-url postgresql://... [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import asyncpg
import uvicorn
from bare_app import decoder
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

COMMIT_WINDOW = 0.002  # as delivery/postgres/event_queue.py
TABLE = "CREATE TABLE IF NOT EXISTS bare_queue (id bigserial PRIMARY KEY, payload bytea NOT NULL)"


class GroupCommit:
    """Requests waiting for the same commit share one INSERT."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: asyncpg.Connection | None = None
        self.pending: list[tuple[bytes, asyncio.Future]] = []
        self.flusher: asyncio.Task | None = None
        self.last = 0.0

    async def store(self, body: bytes) -> None:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((body, future))
        if self.flusher is None or self.flusher.done():
            self.flusher = asyncio.create_task(self.flush())
        await future

    async def flush(self) -> None:
        while self.pending:
            wait = self.last + COMMIT_WINDOW - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self.last = time.monotonic()
            batch, self.pending = self.pending, []
            try:
                if self.conn is None:
                    self.conn = await asyncpg.connect(self.url)
                await self.conn.execute("INSERT INTO bare_queue (payload) SELECT unnest($1::bytea[])",
                                        [body for body, _ in batch])
                outcome = None
            except Exception as exc:
                outcome = exc
            for _, future in batch:
                future.set_result(None) if outcome is None else future.set_exception(outcome)


def create_app(url: str) -> Starlette:
    commits = GroupCommit(url)

    async def ingest(request: Request) -> Response:
        body = await request.body()
        decoder.decode(body)
        await commits.store(body)
        return Response(status_code=204)

    async def pid(request: Request) -> Response:
        return PlainTextResponse(str(os.getpid()))

    return Starlette(routes=[Route("/v1/batch", ingest, methods=["POST"]), Route("/pid", pid)])


def serve(port: int, url: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP: asyncio sets NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    config = uvicorn.Config(create_app(url), log_level="warning", access_log=False, lifespan="off",
                            server_header=False)
    uvicorn.Server(config).run(sockets=[sock])


async def create_table(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(TABLE)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    asyncio.run(create_table(args.database_url))
    if args.workers == 1:
        serve(args.port, args.database_url)
        return
    command = [sys.executable, __file__, "--port", str(args.port), "--database-url", args.database_url]
    procs = [subprocess.Popen(command) for _ in range(args.workers)]
    signal.signal(signal.SIGTERM, lambda *_: [proc.terminate() for proc in procs])
    for proc in procs:
        proc.wait()


if __name__ == "__main__":
    main()
