"""The disk and the database on a bad day (issue 16): a full disk, a lock held by a backup tool,
an exception in the delivery task. Ingestion answers 503 with Retry-After (never 200 for an
event it did not store), /healthz says why, and delivery resumes on its own: no restart, no
PATCH. Every event that got a 200 reaches Pinterest."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter

import httpx
import msgspec
import pytest

from collector.services import close_database, open_backend
from collector.settings import load_settings
from delivery.pinterest.sandbox import Fault
from delivery.sqlite.migrations import MIGRATIONS
from delivery.store import DebugRecord, StorageError
from tests.support import ROOT, InProcessEdge, create_integration, create_source, post_batch, stats, wait_for


def send(edge, key, ids) -> httpx.Response:
    return post_batch(edge.url, key, [{"type": "track", "event": "Signed Up", "messageId": i} for i in ids],
                      timeout=30)


def delivered(fake, ids) -> bool:
    return set(ids) <= {e["event_id"] for e in fake.sandbox.events(include_test=False)}


def assert_refused_while_broken(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "storage_unavailable"
    assert int(response.headers["retry-after"]) > 0


def fail_first(obj, method: str, exc: Exception, times: int) -> dict:
    """Make `obj.method` (a coroutine) raise `exc` on its first `times` calls; returns the count
    of failures still to come, as {"left": n}."""
    real, failures = getattr(obj, method), {"left": times}

    async def failing(*args, **kwargs):
        if failures["left"]:
            failures["left"] -= 1
            raise exc
        return await real(*args, **kwargs)

    setattr(obj, method, failing)
    return failures


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


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MB tmpfs, unmounted at the end (skipped only where mounting is impossible)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("this machine cannot mount a tmpfs; the SQLITE_FULL test above covers a full database")
    yield mount
    subprocess.run(["umount", "-l", str(mount)])


@pytest.mark.xfail(strict=False, reason="known fault, not fixed yet (CHANGELOG): the disk reserve's room counts the "
                   "file's free pages, but the WAL needs the disk's own bytes; about 1 run in 5 fills the disk")
def test_a_small_disk_fills_answers_503_and_drains_by_itself(small_disk, edge_factory, fake_pinterest):
    """Pinterest is away while events keep coming: the queue grows until the disk is down to
    the reserve kept for delivery (8 MB here), and from then on ingestion answers 503. Delivery
    still has the room to lease, retry and settle (it never meets a full disk), and once
    Pinterest is back it drains the queue, which frees room, and ingestion resumes: nobody
    frees any disk space."""
    edge = edge_factory(db=small_disk / "signal-edge.db", env={
        "SIGNAL_FLUSH_INTERVAL": "0.1", "SIGNAL_DISK_RESERVE_MB": "8", "SIGNAL_RETRY_DELAYS": "5,5,5,5,5,5,5"})
    with edge.admin() as admin:
        source = create_source(admin, rate_limit_per_second=1_000_000, rate_limit_burst=1_000_000)
        integration = create_integration(admin, source["id"], config={"test_mode": False})
    key = source["pipeline_key"]
    fake_pinterest.sandbox.add_fault(Fault(503, count=0))
    pad = "x" * 400  # about 1 KB an event as queued
    accepted, answers, said_why = [], Counter(), 0
    while answers["disk_full"] < 20:  # and on for a few seconds: the room is looked at again meanwhile
        ids = [f"fill-{len(accepted) + sum(answers.values())}-{n}" for n in range(200)]
        response = post_batch(edge.url, key, [{"type": "track", "event": "Signed Up", "messageId": i,
                                               "properties": {"note": pad}} for i in ids], timeout=30)
        if response.status_code == 200:
            accepted += ids
            continue
        assert response.status_code == 503 and int(response.headers["retry-after"]) > 0, response.text
        answers[response.json()["error"]["code"]] += 1
        assert len(answers) == 1, answers  # only the reserve's 503, never a write that failed
        health = httpx.get(edge.url + "/healthz")
        said_why += health.status_code == 503 and "SIGNAL_DISK_RESERVE_MB" in health.json()["reason"]
        time.sleep(0.1)
        assert len(accepted) < 30_000, "the disk never filled"
    assert len(accepted) > 5_000, "refused long before the disk was down to the reserve"
    # /healthz says why while ingestion waits. (Not necessarily every time: a checkpoint that
    # returns the WAL's room can lift the reserve for a moment, and ingestion then resumes.)
    assert said_why, "/healthz never named the disk reserve while ingestion answered disk_full"

    fake_pinterest.sandbox.clear_faults()  # Pinterest is back; nobody touches the disk
    # The outage's 503s halved the account's rate down to 1 call/s (it doubles back every 10 s),
    # and a lease takes 100 events while the disk is tight: up to about 40 s for 20k events on an idle
    # host, by construction. Hence the room for a busy one.
    try:
        wait_for(lambda: delivered(fake_pinterest, accepted), timeout=240, interval=0.5, what="every accepted event")
    except AssertionError:  # say where the drain stands (the edge's log, the queue's counts)
        with edge.admin() as admin:
            counts = stats(admin, integration["id"])
        missing = len(set(accepted) - {e["event_id"] for e in fake_pinterest.sandbox.events(include_test=False)})
        raise AssertionError(f"{missing} of {len(accepted)} not delivered; {counts}\n{edge.output()[-4000:]}") from None
    wait_for(lambda: send(edge, key, ["after-drain"]).status_code == 200, timeout=30, interval=0.5,
             what="ingestion to resume by itself")
    wait_for(lambda: delivered(fake_pinterest, ["after-drain"]), what="the event taken after the drain")
    with edge.admin() as admin:
        assert stats(admin, integration["id"])["dead_lettered"] == 0
    assert "SQLITE_FULL" not in edge.output(), "delivery met a full disk"
    edge.stop()


def test_the_debugger_log_gives_its_room_back_to_events(small_disk, edge_factory, fake_pinterest):
    """A long outage writes a debugger record per event and attempt, each carrying its event, and
    delivering the queue frees none of their room: records alone can hold the disk below the
    reserve, and ingestion would wait for ever (what CI once met). Down to the reserve the
    debugger keeps only its newest records, and ingestion goes on."""
    db = small_disk / "signal-edge.db"
    note = msgspec.json.encode({"note": "x" * 30_000})
    old = [DebugRecord(at=time.time(), source_id="src_gone", event_id=f"old-{n}", event="Signed Up",
                       status="retrying", integration_id="int_gone", incoming=msgspec.Raw(note)) for n in range(560)]

    async def write_records():  # about 17 MB of them: the disk is left below the reserve of 8 MB
        settings = load_settings({"db": str(db)}, environ={})
        database, store, queue = await open_backend(settings, "node-a", serving=False)
        for part in range(0, len(old), 40):
            await store.add_debug(old[part:part + 40])
        await queue.close()
        await close_database(database)
    asyncio.run(write_records())

    # (the edge is up once /healthz answers 200: the disk back above the reserve)
    edge = edge_factory(db=db, env={"SIGNAL_FLUSH_INTERVAL": "0.1", "SIGNAL_DISK_RESERVE_MB": "8"})
    assert "below the reserve" in edge.output() and "again: ingestion resumes" in edge.output()
    with edge.admin() as admin:
        source = create_source(admin)
        create_integration(admin, source["id"], config={"test_mode": False})
    wait_for(lambda: send(edge, source["pipeline_key"], ["after-outage"]).status_code == 200, timeout=30,
             interval=0.5, what="ingestion to go on")
    wait_for(lambda: delivered(fake_pinterest, ["after-outage"]), what="the event taken")
    with edge.admin() as admin:
        kept = admin.get("/debugger/events", params={"integration_id": "int_gone", "limit": 100}).json()["data"]
    assert kept[0]["event_id"] == "old-559", "the newest records are kept"
    edge.stop()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM debug_log WHERE topic = 'int_gone'").fetchone() == (200,)


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
    failures = fail_first(edge.services.queue, "lease", RuntimeError("injected fault in the delivery task"), 3)
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


def test_a_batch_that_cannot_be_settled_is_one_log_line_and_goes_again(in_process, fake_pinterest, caplog):
    """Pinterest took the batch, then the database failed to record it: its lease runs out and
    it is sent again (Pinterest deduplicates on event_id), and the log says so in one line."""
    edge, key, integration_id = in_process
    delivery = edge.services.delivery
    delivery.settings = msgspec.structs.replace(delivery.settings, lease_seconds=1.0)
    fail_first(edge.services.queue, "settle", StorageError("the database cannot store anything now: injected"), 1)
    with caplog.at_level(logging.WARNING, logger="signal_edge"):
        assert send(edge, key, ["unsettled-1"]).status_code == 200
        sent = lambda: [e["event_id"] for e in fake_pinterest.sandbox.events()].count("unsettled-1")  # noqa: E731
        wait_for(lambda: sent() >= 2, timeout=15, what="the unsettled batch to go again")
        with edge.admin() as admin:
            wait_for(lambda: stats(admin, integration_id)["delivered"] == 1, what="the second settlement")
    lines = [r for r in caplog.records if "could not be settled" in r.getMessage()]
    assert len(lines) == 1 and "injected" in lines[0].getMessage()
    assert lines[0].exc_info is None, "a storage fault is one line, without a traceback"


def test_a_batch_that_fails_unexpectedly_counts_an_attempt_and_shows_in_health(in_process, fake_pinterest):
    edge, key, integration_id = in_process
    handler = edge.services.delivery.workers[integration_id].handler
    real_handle = handler.handle
    calls = {"n": 0}

    async def broken_handle(job, control):
        calls["n"] += 1
        if calls["n"] == 1:
            raise MemoryError("injected: building the request ran out of memory")
        return await real_handle(job, control)

    handler.handle = broken_handle
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
    assert asyncio.iscoroutinefunction(real_handle)


def start_refused(*args: str) -> str:
    """What `signal-edge serve` says when it refuses to start (it must exit 1 in one line)."""
    run = subprocess.run([sys.executable, "-m", "collector", "serve", "--port", "0", "--admin-port", "0", *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert run.returncode == 1, run.stderr
    said = run.stderr.strip()
    assert "\n" not in said and "Traceback" not in said, said
    return said


@pytest.mark.process
def test_startup_refusals_are_one_line(tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database, " * 512)
    assert "is not a SQLite database" in start_refused("--db", str(garbage))

    newer = tmp_path / "newer.db"
    sqlite3.connect(newer).execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    assert "newer than this signal-edge" in start_refused("--db", str(newer))

    locked = tmp_path / "locked.db"
    holder = sqlite3.connect(locked, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    assert "is locked by another process" in start_refused("--db", str(locked))
    holder.execute("ROLLBACK")

    damaged = tmp_path / "damaged.db"
    conn = sqlite3.connect(damaged)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT)")
    conn.executemany("INSERT INTO t (x) VALUES (?)", [("v" * 60,) for _ in range(5000)])
    conn.commit()
    conn.close()
    with open(damaged, "r+b") as handle:  # a b-tree page's header overwritten
        handle.seek(4096 * 20)
        handle.write(b"\x0d\x00\x00\xff\xff\xff\x12\x34")
    said = start_refused("--db", str(damaged))
    assert "is damaged (SQLite quick_check" in said and "restore it from a backup" in said


def test_listings_never_fail_on_a_stored_record(edge_factory):
    """Records an older version stored 980 and 1200 levels deep: the debugger and the dead
    letters still list (and replay) them; a replay id beyond int64 is a 400, not a 500."""
    edge = edge_factory()
    with edge.admin() as admin:
        integration = create_integration(admin, create_source(admin)["id"])
    edge.stop()
    conn = sqlite3.connect(edge.db)
    for depth in (980, 1200):
        deep = b'{"a":' * depth + b"1" + b"}" * depth
        record = b'{"at":1,"source_id":"s","event_id":"deep","event":"x","status":"failed","incoming":' + deep + b"}"
        conn.execute("INSERT INTO debug_log (at, source_id, topic, event_id, status, record) VALUES (?,?,?,?,?,?)",
                     (time.time(), "s", integration["id"], f"deep-{depth}", "failed", record))  # not yet expired
        conn.execute("INSERT INTO dead_letters (topic, event_id, payload, created_at, dead_at, attempts, reason) "
                     "VALUES (?,?,?,?,?,?,?)", (integration["id"], f"deep-{depth}", b"[" + deep + b"]", time.time(),
                                                time.time(), 1, "r"))
    conn.execute("UPDATE counters SET dead_lettered = 2 WHERE topic=?", (integration["id"],))
    conn.commit()
    conn.close()
    edge = edge_factory(db=edge.db)
    with edge.admin() as admin:
        listed = admin.get("/debugger/events")
        assert listed.status_code == 200
        assert {r["event_id"] for r in listed.json()["data"]} >= {"deep-980", "deep-1200"}
        letters = admin.get(f"/integrations/{integration['id']}/dead-letters")
        assert letters.status_code == 200 and len(letters.json()["data"]) == 2
        huge = admin.post(f"/integrations/{integration['id']}/dead-letters/replay", json={"ids": [2**64]})
        assert huge.status_code == 400 and huge.json()["error"]["field"] == "ids[0]"
        assert admin.post(f"/integrations/{integration['id']}/dead-letters/replay", json={}).json()["replayed"] == 2
    assert "Traceback" not in edge.output()
