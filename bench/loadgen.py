"""An HTTP/1.1 load generator that drives several servers in turns, so that their ratios do not
depend on when each was measured.

On the shared development VM the same server's throughput drifts by 20-40% from one 5-second
run to the next, so cases measured one after the other compare different moments of the host
more than they compare the code. Here every target keeps its connections open and the targets
are driven round-robin in turns of a quarter second until each has had its time: all of them
see the same host. Driving one server as two targets (an A/A run) gives ratios within 2% of 1
on a calm host, within 7% on a busy one.

Each connection has one request in flight, as with wrk. A turn sends on every connection of
its target, stops sending after `turn` seconds, and ends when the last answer is in; the answers
and the turn's duration are the target's.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time

import uvloop


class Target:
    """One server to drive with one request, and what it answered."""

    def __init__(self, name: str, port: int, request: bytes, pid: int | None = None) -> None:
        self.name, self.port, self.request = name, port, request
        self.pid = pid  # the server's process: its CPU time in this target's turns is counted
        self.server_cpu = 0.0
        self.answers = self.non2xx = self.lost = 0
        self.turns = 0
        self.seconds = 0.0  # time in its turns, first request sent to last answer in
        self.client_cpu = 0.0  # the load generator's own CPU time during those turns
        self.latencies: list[float] = []
        self.driving = False
        self.in_flight = 0  # connections waiting for an answer
        self.idle: asyncio.Future | None = None  # resolved when a turn's last answer is in
        self.conns: list[_Connection] = []

    @property
    def rps(self) -> float:
        return self.answers / self.seconds

    def percentile(self, p: float) -> float:
        """The latency below which p% of the answers came (p in steps of 0.1: 50, 99, 99.9)."""
        return statistics.quantiles(self.latencies, n=1000)[round(p * 10) - 1]

    def cpu_per_request(self) -> float:
        """The server's CPU seconds (user + system, all its threads) per answer in its turns."""
        return self.server_cpu / self.answers

    async def open(self, connections: int) -> None:
        loop = asyncio.get_running_loop()
        self.conns = [(await loop.create_connection(lambda: _Connection(self), "127.0.0.1", self.port))[1]
                      for _ in range(connections)]

    async def take_turn(self, turn: float) -> None:
        """Send on every connection for `turn` seconds; the turn ends when the last answer is in."""
        server_cpu = process_cpu(self.pid) if self.pid else 0.0
        started, cpu = time.perf_counter(), time.thread_time()
        self.driving = True
        for conn in self.conns:
            conn.send()
        await asyncio.sleep(turn)
        self.driving = False
        self.idle = asyncio.get_running_loop().create_future()
        if self.in_flight:
            await self.idle
        self.turns += 1
        self.seconds += time.perf_counter() - started
        self.client_cpu += time.thread_time() - cpu
        if self.pid:
            self.server_cpu += process_cpu(self.pid) - server_cpu

    async def close(self) -> None:
        for conn in self.conns:
            conn.transport.close()

    def settled(self) -> None:
        """A connection has nothing in flight any more."""
        self.in_flight -= 1
        if not self.in_flight and self.idle is not None and not self.idle.done():
            self.idle.set_result(None)


_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process, all its threads, from /proc."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def post(body: bytes, cookie: str = "", path: str = "/v1/batch") -> bytes:
    """The request the tag sends: a text/plain POST (no CORS preflight) with the browser's cookies."""
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
            "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/131.0 Safari/537.36\r\nCookie: {cookie}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


class _Connection(asyncio.Protocol):
    def __init__(self, target: Target) -> None:
        self.target = target
        self.buffer = b""
        self.sent_at = 0.0
        self.waiting = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiting:  # counted, and the turn still ends
            self.waiting = False
            self.target.lost += 1
            self.target.settled()

    def send(self) -> None:
        if self.transport.is_closing():
            return
        if not self.waiting:
            self.waiting = True
            self.target.in_flight += 1
        self.sent_at = time.perf_counter()
        self.transport.write(self.target.request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        while (end := buffer.find(b"\r\n\r\n")) >= 0:
            head = buffer[:end].lower()
            if b"transfer-encoding: chunked" in head:
                raise ValueError(f"{self.target.name} answered chunked; the load generator reads Content-Length only")
            start = head.find(b"\r\ncontent-length:")
            length = 0
            if start >= 0:
                stop = head.find(b"\r\n", start + 2)
                length = int(head[start + 17:stop if stop >= 0 else len(head)])
            if len(buffer) < end + 4 + length:
                break
            buffer = buffer[end + 4 + length:]
            self.answered(head[9:12])
        self.buffer = buffer

    def answered(self, status: bytes) -> None:
        target = self.target
        target.answers += 1
        if status[:1] != b"2":
            target.non2xx += 1
        target.latencies.append(time.perf_counter() - self.sent_at)
        if target.driving:
            self.send()
        else:
            self.waiting = False
            target.settled()


async def _drive(targets: list, seconds: float, turn: float, connections: int) -> None:
    """Round-robin turns. A target is a Target, or anything with the same `open`, `take_turn`
    and `close` (bench/delivery.py runs its pipeline in turns beside the bare endpoint)."""
    for target in targets:
        await target.open(connections)
    try:
        for _ in range(max(1, round(seconds / turn))):
            for target in targets:
                await target.take_turn(turn)
    finally:
        for target in targets:
            await target.close()


def drive(targets: list, seconds: float, core: int, turn: float = 0.25, connections: int = 32) -> None:
    """Drive `targets` in turns from `core` until each has had about `seconds` of load."""
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        uvloop.run(_drive(targets, seconds, turn, connections))
    finally:
        os.sched_setaffinity(0, allowed)
    for target in targets:
        if target.lost:
            raise RuntimeError(f"{target.name} closed {target.lost} connections with a request in flight")
