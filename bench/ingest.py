"""Ingestion of what the tag really sends, on one core, durable (each event committed to SQLite
before the 200), side by side with the stack's own limit and a bare Starlette endpoint.

The request is Chrome's fetch() from the tag (static/datafly.js) on https://shop.example to the
edge on t.shop.example: a Product Added track with its page context and user agent, the browser's
headers (Origin, Sec-Fetch-*, client hints), the two identity cookies `_dfid` and `_pin_unauth`
beside the site's own; and the tag's batch of 10 such events. The source names the site's
domain, so the origin is checked as in production.

Four servers run pinned to core 0 and bench/loadgen.py drives them from core 1, taking turns of
a quarter second so that all four see the same host (on the shared VM, runs made one after
another differed by more than the ratios' margins): a plain ASGI app that reads the body,
decodes it with msgspec and answers 204 (uvicorn + httptools + uvloop: the stack's limit), the
same behind Starlette, an edge taking one event per request and an edge taking ten. First with
32 connections each (p50/p99/p99.9, and the server's CPU per request from /proc), then stepped
over 8-256 connections for the most requests/s each serves with p99 <= 10 ms. Delivery is parked
(the integration's Pinterest answers 401, so the worker pauses) so that only ingestion is
measured; bench/delivery.py measures the other half, bench/tail.py the two together. Each run
starts fresh edges; each figure is the median of 3 runs, a ratio taken within each run.

    .venv/bin/python bench/ingest.py [--seconds 5] [--connections 32] [--runs 3] [--step-seconds 1.5]
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
import uuid
from pathlib import Path

from common import LOAD_CORE, ROOT, SERVER_CORE, median, pinned, rss_kib, table, wait_http
from loadgen import Target, drive

import httpx  # noqa: E402

from delivery.pinterest.sandbox import Sandbox  # noqa: E402
from tests.support import ServerThread, free_port  # noqa: E402

ADMIN = "sea_bench_admin_token_0123456789abcdef"
SITE, EDGE_HOST = "https://shop.example", "t.shop.example"  # the page, and the edge on its data subdomain
# What the tag builds for `_df.track("Product Added", {...})` (static/datafly.js: send()).
EVENT = {
    "properties": {"product_id": "SKU-A", "name": "Widget", "price": 49.99, "quantity": 1, "currency": "USD"},
    "event": "Product Added", "type": "track", "messageId": "3f1d2a9e-5b7c-4e21-9a0f-2c8d6e4b1a77",
    "timestamp": "2026-11-29T10:00:00.000Z",
    "context": {"page": {"url": f"{SITE}/products/widget?color=blue", "path": "/products/widget",
                         "referrer": "https://www.pinterest.com/", "title": "Widget - Shop", "search": "?color=blue"},
                "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
                             "Safari/537.36", "locale": "en-US"},
}
# Cookies of the site's own (Domain=.shop.example) that the browser sends to the edge beside ours.
SITE_COOKIES = "_ga=GA1.1.1234567890.1732870000; _ga_Q1W2E3R4T5=GS1.1.1732870000.1.1.1732870100.0.0.0"


def body(key: str, events: int) -> str:
    """What the tag posts (JSON.stringify: no spaces), its batch of `events`."""
    return json.dumps({"pipeline_key": key, "sentAt": "2026-11-29T10:00:00.100Z", "reset": False,
                       "batch": [EVENT] * events}, separators=(",", ":"))


def tag_request(key: str, events: int, cookie: str = "") -> bytes:
    """The whole request as Chrome sends the tag's fetch(): a text/plain POST from the page's
    origin to the edge on its subdomain, credentials included (so the identity cookies)."""
    payload = body(key, events).encode()
    head = (f"POST /v1/batch HTTP/1.1\r\nHost: {EDGE_HOST}\r\nConnection: keep-alive\r\n"
            f"Content-Length: {len(payload)}\r\nsec-ch-ua-platform: \"Linux\"\r\n"
            f"User-Agent: {EVENT['context']['userAgent']}\r\n"
            "sec-ch-ua: \"Google Chrome\";v=\"131\", \"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"\r\n"
            "Content-Type: text/plain;charset=UTF-8\r\nsec-ch-ua-mobile: ?0\r\nAccept: */*\r\n"
            f"Origin: {SITE}\r\nSec-Fetch-Site: same-site\r\nSec-Fetch-Mode: cors\r\nSec-Fetch-Dest: empty\r\n"
            f"Referer: {SITE}/\r\nAccept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-US,en;q=0.9\r\n"
            f"Cookie: {'; '.join(filter(None, (cookie, SITE_COOKIES)))}\r\n\r\n")
    return head.encode() + payload


class Bare:
    """A baseline (bench/bare_app.py) on core 0: `raw`, the plain ASGI app (the stack's limit), or
    `starlette`."""

    def __init__(self, app: str = "starlette") -> None:
        self.port = free_port()
        self.proc = pinned(SERVER_CORE, [sys.executable, str(ROOT / "bench" / "bare_app.py"), "--port", str(self.port),
                                         "--app", app])
        try:
            wait_http(f"http://127.0.0.1:{self.port}/")
        except BaseException:
            self.stop()
            raise

    def target(self, name: str) -> Target:
        return Target(name, self.port, tag_request("dk_bare", 1, "_dfid=x; _pin_unauth=y"), self.proc.pid)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


class Edge:
    """A `signal-edge serve` with a fresh database (a SQLite file, or `database_url`), a source and
    a parked integration; pinned to core 0 unless `core` is None. The source names the site's
    domain and lifts its rate limits (one load generator is one client)."""

    def __init__(self, tmp: Path, pinterest: str, database_url: str | None = None, core: str | None = SERVER_CORE,
                 workers: int = 1, program: list[str] | None = None, root: Path = ROOT) -> None:
        self.port, admin_port = free_port(), free_port()
        self.admin_port = admin_port
        env = {"PATH": "/usr/bin:/bin", "SIGNAL_ADMIN_TOKEN": ADMIN, "SIGNAL_PINTEREST_API_BASE": pinterest,
               "SIGNAL_LOG_LEVEL": "warning", "SIGNAL_AUTH_RECHECK": "3600", "SIGNAL_SECRET_KEY": "bench-secret-key"}
        db = tmp / f"bench-{time.monotonic_ns()}.db"
        database = ["--database-url", database_url] if database_url else ["--db", str(db)]
        if workers > 1:
            database += ["--workers", str(workers)]
        self.log = db.with_suffix(".log")  # the parked integration's warning goes here, not into the table
        # `program`: what runs the CLI instead of `-m collector` (bench/stages.py's truncated edges)
        argv = [sys.executable, *(program or ["-m", "collector"]), "serve", "--port", str(self.port),
                "--admin-port", str(admin_port),
                *database]
        with self.log.open("wb") as log:
            self.proc = (pinned(core, argv, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT) if core
                         else subprocess.Popen(argv, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT))
        wait_http(f"http://127.0.0.1:{self.port}/healthz")
        self.admin = httpx.Client(base_url=f"http://127.0.0.1:{admin_port}/v1/admin",
                                  headers={"Authorization": f"Bearer {ADMIN}"})
        # One load generator is one client: lift the per-client limit with the source's.
        source = self.admin.post("/sources", json={
            "name": "bench", "domain": "shop.example",
            "rate_limit_per_second": 1_000_000, "rate_limit_burst": 1_000_000,
            "client_rate_limit_per_second": 1_000_000, "client_rate_limit_burst": 1_000_000}).json()
        self.key = source["pipeline_key"]
        self.integration = self.admin.post("/integrations", json={
            "source_id": source["id"], "vendor": "pinterest", "name": "P",
            "config": {"ad_account_id": "1", "access_token": "pina_x", "conversion_token": "ct_x"}}).json()["id"]
        first = httpx.post(f"http://127.0.0.1:{self.port}/v1/batch", content=body(self.key, 1))
        # (an edge cut short by bench/stages.py sets none: it gets the same cookies' length)
        jar = first.cookies if "_dfid" in first.cookies else {"_dfid": f"{uuid.uuid4()}.{int(time.time() // 86400)}",
                                                              "_pin_unauth": str(uuid.uuid4())}
        self.cookie = "; ".join(f"{k}={jar[k]}" for k in ("_dfid", "_pin_unauth"))
        time.sleep(1.0)  # the first delivery attempt gets its 401 and the worker parks

    def target(self, name: str, events: int = 1) -> Target:
        """The tag's request with this browser's two identity cookies."""
        return Target(name, self.port, tag_request(self.key, events, self.cookie), self.proc.pid)

    def accepted(self) -> int:
        return self.admin.get(f"/integrations/{self.integration}").json()["delivery"]["accepted"]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


CASES = [("raw ASGI + msgspec, 204", "raw", 1), ("bare Starlette + msgspec, 204", "starlette", 1),
         ("signal-edge, 1 event/request", None, 1), ("signal-edge, 10 events/request", None, 10)]
RAW, BARE, SINGLE, BATCH = (name for name, _, _ in CASES)
STEPS = (8, 16, 32, 64, 128, 256)  # connections, for the throughput at a latency bound
BOUND = 0.010  # p99 of at most 10 ms


def _figures(target: Target, events: int) -> dict:
    return {"eps": target.rps * events, "rps": target.rps, "p50": target.percentile(50),
            "p99": target.percentile(99), "p999": target.percentile(99.9), "non2xx": target.non2xx,
            "cpu_us": target.cpu_per_request() * 1e6, "client": target.client_cpu / target.seconds}


BEFORE = "signal-edge before (--before), 1 event/request"


def targets(baselines: dict[str, Bare], edges: dict[str, Edge], cases: list) -> list[Target]:
    """One target for each case, with fresh counts."""
    return [baselines[app].target(name) if app else edges[name].target(name, events) for name, app, events in cases]


def measure(seconds: int = 5, connections: int = 32, runs: int = 3, step_seconds: float = 1.5,
            before: Path | None = None) -> dict:
    """Each run: fresh edges beside the two baselines, all four driven in turns until each has had
    `seconds` of load over `connections`; then, in turns again, with each of STEPS connections for
    `step_seconds`, for the most requests/s each served with a p99 within BOUND. `before`: a
    directory holding another version's code (`git archive <commit> collector delivery static`),
    served as a fifth case in the same turns."""
    cases = CASES + ([(BEFORE, None, 1)] if before else [])
    tmp = Path(tempfile.mkdtemp(prefix="signal-edge-bench-"))
    pinterest = ServerThread(Sandbox()).start()  # no tokens: every call is a 401, delivery parks
    baselines = {app: Bare(app) for _, app, _ in CASES if app}
    results: dict[str, list[dict]] = {name: [] for name, _, _ in cases}
    bounded: dict[str, list[tuple[float, int]]] = {name: [] for name, _, _ in cases}  # (req/s, connections)
    idle_rss = peak_rss = accepted = answered = 0
    try:
        for run in range(runs):
            edges = {name: Edge(tmp, pinterest.url, root=before if name == BEFORE else ROOT)
                     for name, app, _ in cases if not app}
            try:
                idle_rss = idle_rss or rss_kib(edges[SINGLE].proc.pid)[0]

                driven = targets(baselines, edges, cases)
                drive(driven, seconds, int(LOAD_CORE), connections=connections)
                for (name, _, events), target in zip(cases, driven):
                    results[name].append(_figures(target, events))
                best = {name: (0.0, 0) for name, _, _ in cases}
                for step in STEPS:
                    stepped = targets(baselines, edges, cases)
                    drive(stepped, step_seconds, int(LOAD_CORE), connections=step)
                    for target in stepped:
                        if target.percentile(99) <= BOUND and target.rps > best[target.name][0]:
                            best[target.name] = (target.rps, step)
                for name, figure in best.items():
                    bounded[name].append(figure)
                for (name, _, events), target in zip(cases, driven):
                    if name in edges:
                        peak_rss = max(peak_rss, rss_kib(edges[name].proc.pid)[1])
                        answered += (target.answers - target.non2xx) * events
                accepted += sum(edge.accepted() - 1 for edge in edges.values())  # less the cookies' request
            finally:
                for edge in edges.values():
                    edge.stop()
            print(f"  run {run + 1}/{runs}: " + ", ".join(
                f"{name} {results[name][-1]['eps']:,.0f} events/s" for name, _, _ in cases),
                file=sys.stderr, flush=True)
    finally:
        for bare in baselines.values():
            bare.stop()
        pinterest.stop()
        shutil.rmtree(tmp, ignore_errors=True)  # each run's queues: hundreds of MB

    med = lambda name, key: median([r[key] for r in results[name]])  # noqa: E731
    rows = []
    for name, _, events in cases:
        rps_bound = median([rps for rps, _ in bounded[name]])
        rows.append([name, f"{med(name, 'eps'):,.0f}", f"{med(name, 'rps'):,.0f}", f"{med(name, 'p50') * 1000:.2f}",
                     f"{med(name, 'p99') * 1000:.2f}", f"{med(name, 'p999') * 1000:.2f}", f"{med(name, 'cpu_us'):.0f}",
                     f"{med(name, 'cpu_us') / events:.1f}", f"{rps_bound:,.0f}",
                     "/".join(str(c) if c else "-" for _, c in bounded[name]),
                     sum(r["non2xx"] for r in results[name])])
    per_run = lambda a, b, key="eps": [x[key] / y[key] for x, y in zip(results[a], results[b])]  # noqa: E731
    bound_ratio = [x[0] / y[0] if y[0] else 0.0 for x, y in zip(bounded[SINGLE], bounded[RAW])]
    return {
        "title": f"Ingest of the tag's request, servers on 1 core, {connections} connections each, turns of 0.25 s, "
                 f"{seconds}s each x {runs} runs (medians)",
        "rows": rows,
        "ratios_raw": per_run(SINGLE, RAW), "ratios_bare": per_run(SINGLE, BARE),
        "ratios_batch": per_run(BATCH, SINGLE),
        "ratios_bound_raw": bound_ratio,
        "ratios_before": per_run(BEFORE, SINGLE, "cpu_us") if before else [],  # its CPU per request over ours
        "rps_over_before": per_run(SINGLE, BEFORE) if before else [],
        "single_eps": med(SINGLE, "eps"), "batch_eps": med(BATCH, "eps"), "bare_eps": med(BARE, "eps"),
        "single_p99s_ms": [r["p99"] * 1000 for r in results[SINGLE]],
        "single_bound_rps": [rps for rps, _ in bounded[SINGLE]],
        "single_cpu_us": [r["cpu_us"] for r in results[SINGLE]],
        "bare_runs": [r["eps"] for r in results[BARE]],
        "client_busy": max(r["client"] for rs in results.values() for r in rs),
        "accepted": accepted, "answered": answered,
        "idle_rss_mib": idle_rss / 1024, "peak_rss_mib": peak_rss / 1024,
    }


def report(r: dict) -> None:
    print(f"\n{r['title']}")
    print(table(["endpoint", "events/s", "requests/s", "p50 ms", "p99 ms", "p99.9 ms", "CPU us/req", "CPU us/event",
                 f"req/s, p99<={BOUND * 1000:.0f}ms", "at connections", "non-2xx"], r["rows"]))
    runs = lambda values: ", ".join(f"{v:.2f}" for v in values)  # noqa: E731
    print("CPU: the server process's user + system time (all its threads, /proc) in its own turns, per answer.")
    print(f"req/s at p99<={BOUND * 1000:.0f}ms: the most any of {', '.join(map(str, STEPS))} kept-alive connections "
          "gave with a p99 within the bound, driven in turns (closed loop, stepped); at connections: each run's "
          "(-: no step within the bound, counted as 0).")
    print(f"ratio ours/raw ASGI (1 event/request), median of the runs: {median(r['ratios_raw']):.2f} "
          f"({runs(r['ratios_raw'])})")
    print(f"ratio ours/bare Starlette (1 event/request): {median(r['ratios_bare']):.2f} ({runs(r['ratios_bare'])})")
    print(f"ratio ours/raw ASGI at the latency bound: {median(r['ratios_bound_raw']):.2f} "
          f"({runs(r['ratios_bound_raw'])})")
    print(f"ratio 10-event/1-event batches (events/s), median: {median(r['ratios_batch']):.2f} "
          f"({runs(r['ratios_batch'])})")
    if r["ratios_before"]:
        print(f"CPU per request, before over now (1 event/request, same turns): {median(r['ratios_before']):.3f} "
              f"({runs(r['ratios_before'])}); requests/s, now over before: {median(r['rps_over_before']):.3f} "
              f"({runs(r['rps_over_before'])})")
    print(f"durable: {r['accepted']:,} events committed to the queue "
          f"({r['answered']:,} answered 200 in the main turns)")
    print(f"load generator: at most {r['client_busy']:.0%} of its core busy in a turn (near 100% it would be the limit)")
    print(f"edge RSS: {r['idle_rss_mib']:.1f} MiB idle, {r['peak_rss_mib']:.1f} MiB peak under load")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--step-seconds", type=float, default=1.5, help="load per step of the latency-bound search")
    parser.add_argument("--before", type=Path, help="another version's code to serve beside (git archive <commit> "
                                                     "collector delivery static | tar -x -C DIR)")
    args = parser.parse_args()
    report(measure(args.seconds, args.connections, args.runs, args.step_seconds, args.before))


if __name__ == "__main__":
    main()
