"""The ConfigStore contract, one suite for every backend (SQLite and PostgreSQL): the snapshot
and its change listeners, secrets sealed at rest, identity memory, meta, admin sessions, the
audit and debugger logs, and re-sealing for a key rotation."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from delivery.config import Health, Integration, PinterestConfig, Source
from delivery.events import Identity
from delivery.secrets import SecretBox
from delivery.sql.logs import REFUSAL_EXAMPLES_KEPT
from delivery.store import AdminSession, DebugRecord, Refusal, SourceActivity, StorageUnusable, StoredIdentity

KEY = "test-secret-key"


def run(coro):
    return asyncio.run(coro)


def source(i: int = 1, **fields) -> Source:
    return Source(id=f"src_{i:03d}", name=f"Shop {i}", pipeline_key=f"dk_live_{i}", created_at=float(i),
                  updated_at=float(i), **fields)


def integration(i: int = 1, source_id: str = "src_001", **fields) -> Integration:
    return Integration(id=f"int_{i:03d}", source_id=source_id, name=f"Pinterest {i}", created_at=float(i),
                       updated_at=float(i), config=PinterestConfig("549764982399", f"pina_SECRET_{i}", f"ct_SECRET_{i}"),
                       **fields)


def test_the_snapshot_is_durable_and_listeners_hear_of_changes(backend):
    async def main():
        async with backend() as (_, store, _):
            await store.open(SecretBox(KEY))
            heard = []
            store.subscribe(lambda kind, object_id: heard.append((kind, object_id)))
            await store.put_source(source(1, domain="shop.example"), "create")
            await store.put_source(source(2), "create")
            await store.put_integration(integration(1), "create")
            assert store.source_by_key("dk_live_1").domain == "shop.example"
            assert [s.id for s in store.sources()] == ["src_001", "src_002"]
            await store.put_source(msgspec.structs.replace(source(1), pipeline_key="dk_live_new"), "rotate-key")
            assert store.source_by_key("dk_live_1") is None and store.source_by_key("dk_live_new").id == "src_001"
            await store.set_health("int_001", Health("unhealthy", "unauthorized", "Authentication failed.", 5.0))
            await store.delete_source("src_002")
            assert heard == [("source", "src_001"), ("source", "src_002"), ("integration", "int_001"),
                             ("source", "src_001"), ("source", "src_002")]  # health is not configuration
        async with backend(node="node-b") as (_, store, _):
            await store.open(SecretBox(KEY))
            assert [s.id for s in store.sources()] == ["src_001"]
            assert store.source_by_key("dk_live_new").id == "src_001"
            found = store.integration("int_001")
            assert found.config.access_token == "pina_SECRET_1" and found.health.problem == "unauthorized"
            assert store.integrations("src_001") == [found] and store.integrations("src_none") == []
    run(main())


def test_tokens_are_sealed_at_rest_and_open_only_with_their_key(backend):
    async def main():
        async with backend() as (_, store, _):
            await store.open(SecretBox(KEY))
            await store.put_source(source(), "create")
            await store.put_integration(integration(), "create")
            _, bodies = await store._load()
            assert b"pina_SECRET_1" not in bodies[0] and b"ct_SECRET_1" not in bodies[0]
        async with backend() as (_, store, _):
            with pytest.raises(StorageUnusable, match="cannot be decrypted"):
                await store.open(SecretBox("another key"))
    run(main())


def test_identity_memory(backend):
    async def main():
        remembered = StoredIdentity("user-1", Identity(em=["a" * 64]))
        async with backend() as (_, store, _):
            await store.open(SecretBox(KEY))
            assert await store.identity("anon-1") is None
            assert store.cached_identity("anon-1") is None  # known absent
            assert store.cached_identity("anon-2") is store.MISSING
            await store.save_identity("anon-1", remembered)
            assert await store.identity("anon-1") == remembered
        async with backend(node="node-b") as (_, store, _):
            await store.open(SecretBox(KEY))
            assert await store.identity("anon-1") == remembered
    run(main())


def test_identity_memory_by_user_id(backend):
    """A server-side call has no browser cookie: what the site's server said about a userId is
    kept by that userId, apart from every browser's memory, under a hash of the userId only,
    and it expires with the rest."""
    async def main():
        ana = StoredIdentity("ana-42", Identity(em=["b" * 64]))
        async with backend() as (db, store, _):
            await store.open(SecretBox(KEY))
            assert await store.user_identity("ana-42") is None
            await store.save_user_identity("ana-42", ana)
            await store.save_identity("browser-1", StoredIdentity("ana-42", Identity(em=["c" * 64])))
            assert await store.user_identity("ana-42") == ana
            assert await store.user_identity("bo-7") is None and await store.identity("ana-42") is None
        async with backend(node="node-b") as (db, store, _):
            await store.open(SecretBox(KEY))
            assert await store.user_identity("ana-42") == ana  # durable, and seen by another node
            keys = await _identity_keys(backend.kind, db)
            assert len(keys) == 2 and "browser-1" in keys and not any("ana-42" in k for k in keys)
            store.forget_identities()
            assert await store.prune_identities() == 0
            store.identity_retention = 0.0
            assert await store.user_identity("ana-42") is None  # past its retention: gone
            assert await store.prune_identities() == 2
    run(main())


async def _identity_keys(kind: str, db) -> list[str]:
    if kind == "postgres":
        return [r[0] for r in await db.run(lambda c: c.fetch("SELECT anonymous_id FROM identities"))]
    return await db.run(lambda c: [r[0] for r in c.execute("SELECT anonymous_id FROM identities")])


def test_meta(backend):
    async def main():
        async with backend() as (_, store, _):
            await store.open(SecretBox(KEY))
            assert await store.get_meta("k") is None
            assert await store.init_meta("k", "first") == "first"
            assert await store.init_meta("k", "second") == "first"  # the first one stored wins
            await store.set_meta("k", "third")
            assert await store.get_meta("k") == "third"
            await store.delete_meta("k")
            assert await store.get_meta("k") is None
    run(main())


def test_admin_sessions(backend):
    async def main():
        now = time.time()
        async with backend() as (_, store, _):
            await store.open(SecretBox(KEY))
            live, other = AdminSession("k1", "csrf1", now, now + 60, "127.0.0.1"), AdminSession("k2", "c", now, now + 60)
            await store.put_session(live)
            await store.put_session(other)
            await store.put_session(AdminSession("old", "c", now - 100, now - 1))
            assert await store.get_session("k1") == live
            assert await store.get_session("old") is None  # expired
            assert await store.delete_sessions("k1") == 1 and await store.get_session("k1") is None
            assert await store.delete_sessions(None) >= 1 and await store.get_session("k2") is None
    run(main())


def test_source_activity_adds_up_keeps_the_last_few_refusals_and_goes_with_its_source(backend):
    async def main():
        async with backend() as (_, store, _):
            await store.open(SecretBox(KEY))
            for i in (1, 2):
                await store.put_source(source(i), "create")
            await store.record_activity({("src_001", "origin_not_allowed"): 3, ("src_001", "invalid_event"): 1,
                                         ("src_002", "rate_limited"): 7},
                                        [("src_001", Refusal(float(i), "origin_not_allowed", f"https://evil{i}.example"))
                                         for i in range(REFUSAL_EXAMPLES_KEPT + 5)], {"src_001": 50.0})
            await store.record_activity({("src_001", "origin_not_allowed"): 2},
                                        [("src_002", Refusal(99.0, "rate_limited", "x"))], {"src_001": 40.0})
            found = await store.activity(["src_001", "src_002", "src_none"])
            assert found["src_001"].refused == {"origin_not_allowed": 5, "invalid_event": 1}
            newest = [r.detail for r in found["src_001"].recent_refusals]
            assert newest == [f"https://evil{i}.example" for i in reversed(range(5, REFUSAL_EXAMPLES_KEPT + 5))]
            assert found["src_001"].last_event_at == 50.0  # a late flush of another node does not go back
            assert found["src_002"] == SourceActivity({"rate_limited": 7}, [Refusal(99.0, "rate_limited", "x")])
            assert found["src_none"] == SourceActivity({}, [])
            await store.delete_source("src_001")
            assert (await store.activity(["src_001"]))["src_001"] == SourceActivity({}, [])
    run(main())


def test_the_audit_log_is_newest_first_and_redacted(backend):
    async def main():
        async with backend() as (_, store, _):
            await store.open(SecretBox(KEY))
            await store.put_source(source(), "create")
            await store.put_integration(integration(), "create")
            await store.audit("replay", "integration", "int_001", None, {"replayed": 3})
            entries = await store.audit_log(None, 10)
            assert [(e.action, e.object_type) for e in entries] == [
                ("replay", "integration"), ("create", "integration"), ("create", "source")]
            assert entries[1].new["config"]["access_token"] == "[redacted]" and "health" not in entries[1].new
            assert [e.action for e in await store.audit_log(entries[0].id, 10)] == ["create", "create"]
    run(main())


def test_the_debugger_log_filters_pages_and_prunes(backend, monkeypatch):
    import delivery.sql.logs

    monkeypatch.setattr(delivery.sql.logs, "DEBUG_LOG_KEEP", 8)

    async def main():
        async with backend() as (_, store, _):
            await store.open(SecretBox(KEY))
            records = [DebugRecord(float(i), "src_a", f"e{i}", "Signed Up", "delivered" if i % 2 else "failed",
                                   integration_id="int_a" if i < 6 else "int_b") for i in range(10)]
            await store.add_debug(records)
            everything = await store.debug_records(None, None, None, None, 100)
            assert [r.event_id for r in everything] == [f"e{i}" for i in range(9, 1, -1)]  # pruned to 8
            failed = await store.debug_records(None, "int_a", "failed", None, 100)
            assert [r.event_id for r in failed] == ["e4", "e2"]
            page = await store.debug_records("src_a", None, None, everything[2].id, 2)
            assert [r.event_id for r in page] == ["e6", "e5"]
    run(main())


def test_down_to_the_disk_reserve_the_debugger_log_keeps_only_its_newest(backend, monkeypatch):
    """shrink_debug (the disk is low) cuts the log to DEBUG_LOG_KEEP_LOW records, a few a statement
    (secure_delete writes what goes to the WAL); again only once records were added since."""
    import delivery.sql.logs

    monkeypatch.setattr(delivery.sql.logs, "DEBUG_LOG_KEEP_LOW", 3)
    monkeypatch.setattr(delivery.sql.logs, "DEBUG_TRIM_BATCH", 2)

    async def ids(store):
        return [r.event_id for r in await store.debug_records(None, None, None, None, 100)]

    async def main():
        async with backend() as (_, store, _):
            await store.open(SecretBox(KEY))
            await store.add_debug([DebugRecord(float(i), "src_a", f"e{i}", "Signed Up", "retrying") for i in range(10)])
            await store.shrink_debug()
            assert await ids(store) == ["e9", "e8", "e7"]
            await store.add_debug([DebugRecord(10.0, "src_a", "e10", "Signed Up", "retrying")])
            await store.shrink_debug()
            assert await ids(store) == ["e10", "e9", "e8"]
    run(main())


def test_a_debugger_record_whose_event_id_holds_nul_is_kept(backend):
    """An event queued before the edge refused NUL in ids must not cost its batch's records
    (PostgreSQL refuses NUL in text columns; the whole insert failed)."""
    async def main():
        async with backend() as (_, store, _):
            await store.open(SecretBox(KEY))
            await store.add_debug([DebugRecord(1.0, "src_a", "bad\x00id", "x", "failed"),
                                   DebugRecord(2.0, "src_a", "good", "x", "delivered")])
            kept = await store.debug_records(None, None, None, None, 10)
            assert [r.event_id for r in kept] == ["good", "bad\x00id"]  # the record itself is JSON: kept as sent
    run(main())


def test_reseal_encrypts_every_token_with_the_new_key_and_ends_sessions(backend):
    """Alert destinations' URLs too (a Slack webhook's holds its secret): in the same transaction."""
    from collector.services import alert_store_of

    async def main():
        async with backend() as (db, store, _):
            await store.open(SecretBox(KEY))
            await store.put_source(source(), "create")
            await store.put_integration(integration(), "create")
            await store.put_session(AdminSession("k1", "c", time.time(), time.time() + 60))
            alerts = alert_store_of(backend.settings, db)
            hook = "https://hooks.slack.example/services/T0/B0/SECRET"
            await alerts.put_destination("dst_1", msgspec.json.encode({"id": "dst_1", "url": store.box.seal(hook)}))
            assert await store.reseal(SecretBox("new key"), {"secret_key_check": "fp"}) == 1
            assert await store.get_session("k1") is None and await store.get_meta("secret_key_check") == "fp"
        async with backend() as (db, store, _):
            await store.open(SecretBox("new key"))
            assert store.integration("int_001").config.conversion_token == "ct_SECRET_1"
            [stored] = await alert_store_of(backend.settings, db).destinations()
            assert store.box.open(msgspec.json.decode(stored)["url"]) == hook
    run(main())


def test_updates_apply_to_what_is_stored_not_to_a_stale_snapshot(backend):
    """Two processes on one database: B's snapshot still holds the token A has replaced. B's
    health update and B's own change keep A's token: a write never puts back what another
    writer replaced (a refresh token Pinterest has already rotated, say)."""
    def token(value: str):
        return lambda current: msgspec.structs.replace(
            current, config=msgspec.structs.replace(current.config, access_token=value))

    async def main():
        async with backend() as (_, a, _), backend(node="node-b") as (_, b, _):
            await a.open(SecretBox(KEY))
            await a.put_source(source(), "create")
            await a.put_integration(integration(), "create")
            await b.open(SecretBox(KEY))
            refreshed = token("pina_REFRESHED")(a.integration("int_001"))
            await a.put_integration(refreshed, "refresh")
            assert b.integration("int_001").config.access_token == "pina_SECRET_1"  # not told yet

            await b.set_health("int_001", Health("unhealthy", "unauthorized", "Authentication failed.", 5.0))
            async with backend(node="node-c") as (_, c, _):
                await c.open(SecretBox(KEY))
                assert c.integration("int_001").config.access_token == "pina_REFRESHED"
            stored = await a.update_integration("int_001", token("pina_REFRESHED"), "refresh")
            assert stored.health.problem == "unauthorized" and a.integration("int_001") == stored
            renamed = await b.update_integration(
                "int_001", lambda current: msgspec.structs.replace(current, name="Renamed"), "update")
            assert renamed.config.access_token == "pina_REFRESHED" and renamed.health.problem == "unauthorized"
            assert b.integration("int_001") == renamed
            assert await b.update_integration("int_001", lambda current: None, None) == renamed  # nothing to do
            assert await b.update_integration("int_none", token("x"), None) is None
        async with backend() as (_, store, _):
            await store.open(SecretBox(KEY))
            found = store.integration("int_001")
            assert (found.name, found.config.access_token, found.health.problem) == \
                ("Renamed", "pina_REFRESHED", "unauthorized")
            changes = [entry.new["name"] for entry in await store.audit_log(None, 10) if entry.action == "update"]
            assert changes == ["Renamed"]
    run(main())


def test_each_kind_expires_in_bounded_batches(backend):
    """Retention (issue 27): the delivery log, the audit log, the alert history, the event counts
    and ended suppressions, the oldest first, `limit` rows a statement."""
    from collector.services import alert_store_of

    async def main():
        async with backend() as (db, store, _):
            await store.open(SecretBox(KEY))
            alerts = alert_store_of(backend.settings, db)
            await store.add_debug([DebugRecord(float(i), "src_a", f"e{i}", "x", "delivered") for i in range(5)])
            for i in range(3):
                await store.audit("update", "source", f"src_{i}", None, None)
                await alerts.add_history(float(i), b"{}")
            cut = time.time()
            await store.audit("update", "source", "src_new", None, None)
            await alerts.add_volume([("int_a", "page", float(b), 1) for b in range(4)])
            await store.suppress({"twice", "kept"}, time.time() + 3600)
            await store.suppress({"twice"}, time.time() - 1)  # the later end of the two wins
            await store._write_suppressions([("ended", time.time() - 5)])

            assert await store.prune("debug", 3.0, limit=2) == 2
            assert await store.prune("debug", 3.0, limit=2) == 1
            assert [r.event_id for r in await store.debug_records(None, None, None, None, 10)] == ["e4", "e3"]
            assert await store.prune("audit", cut, limit=10) == 3
            assert [e.object_id for e in await store.audit_log(None, 10)] == ["src_new"]
            assert await store.prune("alerts", 2.0, limit=10) == 2 and len(await alerts.history(None, 10)) == 1
            assert await store.prune("volume", 2.0, limit=10) == 2
            assert sorted(r[2] for r in await alerts.volume(0.0)) == [2.0, 3.0]
            assert await store.prune("suppressions", time.time(), limit=10) == 1
            await store.load_suppressions()
            assert set(store.suppressions.until) == {"twice", "kept"}
    run(main())


def test_the_retention_pass_covers_every_kind(backend):
    from delivery.queue import QueueItem, Settlement
    from delivery.retention import Retention, prune_all

    async def main():
        forty_days_ago = [time.time() - 40 * 86400]  # the queue's clock, when the dead letter died
        async with backend(clock=lambda: forty_days_ago[0]) as (_, store, queue):
            await store.open(SecretBox(KEY))
            await queue.open()
            await store.add_debug([DebugRecord(time.time() - 10 * 86400, "src_a", "old", "x", "delivered"),
                                   DebugRecord(time.time(), "src_a", "new", "x", "delivered")])
            await queue.append([QueueItem("int_a", b'["m"]', 1000.0)])
            leased = await queue.lease("int_a", 1, 60)
            await queue.settle("int_a", Settlement(dead=[(leased[0].id, "bad")]))
            forty_days_ago[0] = time.time()
            gone = await prune_all(store, queue, Retention())  # 7 days of records, 30 of dead letters
            assert gone["debug"] == 1 and gone["dead_letters"] == 1 and gone["identities"] == 0
            assert [r.event_id for r in await store.debug_records(None, None, None, None, 10)] == ["new"]
    run(main())


def test_retention_deletes_rows_that_carry_events_a_hundred_a_statement(backend):
    """Debugger records and dead letters hold an event each (up to 32 KB), and SQLite's
    secure_delete writes what a statement deletes to the WAL: they go 100 a statement, the
    others 1000, and every expired one goes."""
    from delivery.queue import QueueItem, Settlement
    from delivery.retention import Retention, prune_all

    async def main():
        forty_days_ago = [time.time() - 40 * 86400]
        async with backend(clock=lambda: forty_days_ago[0]) as (_, store, queue):
            await store.open(SecretBox(KEY))
            await queue.open()
            await store.add_debug([DebugRecord(forty_days_ago[0], "src_a", f"e{i}", "x", "failed") for i in range(250)])
            await queue.append([QueueItem("int_a", b'["m%d"]' % i, 1000.0) for i in range(250)])
            leased = await queue.lease("int_a", 250, 60)
            await queue.settle("int_a", Settlement(dead=[(item.id, "bad") for item in leased]))
            forty_days_ago[0] = time.time()
            limits: list[tuple[str, int]] = []
            prune, prune_dead = store.prune, queue.prune_dead_letters

            async def spy(kind, before, limit=1000):
                limits.append((kind, limit))
                return await prune(kind, before, limit)

            async def spy_dead(before, limit=1000):
                limits.append(("dead_letters", limit))
                return await prune_dead(before, limit)
            store.prune, queue.prune_dead_letters = spy, spy_dead
            gone = await prune_all(store, queue, Retention())
            assert gone["debug"] == 250 and gone["dead_letters"] == 250
            assert [n for kind, n in limits if kind == "debug"] == [100, 100, 100]
            assert [n for kind, n in limits if kind == "dead_letters"] == [100, 100, 100]
            assert {n for kind, n in limits if kind not in ("debug", "dead_letters")} == {1000}
    run(main())


# --- the lock that keeps two token refreshes apart, and reading an integration as stored now ---

def test_exclusive_admits_one_holder_of_a_name_at_a_time(backend):
    """One process: its coroutines queue up for a name (a refresh of one integration's token),
    and other names are not held up meanwhile."""
    async def main():
        async with backend() as (_, store, _):
            await store.open(SecretBox(KEY))
            order: list[str] = []
            release = asyncio.Event()

            async def hold(name: str, who: str) -> None:
                async with store.exclusive(name):
                    order.append(f"{who} in")
                    if who == "first":
                        await release.wait()
                    order.append(f"{who} out")

            first = asyncio.create_task(hold("credentials:int_001", "first"))
            while not order:
                await asyncio.sleep(0.01)
            second = asyncio.create_task(hold("credentials:int_001", "second"))
            await hold("credentials:int_002", "other")  # another integration's lock: not held up
            for _ in range(50):  # turns of the loop in which the second would have entered
                await asyncio.sleep(0)
            assert order == ["first in", "other in", "other out"]
            release.set()
            await asyncio.gather(first, second)
            assert order == ["first in", "other in", "other out", "first out", "second in", "second out"]
    run(main())


async def _advisory_waiters(db) -> int:
    return await db.run(lambda c: c.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"), single=True)


async def _until(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_exclusive_holds_across_nodes_and_goes_with_a_dead_holder(backend):
    """Two nodes never refresh one token together: the second waits in the database while the
    first holds the name, enters once it leaves; and a node that dies holding it (its lock's
    connection gone) does not keep the others out."""
    async def main():
        async with backend(node="node-a") as (db, a, _), backend(node="node-b") as (_, b, _):
            await a.open(SecretBox(KEY))
            await b.open(SecretBox(KEY))
            inside: list[str] = []

            async def enter(store, who: str) -> None:
                async with store.exclusive("credentials:int_001"):
                    inside.append(who)

            async with a.exclusive("credentials:int_001"):
                waiting = asyncio.create_task(enter(b, "node-b"))
                await _until(lambda: _advisory_waiters(db), "node-b to wait for the lock in the database")
                assert inside == []
            await asyncio.wait_for(waiting, 10)
            assert inside == ["node-b"]

            async with a.exclusive("credentials:int_001"):  # node-a dies holding it: its connection goes
                waiting = asyncio.create_task(enter(b, "node-b again"))
                await _until(lambda: _advisory_waiters(db), "node-b to wait again")
                killed = await db.run(lambda c: c.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND granted"),
                    single=True)
                assert killed == 1
                await asyncio.wait_for(waiting, 10)
                assert inside == ["node-b", "node-b again"]
    run(main())


def test_reload_integration_reads_what_is_stored_now_into_the_snapshot(backend):
    """What a token refresh reads first under its lock: the integration as stored now, although
    another node changed it since this one loaded it (neither follows the other's changes
    here), taken into the snapshot; listeners hear of a change of configuration, not of health."""
    async def main():
        async with backend(node="node-a") as (_, a, _), backend(node="node-b") as (_, b, _):
            await a.open(SecretBox(KEY))
            await a.put_source(source(1), "create")
            await a.put_integration(integration(1), "create")
            await b.open(SecretBox(KEY))
            heard: list[tuple[str, str]] = []
            a.subscribe(lambda kind, object_id: heard.append((kind, object_id)))

            def token(new: str):
                return lambda i: msgspec.structs.replace(i, config=msgspec.structs.replace(i.config, access_token=new))

            await b.update_integration("int_001", token("pina_REFRESHED"), "refresh")
            assert a.integration("int_001").config.access_token == "pina_SECRET_1"  # a stale snapshot
            reloaded = await a.reload_integration("int_001")
            assert reloaded.config.access_token == "pina_REFRESHED"
            assert a.integration("int_001") == reloaded and heard == [("integration", "int_001")]

            await b.set_health("int_001", Health("unhealthy", "unauthorized", "Authentication failed.", 5.0))
            assert (await a.reload_integration("int_001")).health.problem == "unauthorized"
            assert heard == [("integration", "int_001")]  # health is runtime state

            await b.delete_integration("int_001")
            assert await a.reload_integration("int_001") is None
            assert a.integration("int_001") is None and heard == [("integration", "int_001")] * 2
            assert await a.reload_integration("int_404") is None and len(heard) == 2
    run(main())
