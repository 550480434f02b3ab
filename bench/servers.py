"""Granian (a Rust HTTP server for ASGI apps) beside uvicorn, serving the same apps (issue 28).

Two apps, each served by both servers: the raw ASGI app of bench/bare_app.py (read the body,
decode it with msgspec, 204: the stack's limit) and the edge's own app (bench/edge_app.py: the
real ingest path over real services on a SQLite file, durable before the 200; delivery not
started). uvicorn runs as the edge runs it (httptools, uvloop, no access log); Granian with one
worker on uvloop. Every server is pinned to core 0 (Granian's worker process, its Rust threads
included) and bench/loadgen.py drives all four in turns of a quarter second from core 1, with the
tag's request (bench/ingest.py) over 32 kept-alive connections; each figure is the median of the
runs, each ratio taken within a run.

    .venv/bin/python bench/servers.py [--seconds 5] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

from common import LOAD_CORE, ROOT, SERVER_CORE, median, pinned, table, wait_http
from ingest import tag_request
from loadgen import Target, drive

from tests.support import free_port  # noqa: E402

BENCH = ROOT / "bench"
COOKIE = f"_dfid={uuid.uuid4()}.{int(time.time() // 86400)}; _pin_unauth={uuid.uuid4()}"


class Served:
    """`module:app` served by `server` (uvicorn or granian) on core 0, with its own SQLite file."""

    def __init__(self, server: str, app: str, tmp: Path) -> None:
        self.port = free_port()
        env = {"PATH": "/usr/bin:/bin", "SIGNAL_DB": str(tmp / f"{server}-{time.monotonic_ns()}.db"),
               **{k: v for k, v in os.environ.items() if k.startswith("GRANIAN_")}}  # Granian's own settings
        if server == "uvicorn":
            argv = ["-m", "uvicorn", "--app-dir", str(BENCH), app, "--port", str(self.port), "--loop", "uvloop",
                    "--http", "httptools", "--no-access-log", "--log-level", "warning", "--no-server-header",
                    "--lifespan", "on" if app.startswith("edge_app") else "off"]
        else:
            argv = ["-m", "granian", "--interface", "asgi", "--working-dir", str(BENCH), "--host", "127.0.0.1",
                    "--port", str(self.port), "--workers", "1", "--loop", "uvloop", "--no-ws",
                    "--log-level", "warning", app]
        self.proc = pinned(SERVER_CORE, [sys.executable, *argv], cwd=ROOT, env=env)
        try:
            wait_http(f"http://127.0.0.1:{self.port}/")
        except BaseException:
            self.stop()
            raise
        # Granian serves from a worker process of its own: that is the one whose CPU counts.
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        self.pid = int(children[0]) if server == "granian" and children else self.proc.pid

    def target(self, name: str) -> Target:
        return Target(name, self.port, tag_request("dk_bench", 1, COOKIE), self.pid)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


CASES = [("raw ASGI, uvicorn", "uvicorn", "bare_app:raw"), ("raw ASGI, Granian", "granian", "bare_app:raw"),
         ("edge app, uvicorn", "uvicorn", "edge_app:app"), ("edge app, Granian", "granian", "edge_app:app")]


def measure(seconds: int = 5, runs: int = 3, connections: int = 32) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="signal-edge-granian-"))
    results: dict[str, list[dict]] = {name: [] for name, _, _ in CASES}
    try:
        for run in range(runs):
            served = {name: Served(server, app, tmp) for name, server, app in CASES}
            try:
                targets = [served[name].target(name) for name, _, _ in CASES]
                drive(targets, seconds, int(LOAD_CORE), connections=connections)
                for target in targets:
                    results[target.name].append({
                        "rps": target.rps, "p50": target.percentile(50), "p99": target.percentile(99),
                        "cpu_us": target.cpu_per_request() * 1e6, "non2xx": target.non2xx})
            finally:
                for server in served.values():
                    server.stop()
            print(f"  run {run + 1}/{runs}: " + ", ".join(f"{name} {results[name][-1]['rps']:,.0f} req/s"
                                                          for name, _, _ in CASES), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ratio = lambda a, b: [x["rps"] / y["rps"] for x, y in zip(results[a], results[b])]  # noqa: E731
    med = lambda name, key: median([r[key] for r in results[name]])  # noqa: E731
    rows = [[name, f"{med(name, 'rps'):,.0f}", f"{med(name, 'p50') * 1000:.2f}", f"{med(name, 'p99') * 1000:.2f}",
             f"{med(name, 'cpu_us'):.0f}", sum(r["non2xx"] for r in results[name])] for name, _, _ in CASES]
    (raw_uvicorn, _, _), (raw_granian, _, _), (edge_uvicorn, _, _), (edge_granian, _, _) = CASES
    return {"connections": connections, "seconds": seconds, "runs": runs, "rows": rows,
            "raw": ratio(raw_granian, raw_uvicorn), "edge": ratio(edge_granian, edge_uvicorn),
            "edge_share_uvicorn": ratio(edge_uvicorn, raw_uvicorn),
            "edge_share_granian": ratio(edge_granian, raw_granian)}


def report(r: dict) -> None:
    print(f"\nGranian beside uvicorn: the tag's request, server on 1 core, {r['connections']} connections, "
          f"{r['seconds']}s each x {r['runs']} runs (medians)")
    print(table(["app, server", "requests/s", "p50 ms", "p99 ms", "CPU us/req", "non-2xx"], r["rows"]))
    runs = lambda values: f"{median(values):.2f} ({', '.join(f'{v:.2f}' for v in values)})"  # noqa: E731
    print(f"Granian over uvicorn, raw ASGI app: {runs(r['raw'])}")
    print(f"Granian over uvicorn, the edge app: {runs(r['edge'])}")
    print(f"the edge app over the raw app, uvicorn: {runs(r['edge_share_uvicorn'])}; "
          f"Granian: {runs(r['edge_share_granian'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    report(measure(args.seconds, args.runs, args.connections))


if __name__ == "__main__":
    main()
