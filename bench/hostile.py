"""What the worst a stranger can send costs (issue 24), in three figures:

1. Per field kind, the edge's CPU for a request carrying the corpus's worst event of that kind
   (tests/corpus.py) over its CPU for a request carrying a normal event, measured in the same
   turns: an in-process edge on a real SQLite file, driven through its ASGI entry point, timed
   with the event loop thread's own CPU clock (what a request costs the loop that also answers
   /healthz; the SQLite thread's fsync is not the loop's). Target: at most 20x.
2. The edge's RSS after 10,000 hostile identify requests (each as many addresses as fit an
   event, from a new address each, so each makes a new identity), target under 150 MiB.
3. The database under that flood with identities kept for seconds: its size after the flood,
   after the retention task ran, and after a second flood (flat: SQLite reuses the freed pages).

    .venv/bin/python bench/hostile.py [--runs 3] [--requests 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, median, rss_kib, table, wait_http

import httpx  # noqa: E402

from tests.corpus import KINDS, corpus, normal_event  # noqa: E402
from tests.support import free_port  # noqa: E402

TARGET_RATIO = 20
REPEATS = 5  # each corpus event is sent this often per run; its cheapest is its figure
ADMIN = "sea_bench_admin_token_0123456789abcdef"


def _request(key: str, event: dict) -> bytes:
    return json.dumps({"pipeline_key": key, "batch": [event]}, separators=(",", ":")).encode()


async def _edge(db: Path):
    from collector.edge.app import create_edge_app
    from collector.services import open_services
    from collector.settings import load_settings
    from delivery.config import Source

    settings = load_settings({"db": str(db)}, environ={"SIGNAL_ADMIN_TOKEN": ADMIN})
    services = await open_services(settings)
    source = Source(id="src_bench", name="bench", pipeline_key="dk_bench", created_at=0, updated_at=0,
                    default_country="US", rate_limit_per_second=1e9, rate_limit_burst=10**9,
                    client_rate_limit_per_second=1e9, client_rate_limit_burst=10**9)
    await services.store.put_source(source, None)
    return services, create_edge_app(services)


async def _cpu_of(app, body: bytes) -> float:
    """The event loop thread's CPU for one request, answered (its commit awaited, not counted)."""
    scope = {"type": "http", "method": "POST", "path": "/v1/batch", "query_string": b"", "scheme": "http",
             "headers": [(b"user-agent", b"Mozilla/5.0 bench"), (b"cookie", b"_dfid=bench-anon; _pin_unauth=bench")],
             "client": ("203.0.113.7", 1234)}
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    cpu = time.thread_time()
    await app(scope, receive, send)
    spent = time.thread_time() - cpu
    assert sent[0]["status"] in (200, 400), sent[1]["body"]  # taken, or refused naming the field
    return spent


async def _ratios(tmp: Path) -> dict[str, tuple[float, str]]:
    """Per kind: (worst event's CPU over the normal event's, the worst shape)."""
    services, app = await _edge(tmp / f"hostile-{time.monotonic_ns()}.db")
    try:
        normal = _request("dk_bench", normal_event())
        for _ in range(50):  # warm up caches and the allocator
            await _cpu_of(app, normal)
        worst: dict[str, tuple[float, str]] = {}
        for kind, shape, event in corpus():
            hostile = _request("dk_bench", event)
            costs, norms = [], []
            for _ in range(REPEATS):  # in turns with the normal request: both see the same host
                costs.append(await _cpu_of(app, hostile))
                norms.append(await _cpu_of(app, normal))
            ratio = min(costs) / statistics.median(norms)
            if ratio > worst.get(kind, (0.0, ""))[0]:
                worst[kind] = (ratio, shape)
        return worst
    finally:
        await services.close()


class Server:
    """A `signal-edge serve` process on a fresh SQLite file."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        import subprocess

        self.port, self.admin_port = free_port(), free_port()
        self.db = tmp / f"flood-{time.monotonic_ns()}.db"
        environ = {"PATH": "/usr/bin:/bin", "SIGNAL_ADMIN_TOKEN": ADMIN, "SIGNAL_LOG_LEVEL": "warning",
                   "SIGNAL_SECRET_KEY": "bench-secret-key", **env}
        self.proc = subprocess.Popen([sys.executable, "-m", "collector", "serve", "--port", str(self.port),
                                      "--admin-port", str(self.admin_port), "--db", str(self.db)],
                                     cwd=ROOT, env=environ, stdout=subprocess.DEVNULL)
        wait_http(f"http://127.0.0.1:{self.port}/healthz")
        admin = httpx.Client(base_url=f"http://127.0.0.1:{self.admin_port}/v1/admin",
                             headers={"Authorization": f"Bearer {ADMIN}"})
        self.key = admin.post("/sources", json={"name": "flood"}).json()["pipeline_key"]

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.db.parent.glob(self.db.name + "*") if p.suffix != ".lock")

    def identities(self) -> int:
        import sqlite3

        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT count(*) FROM identities").fetchone()[0]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def _identify(n: int) -> dict:
    """An identify with as many addresses as fit in an event (about 1,000)."""
    return {"type": "identify", "userId": f"flood-{n}",
            "traits": {"email": [f"flood{n}-{i}@example.com" for i in range(1000)], "phone": "+1 415 555 2671"}}


def _flood(server: Server, requests: int, offset: int = 0) -> float:
    """`requests` hostile identifies, each from a new client address (X-Forwarded-For from the
    trusted loopback proxy) and without cookies, so each makes a new identity. Returns seconds."""
    started = time.perf_counter()
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as client:
        for n in range(offset, offset + requests):
            ip = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
            answer = client.post("/v1/batch", content=_request(server.key, _identify(n)),
                                 headers={"X-Forwarded-For": ip, "Content-Type": "text/plain"})
            assert answer.status_code == 200, answer.text
            client.cookies.clear()
            if n % 2000 == 1999:
                print(f"    {n + 1 - offset:,} of {requests:,} requests", file=sys.stderr, flush=True)
    return time.perf_counter() - started


def flood(tmp: Path, requests: int) -> dict:
    retention_s, every_s = 20.0, 2.0
    server = Server(tmp, {"SIGNAL_IDENTITY_RETENTION_DAYS": str(retention_s / 86400),
                          "SIGNAL_RETENTION_INTERVAL": str(every_s)})
    try:
        seconds = _flood(server, requests)
        rss, peak = rss_kib(server.proc.pid)
        after_flood = server.size(), server.identities()
        time.sleep(retention_s + 3 * every_s)  # every identity of the flood is past its retention
        after_retention = server.size(), server.identities()
        _flood(server, requests, offset=requests)
        time.sleep(retention_s + 3 * every_s)
        after_second = server.size(), server.identities()
    finally:
        server.stop()
    return {"requests": requests, "seconds": seconds, "rss_mib": rss / 1024, "peak_mib": peak / 1024,
            "db_after_flood": after_flood, "db_after_retention": after_retention, "db_after_second": after_second}


def measure(runs: int = 3, requests: int = 10_000) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="signal-edge-hostile-"))
    try:
        per_run = []
        for run in range(runs):
            per_run.append(asyncio.run(_ratios(tmp)))
            print(f"  run {run + 1}/{runs}: worst kind {max(per_run[-1].values())[0]:.1f}x", file=sys.stderr,
                  flush=True)
        print(f"  {requests:,} hostile identify requests ...", file=sys.stderr, flush=True)
        flooded = flood(tmp, requests)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    kinds = {kind: [run[kind][0] for run in per_run] for kind in KINDS}
    shapes = {kind: max(per_run, key=lambda run: run[kind][0])[kind][1] for kind in KINDS}
    return {"kinds": kinds, "shapes": shapes, "worst_runs": [max(run.values())[0] for run in per_run], **flooded}


def report(r: dict) -> None:
    print(f"\nHostile input: the worst corpus event of each kind, the edge loop's CPU per request over a normal "
          f"event's (medians of {len(r['worst_runs'])} runs; target <= {TARGET_RATIO}x)")
    print(table(["field kind", "worst / normal", "worst shape"],
                [[kind, f"{median(runs):.1f}x", r["shapes"][kind]] for kind, runs in r["kinds"].items()]))
    print(f"{r['requests']:,} hostile identify requests from rotating addresses in {r['seconds']:.0f} s: "
          f"edge RSS {r['rss_mib']:.1f} MiB (peak {r['peak_mib']:.1f} MiB; target < 150 MiB)")
    shown = lambda n: f"{n[0] / 2**20:.1f} MiB ({n[1]:,} identities)"  # noqa: E731
    print(f"database with identities kept 20 s: {shown(r['db_after_flood'])} after the flood, "
          f"{shown(r['db_after_retention'])} once they expired, {shown(r['db_after_second'])} after a second "
          "flood and its expiry (freed pages are reused: the file stays flat)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=10_000)
    args = parser.parse_args()
    report(measure(args.runs, args.requests))


if __name__ == "__main__":
    main()
