"""Delivery's long work gives way to the edge (delivery/slices.py): slices of 4 ms when the
edge is idle, and while it takes requests, slices of half a millisecond each followed by a
pause, so that a browser's request is not left a sliver of the core."""

from __future__ import annotations

import asyncio

from delivery import slices
from tests.support import edge_in_process


class Loop:
    """What Slices reads and awaits, under the test's hand: its clock, its pause and its turn."""

    def __init__(self, monkeypatch) -> None:
        self.now, self.awaited = 100.0, []
        monkeypatch.setattr(slices, "perf_counter", lambda: self.now)
        monkeypatch.setattr(slices, "sleep", self._sleep)
        monkeypatch.setattr(slices, "checkpoint", self._checkpoint)
        monkeypatch.setattr(slices, "demand", slices.Demand())

    async def _sleep(self, seconds: float) -> None:
        self.awaited.append(("pause", seconds))

    async def _checkpoint(self) -> None:
        self.awaited.append(("turn", 0))

    def work(self, steps: int, slicer: slices.Slices) -> list:
        """`steps` of work of 0.11 ms each (no slice ends on a step), giving way between them;
        what it awaited."""
        async def main():
            for _ in range(steps):
                self.now += 0.00011
                await slicer.give_way()
        self.awaited = []
        asyncio.run(main())
        return self.awaited


IDLE_STEPS = 37  # steps in a slice of 4 ms
BUSY_STEPS = 5  # in one of 0.5 ms


def test_an_idle_edge_leaves_delivery_slices_of_4_ms_and_a_turn_between(monkeypatch):
    loop = Loop(monkeypatch)
    slicer = slices.Slices()
    assert loop.work(IDLE_STEPS - 1, slicer) == []  # a batch inside one slice never yields
    assert loop.work(1, slicer) == [("turn", 0)]
    assert loop.work(IDLE_STEPS * 4, slicer) == [("turn", 0)] * 4


def test_a_busy_edge_gets_a_pause_after_every_half_millisecond_of_delivery(monkeypatch):
    loop = Loop(monkeypatch)
    slices.demand.at = loop.now  # a request, now
    slicer = slices.Slices()
    assert loop.work(BUSY_STEPS - 1, slicer) == []
    assert loop.work(1, slicer) == [("pause", slices.BUSY_PAUSE)]
    assert loop.work(BUSY_STEPS * 20, slicer) == [("pause", slices.BUSY_PAUSE)] * 20
    loop.now += slices.BUSY_FOR  # no request for 50 ms: idle again, from the next slice on
    assert loop.work(1 + IDLE_STEPS * 3, slicer) == [("turn", 0)] * 4


def test_each_request_the_edge_takes_marks_it_busy(tmp_path):
    async def main():
        async with edge_in_process(tmp_path) as (_, source, client):
            before = slices.perf_counter()
            answer = await client.post("/v1/batch", json={"pipeline_key": source.pipeline_key,
                                                          "batch": [{"type": "track", "event": "Signed Up"}]})
            assert answer.status_code == 200, answer.text
            assert slices.demand.at >= before and slices.demand.busy(slices.perf_counter())
    asyncio.run(main())
