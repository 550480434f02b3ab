"""One request to Pinterest (delivery/pinterest/client.py) against the sandbox on a real socket:
it ends at its deadline however slowly the answer comes, and leaves no cyclic garbage behind
(the server runs with rare full collections: a cycle holding a request body stayed for minutes)."""

from __future__ import annotations

import gc
import time

import httpx

from delivery.pinterest import client
from delivery.pinterest.sandbox import Fault
from tests.support import ACCESS_TOKEN, AD_ACCOUNT, run_async

BODY = (b'{"data": [{"event_name": "page_visit", "action_source": "web", "event_time": %d, "event_id": "e-1", '
        b'"user_data": {"client_ip_address": "203.0.113.9", "client_user_agent": "Mozilla/5.0"}}]}')


def send(fake, deadline: float = 5.0) -> tuple[client.Answer, float]:
    async def go():
        async with httpx.AsyncClient(timeout=deadline) as http:
            started = time.monotonic()
            answer = await client.send(http, fake.url, AD_ACCOUNT, ACCESS_TOKEN, BODY % int(time.time()), 1, False,
                                       deadline)
            return answer, time.monotonic() - started
    return run_async(go())


def test_an_answer_that_trickles_ends_at_the_deadline(fake_pinterest):
    """httpx's own timeout is per read: a byte every 0.2 s never trips a 1 s read timeout."""
    fake_pinterest.sandbox.add_fault(Fault(200, trickle=0.2))
    answer, took = send(fake_pinterest, deadline=1.0)
    assert (answer.kind, answer.status) == ("retry", None) and "within 1s (timeout)" in answer.message
    assert took < 5  # the whole answer would take the trickle tens of seconds


def test_a_request_leaves_no_cyclic_garbage(fake_pinterest):
    assert send(fake_pinterest)[0].kind == "ok"  # warm: imports, the connection pool's first objects

    async def count() -> int:
        async with httpx.AsyncClient(timeout=5) as http:
            gc.collect()
            gc.disable()
            gc.set_debug(gc.DEBUG_SAVEALL)
            try:
                for _ in range(5):
                    answer = await client.send(http, fake_pinterest.url, AD_ACCOUNT, ACCESS_TOKEN,
                                               BODY % int(time.time()), 1, False, 5.0)
                    assert answer.kind == "ok"
                gc.collect()
                return sum(1 for o in gc.garbage if type(o).__module__.startswith(("httpx", "httpcore")))
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
                gc.enable()
    assert run_async(count()) == 0
