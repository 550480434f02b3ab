"""Shared by the benchmarks: processes pinned to cores, wrk runs, medians, tables."""

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


def parse_wrk(text: str) -> dict:
    def seconds(value: str, unit: str) -> float:
        return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]

    latency = {p: seconds(v, u) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)$", text, re.M)}
    requests = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sockets = re.search(r"Socket errors:.*?timeout (\d+)", text)
    return {"rps": requests, "p50": latency.get("50", float("nan")), "p99": latency.get("99", float("nan")),
            "non2xx": int(errors.group(1)) if errors else 0, "timeouts": int(sockets.group(1)) if sockets else 0}


def wrk(url: str, body_file: Path, seconds: int, connections: int, cookie: str = "") -> dict:
    env = {**os.environ, "BODY_FILE": str(body_file), "COOKIE": cookie}
    out = subprocess.run(["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
                          "-s", str(ROOT / "bench" / "post.lua"), url], env=env, capture_output=True, text=True,
                         check=True).stdout
    return parse_wrk(out)


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
