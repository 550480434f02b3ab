"""`make bench`: every benchmark, then one table of the figures against their targets.

Benchmarks print figures; nothing here passes or fails on time (CI does not run them).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import table  # noqa: E402  (puts the project root first on sys.path)


def _load(name: str):
    """bench/delivery.py shares its name with the delivery package: load the files by path."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tag_size, ingest_bench, delivery_bench = _load("tag_size"), _load("ingest"), _load("delivery")


def main() -> None:
    print("tag size ...", file=sys.stderr, flush=True)
    sizes = tag_size.sizes()
    print("ingest (about 2 minutes) ...", file=sys.stderr, flush=True)
    ingest = ingest_bench.measure()
    ingest_bench.report(ingest)
    print("\ndelivery (about 1 minute) ...", file=sys.stderr, flush=True)
    delivery = delivery_bench.measure()
    delivery_bench.report(delivery)

    rows = [
        ["tag, gzip", f"{sizes['gzip -9']:,} B", "< 2,048 B (ceiling 4,096)", sizes["gzip -9"] < 2048],
        ["tag, brotli", f"{sizes['brotli 11']:,} B", "", ""],
        ["ingest, 1 event/request", f"{ingest['single_eps']:,.0f} ev/s", "", ""],
        ["ingest ours / bare", f"{ingest['ratio_bare']:.2f}", ">= 0.50", ingest["ratio_bare"] >= 0.5],
        ["ingest p99 at that load", f"{ingest['single_p99_ms']:.1f} ms", "< 20 ms", ingest["single_p99_ms"] < 20],
        ["ingest 10-event / 1-event", f"{ingest['ratio_batch']:.2f}x", ">= 5x", ingest["ratio_batch"] >= 5],
        ["mapping pipeline, 1 core", f"{delivery['pipeline_eps']:,.0f} ev/s", ">= 100,000", delivery["pipeline_eps"] >= 100_000],
        ["end to end to the sandbox", f"{delivery['e2e_eps']:,.0f} ev/s", ">= 20,000", delivery["e2e_eps"] >= 20_000],
        ["  the same, 10 events/request", f"{delivery['e2e_batched_eps']:,.0f} ev/s", "", ""],
        ["edge RSS idle", f"{ingest['idle_rss_mib']:.1f} MiB", "", ""],
        ["edge RSS peak under load", f"{ingest['peak_rss_mib']:.1f} MiB", "<= 150 MiB", ingest["peak_rss_mib"] <= 150],
    ]
    print("\nSummary")
    print(table(["figure", "measured", "target", "met"],
                [[a, b, c, {True: "yes", False: "NO", "": ""}[d]] for a, b, c, d in rows]))


if __name__ == "__main__":
    main()
