"""Delivery throughput, each figure the median of 3 runs.

(a) the pipeline alone, on one core: queued event bytes -> decode -> consent -> Pinterest
    mapping (normalised, hashed identity already in the event) -> request body encoded;
(b) end to end: a real `signal-edge serve` pinned to core 0 drains a queue of N events in
    batches of 1000 to the Pinterest sandbox (its own process on core 1, validating every
    request against Pinterest's schema); events/s from first to last answer. The queue is
    filled as ingestion fills it: once as if every event came in a request of its own, once
    as if they came ten to a request (the tag's batch), which the queue stores as one row.

    .venv/bin/python bench/delivery.py [--events 100000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import LOAD_CORE, ROOT, SERVER_CORE, pinned, table, wait_http

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
ADMIN = "sea_bench_admin_token"


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


def pipeline_rate(payloads: list[bytes]) -> float:
    source = Source(id="src_bench", name="b", pipeline_key="dk", created_at=0, updated_at=0,
                    consent=ConsentSettings(True, []))
    options = Options("retail")
    start = time.perf_counter()
    for at in range(0, len(payloads), 1000):
        events = []
        for raw in payloads[at:at + 1000]:
            ev = event_decoder.decode(raw)
            if consent_allows(ev.consent, source, ["advertising"]):
                events.append(map_event(ev, options).event)
        request_encoder.encode(EventsRequest(data=events))
    return len(payloads) / (time.perf_counter() - start)


async def prefill(db_path: Path, n: int, per_request: int) -> str:
    db = Database(str(db_path))
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
    for at in range(0, n, 5000):
        # Events of one request share their arrival time (and so a queue row).
        await queue.append([QueueItem("int_bench", sample_event(i, now), now + (i // per_request) * 1e-6, 1)
                            for i in range(at, min(n, at + 5000))])
    db.close()
    return integration.id


def end_to_end(n: int, per_request: int, tmp: Path, fake_port: int) -> float:
    db_path = tmp / f"e2e-{time.monotonic_ns()}.db"
    integration = asyncio.run(prefill(db_path, n, per_request))
    port, admin_port = free_port(), free_port()
    env = {"PATH": "/usr/bin:/bin", "SIGNAL_ADMIN_TOKEN": ADMIN, "SIGNAL_SECRET_KEY": SECRET,
           "SIGNAL_PINTEREST_API_BASE": f"http://127.0.0.1:{fake_port}", "SIGNAL_LOG_LEVEL": "warning"}
    started = time.perf_counter()
    proc = pinned(SERVER_CORE, [sys.executable, "-m", "collector", "serve", "--port", str(port), "--admin-port",
                                str(admin_port), "--db", str(db_path)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{admin_port}/healthz")
        admin = httpx.Client(base_url=f"http://127.0.0.1:{admin_port}/v1/admin",
                             headers={"Authorization": f"Bearer {ADMIN}"})
        first = None
        while True:
            counts = admin.get(f"/integrations/{integration}").json()["delivery"]
            if counts["delivered"] and first is None:
                first = (time.perf_counter(), counts["delivered"])
            if counts["delivered"] + counts["dead_lettered"] >= n:
                break
            if time.perf_counter() - started > 300:
                raise RuntimeError(f"not drained after 300 s: {counts}")
            time.sleep(0.05)
        assert counts["dead_lettered"] == 0, counts
        return (n - first[1]) / (time.perf_counter() - first[0])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def measure(events: int = 100_000, runs: int = 3) -> dict:
    os.sched_setaffinity(0, {int(SERVER_CORE)})
    now = time.time()
    payloads = [sample_event(i, now) for i in range(50_000)]
    tune_gc()  # as the server does after start-up
    pipeline = []
    for run in range(runs):
        pipeline.append(pipeline_rate(payloads))
        print(f"  run {run + 1}/{runs} pipeline: {pipeline[-1]:,.0f} events/s", file=sys.stderr, flush=True)
    os.sched_setaffinity(0, {int(SERVER_CORE), int(LOAD_CORE)})

    tmp = Path(tempfile.mkdtemp(prefix="signal-edge-bench-"))
    fake_port = free_port()
    fake = pinned(LOAD_CORE, [sys.executable, str(ROOT / "bench" / "fake_pinterest.py"), "--port", str(fake_port)])
    e2e: dict[int, list[float]] = {1: [], 10: []}  # events per request -> events/s of each run
    try:
        wait_http(f"http://127.0.0.1:{fake_port}/healthz")
        for run in range(runs):
            for per_request, rates in e2e.items():
                rates.append(end_to_end(events, per_request, tmp, fake_port))
                print(f"  run {run + 1}/{runs} end to end, {per_request} per request: {rates[-1]:,.0f} events/s",
                      file=sys.stderr, flush=True)
    finally:
        fake.send_signal(signal.SIGTERM)
        fake.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)  # each run's queues: hundreds of MB

    return {"pipeline_eps": statistics.median(pipeline), "e2e_eps": statistics.median(e2e[1]),
            "e2e_batched_eps": statistics.median(e2e[10]), "events": events, "runs": runs,
            "pipeline_runs": pipeline, "e2e_runs": e2e[1]}


def report(r: dict) -> None:
    print(f"\nDelivery, {r['runs']} runs (medians)")
    print(table(["stage", "events/s"], [
        ["map + hash + encode, 1 core", f"{r['pipeline_eps']:,.0f}"],
        [f"queue -> Pinterest sandbox ({r['events']:,} events, 1 per request)", f"{r['e2e_eps']:,.0f}"],
        [f"queue -> Pinterest sandbox ({r['events']:,} events, 10 per request)", f"{r['e2e_batched_eps']:,.0f}"],
    ]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    report(measure(args.events, args.runs))


if __name__ == "__main__":
    main()
