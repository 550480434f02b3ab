"""The disk and the database on a bad day (issue 16): a full disk, a lock held by a backup tool,
an exception in the delivery task. Ingestion answers 503 with Retry-After (never 200 for an
event it did not store), /healthz says why, and delivery resumes on its own: no restart, no
PATCH. Every event that got a 200 reaches Pinterest."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import threading
import time

import httpx
import pytest

from tests.support import InProcessEdge, create_integration, create_source, post_batch, stats, wait_for


def send(edge, key, ids) -> httpx.Response:
    return post_batch(edge.url, key, [{"type": "track", "event": "Signed Up", "messageId": i} for i in ids],
                      timeout=30)


def delivered(fake, ids) -> bool:
    return set(ids) <= {e["event_id"] for e in fake.sandbox.events(include_test=False)}


def assert_refused_while_broken(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "storage_unavailable"
    assert int(response.headers["retry-after"]) > 0


@pytest.fixture
def in_process(tmp_path, fake_pinterest):
    edge = InProcessEdge(tmp_path, fake_pinterest.url, {"SIGNAL_FLUSH_INTERVAL": "0.1"}).start()
    with edge.admin() as admin:
        source = create_source(admin)
        integration = create_integration(admin, source["id"])
    yield edge, source["pipeline_key"], integration["id"]
    edge.stop()


def test_a_full_database_answers_503_then_recovers_by_itself(in_process, fake_pinterest):
    """SQLite's own SQLITE_FULL, from a page limit on the server's connection: the same error a
    full disk gives."""
    edge, key, integration_id = in_process
    assert send(edge, key, ["before-1", "before-2"]).status_code == 200
    wait_for(lambda: delivered(fake_pinterest, ["before-1", "before-2"]), what="the first events")

    def page_limit(limit):
        return edge.call(edge.services.db.run(
            lambda c: c.execute(f"PRAGMA max_page_count={limit}").fetchone()[0]))

    pages = edge.call(edge.services.db.run(lambda c: c.execute("PRAGMA page_count").fetchone()[0]))
    page_limit(pages)
    refused = [send(edge, key, [f"full-{i}-{n}" for n in range(50)]) for i in range(5)]
    for response in refused:
        assert_refused_while_broken(response)
    health = httpx.get(edge.url + "/healthz")
    assert health.status_code == 503 and health.json()["status"] == "degraded"
    assert "full" in health.json()["reason"]
    assert httpx.get(edge.admin_url + "/healthz").status_code == 503
    with edge.admin() as admin:
        assert "signal_edge_storage_ok 0" in httpx.get(edge.admin_url + "/metrics").text

    page_limit(1_000_000_000)
    assert send(edge, key, ["after-1"]).status_code == 200
    wait_for(lambda: delivered(fake_pinterest, ["after-1"]), timeout=30, what="delivery to resume")
    assert httpx.get(edge.url + "/healthz").json() == {"ok": True, "status": "ok"}
    sent = {e["event_id"] for e in fake_pinterest.sandbox.events()}
    assert not any(i.startswith("full-") for i in sent), "an event refused with 503 was delivered"


def test_a_full_disk_on_a_real_tmpfs(tmp_path, edge_factory, fake_pinterest):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("this machine cannot mount a tmpfs; the SQLITE_FULL test above covers a full database")
    try:
        edge = edge_factory(db=mount / "signal-edge.db", env={"SIGNAL_FLUSH_INTERVAL": "0.1"})
        with edge.admin() as admin:
            source = create_source(admin)
            create_integration(admin, source["id"], config={"test_mode": False})
        key = source["pipeline_key"]
        assert send(edge, key, ["disk-before"]).status_code == 200
        filler = mount / "filler"
        with open(filler, "wb") as handle:  # take every free byte
            try:
                while True:
                    handle.write(b"\0" * 65536)
                    handle.flush()
            except OSError:
                pass
        answers = [send(edge, key, [f"disk-full-{i}-{n}" for n in range(100)]) for i in range(20)]
        assert {r.status_code for r in answers} <= {200, 503} and 503 in {r.status_code for r in answers}
        for response in answers:
            if response.status_code == 503:
                assert_refused_while_broken(response)
        accepted = [f"disk-full-{i}-{n}" for i, r in enumerate(answers) if r.status_code == 200 for n in range(100)]
        health = httpx.get(edge.url + "/healthz")
        assert health.status_code == 503 and "full" in health.json()["reason"]
        filler.unlink()
        assert send(edge, key, ["disk-after"]).status_code == 200
        wait_for(lambda: delivered(fake_pinterest, ["disk-before", "disk-after", *accepted]), timeout=30,
                 what="every accepted event")
        edge.stop()
    finally:
        subprocess.run(["umount", "-l", str(mount)])


def test_a_lock_held_for_30_seconds(edge_factory, fake_pinterest):
    edge = edge_factory(env={"SIGNAL_FLUSH_INTERVAL": "0.1"})
    with edge.admin() as admin:
        source = create_source(admin)
        integration = create_integration(admin, source["id"])
    key = source["pipeline_key"]
    assert send(edge, key, ["lock-before"]).status_code == 200
    wait_for(lambda: delivered(fake_pinterest, ["lock-before"]), what="the first event")

    holder = sqlite3.connect(edge.db, isolation_level=None, timeout=30, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # what a careless backup tool does
    released = threading.Event()

    def release():
        time.sleep(30)
        holder.execute("ROLLBACK")
        released.set()
    threading.Thread(target=release, daemon=True).start()
    statuses = []
    while not released.is_set():
        response = send(edge, key, [f"lock-{len(statuses)}"])
        statuses.append(response.status_code)
        if response.status_code == 503:
            assert_refused_while_broken(response)
    assert set(statuses) <= {200, 503} and statuses.count(503) >= 3, statuses
    accepted = [f"lock-{i}" for i, status in enumerate(statuses) if status == 200]
    assert send(edge, key, ["lock-after"]).status_code == 200
    wait_for(lambda: delivered(fake_pinterest, ["lock-after", *accepted]), timeout=40,
             what="delivery to resume after the lock")
    with edge.admin() as admin:
        counts = stats(admin, integration["id"])
    assert counts["queued"] == 0 and counts["delivered"] == 2 + len(accepted)
    log = edge.output()
    assert "Traceback" not in log  # storage faults are one line each, not a traceback per request


def test_exceptions_in_the_delivery_task_heal_by_themselves(in_process, fake_pinterest):
    edge, key, integration_id = in_process
    queue = edge.services.queue
    real_lease = queue.lease
    failures = {"left": 3}

    async def failing_lease(*args, **kwargs):
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("injected fault in the delivery task")
        return await real_lease(*args, **kwargs)

    queue.lease = failing_lease
    assert send(edge, key, ["injected-1"]).status_code == 200
    wait_for(lambda: delivered(fake_pinterest, ["injected-1"]), timeout=20, what="delivery after injected faults")
    assert failures["left"] == 0
    assert edge.services.delivery.loop_failures[integration_id] == 3

    # A worker whose task died outright is restarted by the supervisor.
    worker = edge.services.delivery.workers[integration_id]
    edge.loop.call_soon_threadsafe(worker.task.cancel)
    wait_for(lambda: edge.services.delivery.workers[integration_id] is not worker, timeout=5,
             what="the supervisor to restart the worker")
    assert send(edge, key, ["after-restart"]).status_code == 200
    wait_for(lambda: delivered(fake_pinterest, ["after-restart"]), timeout=10, what="delivery by the new worker")


def test_a_batch_that_fails_unexpectedly_counts_an_attempt_and_shows_in_health(in_process, fake_pinterest):
    edge, key, integration_id = in_process
    worker = edge.services.delivery.workers[integration_id]
    real_send = worker._send
    calls = {"n": 0}

    async def broken_send(job, pending, first=False):
        calls["n"] += 1
        if calls["n"] == 1:
            raise MemoryError("injected: building the request ran out of memory")
        return await real_send(job, pending, first)

    worker._send = broken_send
    assert send(edge, key, ["batch-fault"]).status_code == 200
    with edge.admin() as admin:
        def unhealthy():
            integration = admin.get(f"/integrations/{integration_id}").json()
            return integration if integration["health"]["problem"] == "internal_error" else None
        seen = wait_for(unhealthy, timeout=10, what="health to show the failure")
        assert "MemoryError" in seen["delivery"]["last_error"]
        assert "signal_edge_delivery_batch_failures_total" in httpx.get(edge.admin_url + "/metrics").text
        wait_for(lambda: delivered(fake_pinterest, ["batch-fault"]), timeout=10, what="the retry")
        wait_for(lambda: admin.get(f"/integrations/{integration_id}").json()["health"]["status"] == "healthy",
                 what="health to recover")
    assert asyncio.iscoroutinefunction(real_send)
