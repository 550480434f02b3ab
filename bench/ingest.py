"""Ingestion on one core, durable (each event committed to SQLite before the 200), side by side
with a bare Starlette + msgspec endpoint that answers 204.

The servers run pinned to core 0 and bench/loadgen.py drives them from core 1, 32 connections
each, taking turns of a quarter second: the bare endpoint, an edge taking one event per request
and an edge taking ten, so that the three see the same host (on the shared VM, runs made one
after another differed by more than the ratios' margins). Events go to /v1/batch with the
browser's cookies. Delivery is parked (the integration's Pinterest answers 401, so the worker
pauses) so that only ingestion is measured; bench/delivery.py measures the other half. Each run
starts fresh edges; each figure is the median of 3 runs, a ratio taken within each run.

    .venv/bin/python bench/ingest.py [--seconds 5] [--connections 32] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import LOAD_CORE, ROOT, SERVER_CORE, median, pinned, rss_kib, table, wait_http
from loadgen import Target, drive, post

import httpx  # noqa: E402

from delivery.pinterest.sandbox import Sandbox  # noqa: E402
from tests.support import ServerThread, free_port  # noqa: E402

ADMIN = "sea_bench_admin_token_0123456789abcdef"
EVENT = {
    "type": "track", "event": "Product Added", "messageId": "3f1d2a9e-5b7c-4e21-9a0f-2c8d6e4b1a77",
    "properties": {"product_id": "SKU-A", "name": "Widget", "price": 49.99, "quantity": 1, "currency": "USD"},
    "timestamp": "2026-11-29T10:00:00.000Z",
    "context": {"page": {"url": "https://shop.example/products/widget", "path": "/products/widget",
                         "referrer": "https://www.pinterest.com/", "title": "Widget", "search": ""},
                "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0", "locale": "en-US"},
}


def body(key: str, events: int) -> str:
    """What the tag sends (JSON.stringify: no spaces)."""
    return json.dumps({"pipeline_key": key, "sentAt": "2026-11-29T10:00:00.100Z", "batch": [EVENT] * events},
                      separators=(",", ":"))


class Bare:
    """The bare Starlette + msgspec endpoint (bench/bare_app.py) on core 0: the baseline."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = pinned(SERVER_CORE, [sys.executable, str(ROOT / "bench" / "bare_app.py"), "--port", str(self.port)])
        try:
            wait_http(f"http://127.0.0.1:{self.port}/")
        except BaseException:
            self.stop()
            raise

    def target(self, name: str) -> Target:
        return Target(name, self.port, post(body("dk_bare", 1).encode()))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


class Edge:
    """A `signal-edge serve` with a fresh database (a SQLite file, or `database_url`), a source and
    a parked integration; pinned to core 0 unless `core` is None."""

    def __init__(self, tmp: Path, pinterest: str, database_url: str | None = None, core: str | None = SERVER_CORE,
                 workers: int = 1) -> None:
        self.port, admin_port = free_port(), free_port()
        self.admin_port = admin_port
        env = {"PATH": "/usr/bin:/bin", "SIGNAL_ADMIN_TOKEN": ADMIN, "SIGNAL_PINTEREST_API_BASE": pinterest,
               "SIGNAL_LOG_LEVEL": "warning", "SIGNAL_AUTH_RECHECK": "3600", "SIGNAL_SECRET_KEY": "bench-secret-key"}
        db = tmp / f"bench-{time.monotonic_ns()}.db"
        database = ["--database-url", database_url] if database_url else ["--db", str(db)]
        if workers > 1:
            database += ["--workers", str(workers)]
        self.log = db.with_suffix(".log")  # the parked integration's warning goes here, not into the table
        argv = [sys.executable, "-m", "collector", "serve", "--port", str(self.port), "--admin-port", str(admin_port),
                *database]
        with self.log.open("wb") as log:
            self.proc = (pinned(core, argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT) if core
                         else subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        wait_http(f"http://127.0.0.1:{self.port}/healthz")
        self.admin = httpx.Client(base_url=f"http://127.0.0.1:{admin_port}/v1/admin",
                                  headers={"Authorization": f"Bearer {ADMIN}"})
        # One load generator is one client: lift the per-client limit with the source's.
        source = self.admin.post("/sources", json={
            "name": "bench", "rate_limit_per_second": 1_000_000, "rate_limit_burst": 1_000_000,
            "client_rate_limit_per_second": 1_000_000, "client_rate_limit_burst": 1_000_000}).json()
        self.key = source["pipeline_key"]
        self.integration = self.admin.post("/integrations", json={
            "source_id": source["id"], "vendor": "pinterest", "name": "P",
            "config": {"ad_account_id": "1", "access_token": "pina_x", "conversion_token": "ct_x"}}).json()["id"]
        first = httpx.post(f"http://127.0.0.1:{self.port}/v1/batch", content=body(self.key, 1))
        self.cookie = "; ".join(f"{k}={v}" for k, v in first.cookies.items())
        time.sleep(1.0)  # the first delivery attempt gets its 401 and the worker parks

    def accepted(self) -> int:
        return self.admin.get(f"/integrations/{self.integration}").json()["delivery"]["accepted"]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def measure(seconds: int = 5, connections: int = 32, runs: int = 3) -> dict:
    """Each run: fresh edges for the two cases beside the bare endpoint, all three driven in turns
    until each has had `seconds` of load. Returns the table rows and the summary figures."""
    tmp = Path(tempfile.mkdtemp(prefix="signal-edge-bench-"))
    pinterest = ServerThread(Sandbox()).start()  # no tokens: every call is a 401, delivery parks
    bare = Bare()
    cases = [("bare Starlette + msgspec, 204", 1), ("signal-edge, 1 event/request", 1),
             ("signal-edge, 10 events/request", 10)]
    results: dict[str, list[dict]] = {name: [] for name, _ in cases}
    idle_rss = peak_rss = accepted = answered = 0
    try:
        for run in range(runs):
            edges = [Edge(tmp, pinterest.url) for _ in cases[1:]]
            try:
                idle_rss = idle_rss or rss_kib(edges[0].proc.pid)[0]
                targets = [bare.target(cases[0][0])]
                targets += [Target(name, edge.port, post(body(edge.key, events).encode(), edge.cookie))
                            for (name, events), edge in zip(cases[1:], edges)]
                drive(targets, seconds, int(LOAD_CORE), connections=connections)
                for (name, events), target in zip(cases, targets):
                    results[name].append({"eps": target.rps * events, "rps": target.rps, "p50": target.percentile(50),
                                          "p99": target.percentile(99), "non2xx": target.non2xx,
                                          "client": target.client_cpu / target.seconds})
                for (_, events), target, edge in zip(cases[1:], targets[1:], edges):
                    peak_rss = max(peak_rss, rss_kib(edge.proc.pid)[1])
                    accepted += edge.accepted() - 1  # less the request that fetched the cookies
                    answered += (target.answers - target.non2xx) * events
            finally:
                for edge in edges:
                    edge.stop()
            print(f"  run {run + 1}/{runs}: " + ", ".join(
                f"{name} {results[name][-1]['eps']:,.0f} events/s" for name, _ in cases), file=sys.stderr, flush=True)
    finally:
        bare.stop()
        pinterest.stop()
        shutil.rmtree(tmp, ignore_errors=True)  # each run's queues: hundreds of MB

    rows = []
    for name, _ in cases:
        rs = results[name]
        rows.append([name, f"{median([r['eps'] for r in rs]):,.0f}", f"{median([r['rps'] for r in rs]):,.0f}",
                     f"{median([r['p50'] for r in rs]) * 1000:.2f}", f"{median([r['p99'] for r in rs]) * 1000:.2f}",
                     sum(r["non2xx"] for r in rs)])
    eps = {name: median([r["eps"] for r in results[name]]) for name, _ in cases}
    single, batch, bare_name = cases[1][0], cases[2][0], cases[0][0]
    per_run = lambda a, b: [x["eps"] / y["eps"] for x, y in zip(results[a], results[b])]  # noqa: E731
    return {
        "title": f"Ingest, servers on 1 core, {connections} connections each, turns of 0.25 s, "
                 f"{seconds}s each x {runs} runs (medians)",
        "rows": rows,
        "ratios_bare": per_run(single, bare_name),
        "ratios_batch": per_run(batch, single),
        "ratio_bare": median(per_run(single, bare_name)),
        "ratio_batch": median(per_run(batch, single)),
        "single_eps": eps[single], "batch_eps": eps[batch], "bare_eps": eps[bare_name],
        "single_p99s_ms": [r["p99"] * 1000 for r in results[single]],
        "bare_runs": [r["eps"] for r in results[bare_name]],
        "client_busy": max(r["client"] for rs in results.values() for r in rs),
        "accepted": accepted, "answered": answered,
        "idle_rss_mib": idle_rss / 1024, "peak_rss_mib": peak_rss / 1024,
    }


def report(r: dict) -> None:
    print(f"\n{r['title']}")
    print(table(["endpoint", "events/s", "requests/s", "p50 ms", "p99 ms", "non-2xx"], r["rows"]))
    runs = lambda values: ", ".join(f"{v:.2f}" for v in values)  # noqa: E731
    print(f"ratio ours/bare (1 event/request), median of the runs: {r['ratio_bare']:.2f} ({runs(r['ratios_bare'])})")
    print(f"ratio 10-event/1-event batches (events/s), median: {r['ratio_batch']:.2f} ({runs(r['ratios_batch'])})")
    print(f"durable: {r['accepted']:,} events committed to the queue ({r['answered']:,} answered 200)")
    print(f"load generator: at most {r['client_busy']:.0%} of its core busy in a turn (near 100% it would be the limit)")
    print(f"edge RSS: {r['idle_rss_mib']:.1f} MiB idle, {r['peak_rss_mib']:.1f} MiB peak under load")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    report(measure(args.seconds, args.connections, args.runs))


if __name__ == "__main__":
    main()
