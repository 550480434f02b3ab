"""The benchmarks that start servers of their own, cut to seconds: each starts, is answered and
measures something (a setting the server refuses, like a weak admin token, once stopped `make
bench` after ten minutes, at its hostile-input step)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

# (after everything else: bench/delivery.py must not shadow the delivery package)
sys.path.append(str(Path(__file__).resolve().parent.parent / "bench"))

import hostile  # noqa: E402
import retention  # noqa: E402
from tests.corpus import normal_event  # noqa: E402


def test_the_hostile_benchmarks_edge_answers_in_process(tmp_path):
    async def main() -> float:
        services, app = await hostile._edge(tmp_path / "hostile.db")
        try:
            return await hostile._cpu_of(app, hostile._request("dk_bench", normal_event()))
        finally:
            await services.close()
    assert asyncio.run(main()) > 0


@pytest.mark.process
def test_the_hostile_flood_and_the_retention_soak_run_against_real_servers(tmp_path):
    server = hostile.Server(tmp_path, {})
    try:
        assert hostile._flood(server, 3) > 0 and server.identities() == 3
    finally:
        server.stop()
    soaked = retention.measure(rate=50, seconds=2, retention=1, every=0.5, backends=("SQLite",))
    samples = soaked["samples"]["SQLite"]
    assert len(samples) >= 4 and samples[-1][3] > 0, samples  # events were taken, the file was read
