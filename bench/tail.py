"""Ingestion's tail while delivery drains a backlog on the same node.

One `signal-edge serve` on core 0, on a copy of a SQLite file holding a backlog of --backlog
events (bench/delivery.py's event, in rows of 100 as commits under load leave them), delivering
to a lean fake Pinterest (bench/fake_pinterest.py --lean on core 1: it answers each batch as
Pinterest does without the sandbox's schema check, which would load the load generator's core).
bench/loadgen.py drives it with the tag's single-event request (bench/ingest.py) in phases of
--seconds, alternately with its integration paused (`PATCH {"paused": true}`, once no event has
been delivered for half a second) and draining (resumed, once the next batch is delivered),
over 8 and over 32 connections. The two kinds of phase see the same node, file and host; their
latencies side by side say what the drain on the same event loop does to ingestion's tail.
Beside them: the events delivered during the draining phases (the backlog must outlast the
run) and the process's CPU per request (the drain's included), and the event loop's largest
lag in each run (/metrics: a 50 ms timer's lateness).

    .venv/bin/python bench/tail.py [--backlog 2000000] [--seconds 1] [--rounds 4] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import LOAD_CORE, ROOT, SERVER_CORE, median, pinned, table, wait_http
from ingest import ADMIN, body, tag_request
from loadgen import Target, drive

import httpx  # noqa: E402

from delivery.config import Integration, PinterestConfig, Source  # noqa: E402
from delivery.queue import QueueItem  # noqa: E402
from delivery.secrets import SecretBox  # noqa: E402
from delivery.sqlite.config_store import SqliteConfigStore  # noqa: E402
from delivery.sqlite.db import Database  # noqa: E402
from delivery.sqlite.event_queue import SqliteEventQueue  # noqa: E402
from tests.support import free_port  # noqa: E402

SECRET = "bench-secret-key"
KEY = "dk_bench_tail"
PER_ROW = 100
CONNECTIONS = (8, 32)


def _sample_event():
    """bench/delivery.py's event (that file shares its name with the delivery package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_delivery", Path(__file__).with_name("delivery.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.sample_event


async def fill(path: Path, n: int) -> None:
    """A source as bench/ingest.py's (its domain, no rate limit in the way) and `n` queued events."""
    sample_event = _sample_event()
    db = Database(str(path), synchronous="OFF", commit_window=0)  # filling, not measuring
    db.start()
    store, queue = SqliteConfigStore(db), SqliteEventQueue(db)
    await store.open(SecretBox(SECRET))
    await queue.open()
    now = time.time()
    await store.put_source(Source(
        id="src_tail", name="tail", pipeline_key=KEY, created_at=now, updated_at=now, domain="shop.example",
        rate_limit_per_second=1e9, rate_limit_burst=10**9, client_rate_limit_per_second=1e9,
        client_rate_limit_burst=10**9), None)
    await store.put_integration(Integration(
        id="int_tail", source_id="src_tail", name="P", created_at=now, updated_at=now,
        config=PinterestConfig("549764982399", "pina_bench", "ct_bench", rate_limit_per_second=1000,
                               rate_limit_burst=1000)), None)
    rows = [b"\n".join(sample_event(i, now) for i in range(PER_ROW))]
    for at in range(0, n, PER_ROW):
        await queue.append([QueueItem("int_tail", rows[0], now + at * 1e-6, 0, PER_ROW)])
    db.close()


class Node:
    """`signal-edge serve` on a copy of the backlog, pinned to the server core."""

    def __init__(self, name: str, backlog: Path, tmp: Path, pinterest: str) -> None:
        self.name = name
        db = tmp / f"{name}-{time.monotonic_ns()}.db"
        shutil.copyfile(backlog, db)
        self.port, self.admin_port = free_port(), free_port()
        env = {"PATH": "/usr/bin:/bin", "SIGNAL_ADMIN_TOKEN": ADMIN, "SIGNAL_PINTEREST_API_BASE": pinterest,
               "SIGNAL_LOG_LEVEL": "error", "SIGNAL_AUTH_RECHECK": "3600", "SIGNAL_SECRET_KEY": SECRET,
               "SIGNAL_QUEUE_MAX": "100000000"}  # the backlog is no reason to refuse
        self.proc = pinned(SERVER_CORE, [sys.executable, "-m", "collector", "serve", "--port", str(self.port),
                                         "--admin-port", str(self.admin_port), "--db", str(db)],
                           cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(f"http://127.0.0.1:{self.port}/healthz")
        self.admin = httpx.Client(base_url=f"http://127.0.0.1:{self.admin_port}",
                                  headers={"Authorization": f"Bearer {ADMIN}"})
        first = httpx.post(f"http://127.0.0.1:{self.port}/v1/batch", content=body(KEY, 1))
        self.cookie = "; ".join(f"{k}={first.cookies[k]}" for k in ("_dfid", "_pin_unauth"))

    def target(self) -> Target:
        return Target(self.name, self.port, tag_request(KEY, 1, self.cookie), self.proc.pid)

    def delivered(self) -> int:
        return self.admin.get("/v1/admin/integrations/int_tail").json()["delivery"]["delivered"]

    def lag_max(self) -> float:
        metrics = self.admin.get("/metrics").text
        return float(metrics.split("\nsignal_edge_event_loop_lag_max_seconds ", 1)[1].split()[0])

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def settle(node: Node, paused: bool, timeout: float = 30) -> None:
    """Pause or resume the node's delivery, and wait until it shows: paused, no event delivered
    for half a second (a batch in flight ends first); resumed, the next batch delivered."""
    node.admin.patch("/v1/admin/integrations/int_tail", json={"paused": paused}).raise_for_status()
    deadline, last = time.monotonic() + timeout, node.delivered()
    while time.monotonic() < deadline:
        time.sleep(0.5 if paused else 0.05)
        now = node.delivered()
        if (now == last) == paused:
            return
        last = now
    raise RuntimeError(f"delivery did not {'stop' if paused else 'start'} within {timeout:.0f} s")


def measure(backlog: int = 2_000_000, seconds: float = 1.0, rounds: int = 4, runs: int = 3) -> dict:
    """Each run: a fresh copy of the backlog; for each of CONNECTIONS, `rounds` rounds of a phase
    with delivery paused and one while it drains, each `seconds` of load."""
    tmp = Path(tempfile.mkdtemp(prefix="signal-edge-tail-"))
    fake_port = free_port()
    fake = pinned(LOAD_CORE, [sys.executable, str(ROOT / "bench" / "fake_pinterest.py"), "--port", str(fake_port),
                              "--lean"])
    results: dict[tuple[str, int], list[dict]] = {}
    try:
        print(f"  filling a backlog of {backlog:,} events ...", file=sys.stderr, flush=True)
        filled = tmp / "backlog.db"
        asyncio.run(fill(filled, backlog))
        wait_http(f"http://127.0.0.1:{fake_port}/healthz")
        for run in range(runs):
            node = Node("node", filled, tmp, f"http://127.0.0.1:{fake_port}")
            try:
                os.sync()  # the copy's dirty pages written back now, not under the commits' fsyncs
                for connections in CONNECTIONS:
                    phases = {"delivery paused": node.target(), "delivery draining": node.target()}
                    delivered = drained_for = 0.0
                    for _ in range(rounds):
                        for name, target in phases.items():
                            settle(node, name == "delivery paused")
                            before, started = node.delivered(), time.perf_counter()
                            drive([target], seconds, int(LOAD_CORE), connections=connections)
                            if name == "delivery draining":
                                delivered += node.delivered() - before
                                drained_for += time.perf_counter() - started
                    if node.delivered() >= backlog:
                        raise RuntimeError(f"the backlog ran out during the turns: run with --backlog above "
                                           f"{backlog:,}")
                    for name, target in phases.items():
                        results.setdefault((name, connections), []).append({
                            "rps": target.rps, "p50": target.percentile(50), "p99": target.percentile(99),
                            "p999": target.percentile(99.9), "cpu_us": target.cpu_per_request() * 1e6,
                            "delivered_eps": delivered / drained_for if name == "delivery draining" else 0.0,
                            "non2xx": target.non2xx})
                lag = node.lag_max() * 1000
            finally:
                node.stop()
            print(f"  run {run + 1}/{runs}: ingest p99 paused / draining " + ", ".join(
                f"{c} connections {results[('delivery paused', c)][-1]['p99'] * 1000:.1f} / "
                f"{results[('delivery draining', c)][-1]['p99'] * 1000:.1f} ms" for c in CONNECTIONS)
                + f"; the loop's largest lag {lag:.0f} ms", file=sys.stderr, flush=True)
    finally:
        fake.send_signal(signal.SIGTERM)
        fake.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    med = lambda key, rs: median([r[key] for r in rs])  # noqa: E731
    rows = [[f"{name}, {c} connections", f"{med('rps', rs):,.0f}", f"{med('p50', rs) * 1000:.2f}",
             f"{med('p99', rs) * 1000:.2f}", f"{med('p999', rs) * 1000:.2f}", f"{med('cpu_us', rs):.0f}",
             f"{med('delivered_eps', rs):,.0f}" if "draining" in name else "", sum(r["non2xx"] for r in rs)]
            for (name, c), rs in sorted(results.items(), key=lambda item: (item[0][1], "draining" in item[0][0]))]
    p99_ratio = {c: [d["p99"] / p["p99"] for p, d in zip(results[("delivery paused", c)],
                                                          results[("delivery draining", c)])] for c in CONNECTIONS}
    return {"rows": rows, "p99_ratio": p99_ratio, "runs": runs, "backlog": backlog, "seconds": seconds,
            "rounds": rounds,
            "draining_p99_ms": {c: [r["p99"] * 1000 for r in results[("delivery draining", c)]] for c in CONNECTIONS},
            "paused_p99_ms": {c: [r["p99"] * 1000 for r in results[("delivery paused", c)]] for c in CONNECTIONS}}


def report(r: dict) -> None:
    print(f"\nIngest on one node while its delivery drains a backlog of {r['backlog']:,} events, and while it is "
          f"paused: {r['rounds']} phases of {r['seconds']:g}s each x {r['runs']} runs (medians)")
    print(table(["ingest", "requests/s", "p50 ms", "p99 ms", "p99.9 ms", "CPU us/req (drain too)", "delivered ev/s",
                 "non-2xx"], r["rows"]))
    for c, ratios in r["p99_ratio"].items():
        print(f"p99 draining / paused, {c} connections: {median(ratios):.2f} ({', '.join(f'{x:.2f}' for x in ratios)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backlog", type=int, default=2_000_000)
    parser.add_argument("--seconds", type=float, default=1.0, help="load per phase")
    parser.add_argument("--rounds", type=int, default=4, help="phases of each kind per connection count")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    report(measure(args.backlog, args.seconds, args.rounds, args.runs))


if __name__ == "__main__":
    main()
