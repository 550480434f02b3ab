"""Shared by the benchmarks: processes pinned to cores, medians, tables."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SERVER_CORE, LOAD_CORE = "0", "1"


def pinned(core: str, argv: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(["taskset", "-c", core, *argv], **kwargs)


def rss_kib(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) in KiB, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    field = lambda name: int(re.search(rf"{name}:\s+(\d+) kB", status).group(1))  # noqa: E731
    return field("VmRSS"), field("VmHWM")


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and all its descendants so far, from /proc."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended meanwhile
        child = int(stat.parent.name)
        parents[child] = int(fields[1])
        times[child] = (int(fields[11]) + int(fields[12])) / tick
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(times.get(p, 0.0) for p in tree)


def median(values: list[float]) -> float:
    return statistics.median(values)


def table(headers: list[str], rows: list[list]) -> str:
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(cells[0]), line(["-" * w for w in widths])] + [line(r) for r in cells[1:]])


def wait_http(url: str, timeout: float = 20) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def drain_rate(admin, integration: str, events: int, timeout: float = 300) -> float:
    """Poll an integration's counters (through `admin`, an httpx client on /v1/admin) until
    `events` are delivered or dead-lettered; events/s from the first delivered to the last."""
    first, started = None, time.perf_counter()
    while True:
        counts = admin.get(f"/integrations/{integration}").json()["delivery"]
        if counts["delivered"] and first is None:
            first = (time.perf_counter(), counts["delivered"])
        if counts["delivered"] + counts["dead_lettered"] >= events:
            break
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"not drained after {timeout:.0f} s: {counts}")
        time.sleep(0.05)
    assert counts["dead_lettered"] == 0, counts
    return (events - first[1]) / (time.perf_counter() - first[0])
