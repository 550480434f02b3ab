"""Delivery throughput, each figure the median of 3 runs.

(a) the pipeline alone, on one core: queued event bytes -> decode -> consent -> Pinterest
    mapping (normalised, hashed identity already in the event) -> request body encoded. It
    runs in a process of its own on core 0, taking turns of a quarter second with the bare
    Starlette endpoint of bench/ingest.py (driven from core 1), so that its events/s can be
    set against the requests/s the bare endpoint managed on the same host;
(b) end to end: a real `signal-edge serve` pinned to core 0 drains a queue of N events in
    batches of 1000 to the Pinterest sandbox (its own process on core 1, validating every
    request against Pinterest's schema); events/s from first to last answer. The queue is
    filled as ingestion fills it at low traffic, a row per request: once with one event per
    request, once with ten (the tag's batch). Under load the requests of one commit share a
    row, which delivery reads faster. Each run drains a copy of the same file;
(c) memory over a sustained drain: once, a queue of --rss-events (1,000,000) events in rows of
    ten, drained by one server as in (b); its RSS sampled every second and its peak (VmHWM), set
    against the README's budget of 150 MiB.

    .venv/bin/python bench/delivery.py [--events 100000] [--runs 3] [--rss-events 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import LOAD_CORE, ROOT, SERVER_CORE, drain_rate, pinned, rss_kib, table, wait_http
from ingest import Bare
from loadgen import drive

import httpx  # noqa: E402
import msgspec  # noqa: E402

from collector.runtime import tune_gc  # noqa: E402
from delivery.config import ConsentSettings, Integration, PinterestConfig, Source, consent_allows  # noqa: E402
from delivery.events import EdgeEvent, Identity, event_decoder  # noqa: E402
from delivery.pinterest.mapping import Options, map_event  # noqa: E402
from delivery.pinterest.normalize import sha256  # noqa: E402
from delivery.pinterest.payload import EventsRequest, request_encoder  # noqa: E402
from delivery.queue import QueueItem  # noqa: E402
from delivery.secrets import SecretBox  # noqa: E402
from delivery.sqlite.config_store import SqliteConfigStore  # noqa: E402
from delivery.sqlite.db import Database  # noqa: E402
from delivery.sqlite.event_queue import SqliteEventQueue  # noqa: E402
from tests.support import free_port  # noqa: E402

SECRET = "bench-secret-key"
ADMIN = "sea_bench_admin_token_0123456789abcdef"


def sample_event(i: int, now: float) -> bytes:
    return msgspec.json.encode(EdgeEvent(
        message_id=f"evt-{i}", type="track", source_id="src_bench", received_at=now, event_time=now - 1,
        name="Order Completed" if i % 10 == 0 else "Product Added",
        properties={"order_id": f"ORD-{i}", "total": 129.99, "currency": "usd",
                    "products": [{"product_id": "SKU-A", "name": "Widget", "price": 49.99, "quantity": 2},
                                 {"product_id": "SKU-B", "name": "Gadget", "price": 30.01, "quantity": 1}]},
        user_id="user-123", anonymous_id="anon-1", page_url="https://shop.example/checkout?epik=dj0yJnU9QQ",
        ip="203.0.113.50", user_agent="Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0", click_id="dj0yJnU9QQ",
        pin_unauth="4f1e0d4c-0000-4000-8000-000000000000", locale="en-US", consent=["advertising"],
        identity=Identity(em=[sha256("jane.doe@example.com")], ph=[sha256("447700900123")]),
    ))


def map_batch(raws: list[bytes], source: Source, options: Options) -> None:
    """The pipeline for one delivery batch: queued bytes to the request body Pinterest gets."""
    events = []
    for raw in raws:
        ev = event_decoder.decode(raw)
        if consent_allows(ev.consent, source, ["advertising"]):
            events.append(map_event(ev, options).event)
    request_encoder.encode(EventsRequest(data=events))


def pipeline_worker() -> None:
    """`--pipeline-worker`: told a turn's length on stdin, runs batches of 1000 for that long and
    answers "<events> <seconds>"."""
    source = Source(id="src_bench", name="b", pipeline_key="dk", created_at=0, updated_at=0,
                    consent=ConsentSettings(True, []))
    options = Options("retail")
    now = time.time()
    batches = [[sample_event(i, now) for i in range(at, at + 1000)] for at in range(0, 10_000, 1000)]
    for batch in batches:  # warm: the first pass fills caches and the allocator's arenas
        map_batch(batch, source, options)
    tune_gc()  # as the server does after start-up
    print("ready", flush=True)
    for line in sys.stdin:
        turn, events, started = float(line), 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < turn:
            map_batch(batches[events // 1000 % len(batches)], source, options)
            events += 1000
        print(events, elapsed, flush=True)


class PipelineTurns:
    """The pipeline in a process of its own on the server core, taking turns with the bare
    endpoint (bench/loadgen.py): its events/s over the bare endpoint's requests/s, both seen
    on the same host, is a figure the host's speed moves much less than either."""

    name = "mapping pipeline"
    lost = 0

    def __init__(self) -> None:
        self.events, self.seconds, self.proc = 0, 0.0, None

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    async def open(self, connections: int) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            "taskset", "-c", SERVER_CORE, sys.executable, __file__, "--pipeline-worker",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        await self.proc.stdout.readline()  # "ready"

    async def take_turn(self, turn: float) -> None:
        self.proc.stdin.write(f"{turn}\n".encode())
        answer = await self.proc.stdout.readline()
        if not answer:
            raise RuntimeError("the pipeline worker exited; its error is above "
                               "(run `bench/delivery.py --pipeline-worker` to try it alone)")
        events, seconds = answer.split()
        self.events, self.seconds = self.events + int(events), self.seconds + float(seconds)

    async def close(self) -> None:
        self.proc.stdin.close()
        await self.proc.wait()


def pipeline_beside_bare(bare: Bare, seconds: float) -> tuple[float, float]:
    """(pipeline events/s, bare endpoint requests/s), driven in alternating turns."""
    pipeline, target = PipelineTurns(), bare.target("bare")
    drive([pipeline, target], seconds, int(LOAD_CORE))
    return pipeline.rate, target.rps


async def prefill(db_path: Path, n: int, per_request: int) -> str:
    db = Database(str(db_path), synchronous="OFF", commit_window=0)  # filling, not measuring
    db.start()
    store, queue = SqliteConfigStore(db), SqliteEventQueue(db)
    await store.open(SecretBox(SECRET))
    await queue.open()
    now = time.time()
    await store.put_source(Source(id="src_bench", name="b", pipeline_key="dk_bench", created_at=now, updated_at=now), None)
    integration = Integration(id="int_bench", source_id="src_bench", name="P", created_at=now, updated_at=now,
                              config=PinterestConfig("549764982399", "pina_bench", "ct_bench",
                                                     rate_limit_per_second=1000, rate_limit_burst=1000))
    await store.put_integration(integration, None)
    for at in range(0, n, per_request):
        # A request's events are one queue item, appended alone as at low traffic: a row each.
        # (Under load the requests of one commit share a row, which delivery reads faster.)
        count = min(per_request, n - at)
        lines = b"\n".join(sample_event(i, now) for i in range(at, at + count))
        await queue.append([QueueItem("int_bench", lines, now + at * 1e-6, 0, count)])
    db.close()
    return integration.id


def serve(db_path: Path, fake_port: int) -> tuple[subprocess.Popen, httpx.Client]:
    """`signal-edge serve` on `db_path`, pinned to the server core, and an admin client for it."""
    port, admin_port = free_port(), free_port()
    env = {"PATH": "/usr/bin:/bin", "SIGNAL_ADMIN_TOKEN": ADMIN, "SIGNAL_SECRET_KEY": SECRET,
           "SIGNAL_PINTEREST_API_BASE": f"http://127.0.0.1:{fake_port}", "SIGNAL_LOG_LEVEL": "warning"}
    proc = pinned(SERVER_CORE, [sys.executable, "-m", "collector", "serve", "--port", str(port), "--admin-port",
                                str(admin_port), "--db", str(db_path)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{admin_port}/healthz")
    return proc, httpx.Client(base_url=f"http://127.0.0.1:{admin_port}/v1/admin",
                              headers={"Authorization": f"Bearer {ADMIN}"})


def end_to_end(n: int, filled: Path, integration: str, tmp: Path, fake_port: int) -> float:
    db_path = tmp / f"e2e-{time.monotonic_ns()}.db"
    shutil.copyfile(filled, db_path)  # each run drains a copy of the same queue
    proc, admin = serve(db_path, fake_port)
    try:
        return drain_rate(admin, integration, n)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def sustained_drain(n: int, tmp: Path, fake_port: int) -> dict:
    """RSS while one server drains `n` events (taskset execs the server: its pid is the one
    started), sampled every second, and the peak the kernel saw (VmHWM)."""
    db_path = tmp / "sustained.db"
    integration = asyncio.run(prefill(db_path, n, 10))
    proc, admin = serve(db_path, fake_port)
    samples = []
    try:
        started, idle = time.perf_counter(), rss_kib(proc.pid)[0]
        while True:
            counts = admin.get(f"/integrations/{integration}").json()["delivery"]
            samples.append(rss_kib(proc.pid)[0])
            if counts["delivered"] + counts["dead_lettered"] >= n:
                break
            time.sleep(1.0)
        took, peak = time.perf_counter() - started, rss_kib(proc.pid)[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        db_path.unlink(missing_ok=True)
    return {"events": n, "seconds": took, "idle_mib": idle / 1024, "peak_mib": peak / 1024,
            "last_mib": samples[-1] / 1024, "samples_mib": [kib / 1024 for kib in samples]}


def measure(events: int = 100_000, runs: int = 3, seconds: float = 3.0, rss_events: int = 1_000_000) -> dict:
    bare_app = Bare()
    pipeline, bare = [], []
    try:
        for run in range(runs):
            rate, rps = pipeline_beside_bare(bare_app, seconds)
            pipeline.append(rate)
            bare.append(rps)
            print(f"  run {run + 1}/{runs} pipeline: {rate:,.0f} events/s, the bare endpoint in the same turns "
                  f"{rps:,.0f} requests/s", file=sys.stderr, flush=True)
    finally:
        bare_app.stop()

    tmp = Path(tempfile.mkdtemp(prefix="signal-edge-bench-"))
    fake_port = free_port()
    fake = pinned(LOAD_CORE, [sys.executable, str(ROOT / "bench" / "fake_pinterest.py"), "--port", str(fake_port)])
    e2e: dict[int, list[float]] = {1: [], 10: []}  # events per request -> events/s of each run
    try:
        print("  filling the queues ...", file=sys.stderr, flush=True)
        filled = {per_request: tmp / f"filled-{per_request}.db" for per_request in e2e}
        integrations = {k: asyncio.run(prefill(path, events, k)) for k, path in filled.items()}
        wait_http(f"http://127.0.0.1:{fake_port}/healthz")
        for run in range(runs):
            for per_request, rates in e2e.items():
                rates.append(end_to_end(events, filled[per_request], integrations[per_request], tmp, fake_port))
                print(f"  run {run + 1}/{runs} end to end, {per_request} per request: {rates[-1]:,.0f} events/s",
                      file=sys.stderr, flush=True)
        for path in filled.values():
            path.unlink()
        memory = None
        if rss_events:
            print(f"  draining {rss_events:,} events, watching RSS ...", file=sys.stderr, flush=True)
            memory = sustained_drain(rss_events, tmp, fake_port)
    finally:
        fake.send_signal(signal.SIGTERM)
        fake.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)  # each run's queues: hundreds of MB

    return {"pipeline_eps": statistics.median(pipeline), "e2e_eps": statistics.median(e2e[1]),
            "e2e_batched_eps": statistics.median(e2e[10]), "events": events, "runs": runs,
            "pipeline_runs": pipeline, "pipeline_bare_runs": [p / b for p, b in zip(pipeline, bare)],
            "e2e_runs": e2e[1], "memory": memory}


def report(r: dict) -> None:
    print(f"\nDelivery, {r['runs']} runs (medians)")
    print(table(["stage", "events/s"], [
        ["map + hash + encode, 1 core", f"{r['pipeline_eps']:,.0f}"],
        ["  over the bare endpoint's requests/s in the same turns", f"{statistics.median(r['pipeline_bare_runs']):.2f}"],
        [f"queue -> Pinterest sandbox ({r['events']:,} events, 1 per request)", f"{r['e2e_eps']:,.0f}"],
        [f"queue -> Pinterest sandbox ({r['events']:,} events, 10 per request)", f"{r['e2e_batched_eps']:,.0f}"],
    ]))
    if m := r["memory"]:
        print(f"Memory over a drain of {m['events']:,} events ({m['events'] / m['seconds']:,.0f} events/s): RSS "
              f"{m['idle_mib']:.0f} MiB at the start, {m['peak_mib']:.0f} MiB at its peak, {m['last_mib']:.0f} MiB at "
              f"the end (budget 150 MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rss-events", type=int, default=1_000_000, help="events of the sustained drain (0: none)")
    parser.add_argument("--pipeline-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pipeline_worker:
        pipeline_worker()
    else:
        report(measure(args.events, args.runs, rss_events=args.rss_events))


if __name__ == "__main__":
    main()
