"""PostgreSQL's figures, each the median of 3 runs, against a throwaway PostgreSQL cluster:

(a) ingestion on PostgreSQL over ingestion on SQLite: two edges taking one event per request,
    each on core 0 with its database (PostgreSQL's server runs on core 0 too: its work is the
    server's), driven in alternating turns from core 1 by bench/loadgen.py;
(b) `--workers 2` over `--workers 1` on PostgreSQL, as the servers' CPU-seconds per 100k events
    accepted (every process of each server, from /proc), driven in turns: what a worker more
    costs per event. Beside it, in the same turns, the same ratio for a control with the same
    shape and none of signal-edge (bench/bare_pg_app.py: bare_app.py's endpoint answering after a
    2 ms group commit of one INSERT, its processes on SO_REUSEPORT sockets): what splitting one
    load over two processes that wait on PostgreSQL costs on this host anyway;
(c) end to end: a backlog in PostgreSQL drained to the Pinterest sandbox (its own process on
    core 1) by one node, then by two, events/s from first answer to last.

    .venv/bin/python bench/cluster.py [--events 50000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import LOAD_CORE, ROOT, SERVER_CORE, drain_rate, pinned, rss_kib, table, tree_cpu_seconds, wait_http
from ingest import ADMIN, Edge, body
from loadgen import Target, drive, post

import httpx  # noqa: E402

from delivery.config import Integration, PinterestConfig, Source  # noqa: E402
from delivery.pinterest.sandbox import Sandbox  # noqa: E402
from delivery.postgres.config_store import PgConfigStore  # noqa: E402
from delivery.postgres.db import PgDatabase  # noqa: E402
from delivery.postgres.event_queue import PgEventQueue  # noqa: E402
from delivery.queue import QueueItem  # noqa: E402
from delivery.secrets import SecretBox  # noqa: E402
from tests.pg import PostgresServer  # noqa: E402
from tests.support import ServerThread, free_port  # noqa: E402

SECRET = "bench-secret-key"


def _sample_event():
    """bench/delivery.py's event (that file shares its name with the delivery package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_delivery", Path(__file__).with_name("delivery.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.sample_event


sample_event = _sample_event()


def target(name: str, edge: Edge) -> Target:
    return edge.target(name)


def drive_accepted(targets: list[Target], seconds: float) -> None:
    """drive(), and every answer was a 2xx: a refused request is no event to measure."""
    drive(targets, seconds, int(LOAD_CORE))
    for t in targets:
        if t.non2xx:
            raise RuntimeError(f"{t.name}: {t.non2xx} of {t.answers} requests were refused")


def ingest_over_sqlite(pg: PostgresServer, tmp: Path, pinterest: str, seconds: float) -> tuple[float, float, float]:
    """(PostgreSQL events/s, SQLite events/s, their ratio) in one run of turns."""
    sqlite_edge, pg_edge = Edge(tmp, pinterest), Edge(tmp, pinterest, pg.create_database())
    try:
        targets = [target("sqlite", sqlite_edge), target("postgres", pg_edge)]
        drive_accepted(targets, seconds)
        return targets[1].rps, targets[0].rps, targets[1].rps / targets[0].rps
    finally:
        sqlite_edge.stop()
        pg_edge.stop()


def serving(who: Callable[[], str], workers: int, timeout: float = 30) -> None:
    """Until `workers` processes have answered `who()` (a new connection each time: the kernel
    spreads them), so that no start-up work falls into the measurement."""
    seen, deadline = set(), time.monotonic() + timeout
    while len(seen) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(seen)} of {workers} workers answered")
        seen.add(who())
    time.sleep(1.0)  # and their first delivery attempt has parked


def node_name(edge: Edge) -> str:
    metrics = httpx.get(f"http://127.0.0.1:{edge.admin_port}/metrics").text
    return metrics.split('signal_edge_node_info{node="', 1)[1].split('"', 1)[0]


class BarePg:
    """bench/bare_pg_app.py with `workers` processes: the control for signal-edge's --workers."""

    def __init__(self, url: str, workers: int) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare_pg_app.py"), "--port", str(self.port),
                                      "--database-url", url, "--workers", str(workers)], cwd=ROOT)
        wait_http(f"http://127.0.0.1:{self.port}/pid")
        serving(lambda: httpx.get(f"http://127.0.0.1:{self.port}/pid").text, workers)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def workers_cost(pg: PostgresServer, tmp: Path, pinterest: str, seconds: float) -> dict:
    """CPU-seconds per 100k events with 1 worker and with 2 (every process of each server, from
    /proc), and the same ratio for the control (bare_pg_app.py), all driven in the same turns."""
    edges = [Edge(tmp, pinterest, pg.create_database(), core=None, workers=n) for n in (1, 2)]
    controls = []
    try:
        for n, edge in zip((1, 2), edges):
            serving(lambda: node_name(edge), n)
        controls = [BarePg(pg.create_database(), n) for n in (1, 2)]
        servers = edges + controls
        targets = [target(f"{n} worker(s)", edge) for n, edge in zip((1, 2), edges)]
        targets += [Target(f"control, {n} worker(s)", c.port, post(body("dk_control", 1).encode()))
                    for n, c in zip((1, 2), controls)]
        before = [tree_cpu_seconds(server.proc.pid) for server in servers]
        accepted_before = [edge.accepted() for edge in edges]
        drive_accepted(targets, seconds)
        time.sleep(0.5)  # the last commits
        cpu = [tree_cpu_seconds(server.proc.pid) - b for server, b in zip(servers, before)]
        events = [edge.accepted() - a for edge, a in zip(edges, accepted_before)] + [t.answers for t in targets[2:]]
        one, two, control_one, control_two = (c / n * 100_000 for c, n in zip(cpu, events))
        return {"one": one, "two": two, "ratio": two / one, "control": control_two / control_one}
    finally:
        for server in edges + controls:
            server.stop()


async def prefill(url: str, events: int) -> str:
    """A source, a paused integration and `events` queued events (a request's worth per item),
    written straight into a fresh database; returns the integration's id."""
    db = PgDatabase(url, pool_size=2)
    await db.start()
    store, queue = PgConfigStore(db, "bench-prefill"), PgEventQueue(db, "bench-prefill")
    await store.open(SecretBox(SECRET))
    await queue.open()
    now = time.time()
    await store.put_source(Source(id="src_bench", name="b", pipeline_key="dk_bench", created_at=now, updated_at=now),
                           None)
    integration = Integration(id="int_bench", source_id="src_bench", name="P", created_at=now, updated_at=now,
                              paused=True, config=PinterestConfig("549764982399", "pina_bench", "ct_bench",
                                                                  rate_limit_per_second=1000, rate_limit_burst=1000))
    await store.put_integration(integration, None)
    for at in range(0, events, 1000):
        count = min(1000, events - at)
        lines = b"\n".join(sample_event(i, now) for i in range(at, at + count))
        await queue.append([QueueItem(integration.id, lines, now, 0, count)])
    await queue.close()
    await db.close()
    return integration.id


def node(url: str, fake_port: int) -> tuple[subprocess.Popen, int]:
    port, admin_port = free_port(), free_port()
    env = {"PATH": "/usr/bin:/bin", "SIGNAL_ADMIN_TOKEN": ADMIN, "SIGNAL_SECRET_KEY": SECRET,
           "SIGNAL_PINTEREST_API_BASE": f"http://127.0.0.1:{fake_port}", "SIGNAL_LOG_LEVEL": "warning"}
    proc = subprocess.Popen([sys.executable, "-m", "collector", "serve", "--port", str(port), "--admin-port",
                             str(admin_port), "--database-url", url], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{admin_port}/healthz")
    return proc, admin_port


def drain(url: str, integration: str, events: int, nodes: int, fake_port: int) -> tuple[float, float]:
    """Events/s from the first delivered to the last, with `nodes` nodes delivering, and the
    highest peak RSS (MiB) of those nodes."""
    running = [node(url, fake_port) for _ in range(nodes)]
    admin = httpx.Client(base_url=f"http://127.0.0.1:{running[0][1]}/v1/admin",
                         headers={"Authorization": f"Bearer {ADMIN}"})
    try:
        admin.patch(f"/integrations/{integration}", json={"paused": False})
        rate = drain_rate(admin, integration, events)
        return rate, max(rss_kib(proc.pid)[1] for proc, _ in running) / 1024
    finally:
        for proc, _ in running:
            proc.send_signal(signal.SIGTERM)
        for proc, _ in running:
            proc.wait(30)


def measure(events: int = 50_000, runs: int = 3, seconds: float = 4.0) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="signal-edge-bench-pg-"))
    pg = PostgresServer(core=SERVER_CORE).start()
    pinterest = ServerThread(Sandbox()).start()  # no tokens: ingestion's integration parks on a 401
    fake_port = free_port()
    fake = pinned(LOAD_CORE, [sys.executable, str(ROOT / "bench" / "fake_pinterest.py"), "--port", str(fake_port)])
    ratios, workers, e2e, peaks = [], [], {1: [], 2: []}, []
    try:
        for run in range(runs):
            pg_eps, sqlite_eps, ratio = ingest_over_sqlite(pg, tmp, pinterest.url, seconds)
            ratios.append((pg_eps, sqlite_eps, ratio))
            cost = workers_cost(pg, tmp, pinterest.url, seconds)
            workers.append(cost)
            print(f"  run {run + 1}/{runs}: ingest PostgreSQL {pg_eps:,.0f} / SQLite {sqlite_eps:,.0f} events/s = "
                  f"{ratio:.2f}; CPU-s per 100k events, 1 worker {cost['one']:.1f}, 2 workers {cost['two']:.1f} "
                  f"({cost['ratio']:.2f}; the control {cost['control']:.2f})", file=sys.stderr, flush=True)
        wait_http(f"http://127.0.0.1:{fake_port}/healthz")
        for run in range(runs):
            for nodes, rates in e2e.items():
                url = pg.create_database()
                integration = asyncio.run(prefill(url, events))
                rate, peak = drain(url, integration, events, nodes, fake_port)
                rates.append(rate)
                peaks.append(peak)
                print(f"  run {run + 1}/{runs} end to end, {nodes} node(s): {rates[-1]:,.0f} events/s",
                      file=sys.stderr, flush=True)
    finally:
        fake.send_signal(signal.SIGTERM)
        fake.wait(10)
        pinterest.stop()
        pg.destroy()
    return {"runs": runs, "events": events,
            "ingest_ratios": [r[2] for r in ratios], "pg_ingest": [r[0] for r in ratios],
            "sqlite_ingest": [r[1] for r in ratios], "workers_ratios": [w["ratio"] for w in workers],
            "cpu_one": [w["one"] for w in workers], "cpu_two": [w["two"] for w in workers],
            "control_ratios": [w["control"] for w in workers],
            "over_control": [w["ratio"] / w["control"] for w in workers],
            "e2e_one": e2e[1], "e2e_two": e2e[2], "drain_peak_rss_mib": max(peaks)}


def report(r: dict) -> None:
    m = statistics.median
    print(f"\nPostgreSQL, {r['runs']} runs (medians)")
    print(table(["figure", "value"], [
        ["ingest, 1 event/request, PostgreSQL (events/s)", f"{m(r['pg_ingest']):,.0f}"],
        ["ingest, 1 event/request, SQLite, same turns (events/s)", f"{m(r['sqlite_ingest']):,.0f}"],
        ["  PostgreSQL over SQLite", f"{m(r['ingest_ratios']):.2f}"],
        ["server CPU-s per 100k events, --workers 1", f"{m(r['cpu_one']):.1f}"],
        ["server CPU-s per 100k events, --workers 2", f"{m(r['cpu_two']):.1f}"],
        ["  2 workers over 1", f"{m(r['workers_ratios']):.2f}"],
        ["  the same for the control (bare_pg_app.py)", f"{m(r['control_ratios']):.2f}"],
        [f"end to end, {r['events']:,} events, 1 node (events/s)", f"{m(r['e2e_one']):,.0f}"],
        [f"end to end, {r['events']:,} events, 2 nodes (events/s)", f"{m(r['e2e_two']):,.0f}"],
        ["  a node's peak RSS while draining (MiB)", f"{r['drain_peak_rss_mib']:.0f}"],
    ]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    report(measure(args.events, args.runs))


if __name__ == "__main__":
    main()
