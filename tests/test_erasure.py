"""Erasure and suppression (issue 27), on both backends: `POST /v1/admin/erasure` leaves no row in
any table that mentions the person (their hashes, userId or anonymous id), nor their bytes in the
SQLite file after a clean stop, keeps everyone else's, records itself in the audit log without the
person's values, and drops the person's later events at the edge."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import httpx
import msgspec
import pytest

from collector.admin.app import create_admin_app
from delivery.erasure import ERASED, Person
from delivery.events import event_decoder, event_view
from delivery.pinterest.mapping import map_event
from delivery.pinterest.normalize import sha256
from delivery.queue import Settlement
from delivery.store import DebugRecord
from tests.support import ADMIN_TOKEN, edge_in_process, queued

TOPIC = "int_inproc"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request):
    return request.getfixturevalue("pg_url") if request.param == "postgres" else None


class Visitor:
    """A browser with its own cookies, who identifies with an email, a phone and a userId."""

    def __init__(self, name: str, phone: str) -> None:
        self.email, self.phone, self.user_id = f"{name}@example.com", phone, f"user-{name}"
        self.browser: httpx.AsyncClient | None = None  # its own cookie jar

    @property
    def cookies(self) -> dict[str, str]:
        return dict(self.browser.cookies) if self.browser else {}

    @property
    def anonymous_id(self) -> str | None:
        """The browser's anonymous id: its _dfid cookie without the day it was last renewed."""
        cookie = self.cookies.get("_dfid")
        return cookie.partition(".")[0] if cookie else None

    def identifiers(self, anonymous_id: str) -> list[str]:
        """Everything that would identify this person in a stored record."""
        return [sha256(self.email), sha256("".join(c for c in self.phone if c.isdigit())), self.user_id,
                sha256(self.user_id), anonymous_id]

    async def send(self, client: httpx.AsyncClient, *events: dict) -> httpx.Response:
        if self.browser is None:
            self.browser = httpx.AsyncClient(transport=client._transport, base_url=client.base_url)
        body = msgspec.json.encode({"pipeline_key": "dk_live_inproc", "batch": list(events)})
        return await self.browser.post("/v1/batch", content=body, headers={"User-Agent": "Mozilla/5.0 Test"})

    async def browse(self, client: httpx.AsyncClient) -> None:
        assert (await self.send(client, {"type": "page", "name": "Home"})).status_code == 200
        identify = {"type": "identify", "userId": self.user_id, "traits": {"email": self.email, "phone": self.phone}}
        assert (await self.send(client, identify)).status_code == 200
        for n in range(3):
            answer = await self.send(client, {"type": "track", "event": "Order Completed",
                                              "properties": {"order_id": f"{self.user_id}-{n}", "total": 10 + n}})
            assert answer.status_code == 200


async def stored_values(services) -> str:
    """Every value of every row of every table, as text (bytes as UTF-8)."""
    if services.settings.database_url:
        async def dump(conn) -> str:
            tables = [r[0] for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
            rows = [await conn.fetch(f"SELECT * FROM {table}") for table in tables]
            return "\n".join(str([bytes(v).decode("utf-8", "replace") if isinstance(v, (bytes, memoryview)) else v
                                  for v in row.values()]) for table in rows for row in table)
        return await services.db.run(dump)

    def dump(conn: sqlite3.Connection) -> str:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return "\n".join(str([v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in row])
                         for table in tables for row in conn.execute(f"SELECT * FROM {table}"))
    return await services.db.run(dump)


async def debugger_records(services) -> None:
    """Debugger records of every queued event, as delivery writes them (event and payload)."""
    records = []
    for ev in await queued(services):
        mapped = map_event(ev, services.store.integration(TOPIC).options)
        records.append(DebugRecord(at=time.time(), source_id=ev.source_id, event_id=ev.message_id,
                                   event=ev.name or ev.type, status="delivered", integration_id=TOPIC,
                                   incoming=msgspec.Raw(msgspec.json.encode(event_view(ev))),
                                   payload=msgspec.Raw(msgspec.json.encode(mapped.event)) if mapped.event else
                                   msgspec.Raw(b"null")))
    await services.store.add_debug(records)


def test_an_erasure_leaves_nothing_of_the_person_and_suppresses_them(tmp_path, database_url):
    jane, john = Visitor("jane", "+1 415 555 0101"), Visitor("john", "+1 415 555 0202")

    async def main() -> Path | None:
        async with edge_in_process(tmp_path, database_url) as (services, _, client):
            await jane.browse(client)
            await john.browse(client)
            jane_anon, john_anon = jane.anonymous_id, john.anonymous_id
            # Some of Jane's events were delivered before (deleted the ordinary way), one is a dead
            # letter, and her other events and John's are queued; the debugger has records of all.
            await debugger_records(services)
            leased = await services.queue.lease(TOPIC, 100, 60)
            janes = [item.id for item in leased if event_decoder.decode(item.payload).anonymous_id == jane_anon]
            others = [item.id for item in leased if item.id not in janes]
            await services.queue.settle(TOPIC, Settlement(delivered=janes[:2], dead=[(janes[2], "Pinterest: bad")],
                                                          release=[(i, 0.0) for i in janes[3:] + others]))
            before = await stored_values(services)
            for value in jane.identifiers(jane_anon) + john.identifiers(john_anon):
                assert value in before, value  # the check below can see each of them

            admin = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_admin_app(services)),
                                      base_url="http://localhost", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            async with admin:
                bad = await admin.post("/v1/admin/erasure", json={"email": "not an address"})
                assert bad.status_code == 400 and bad.json()["error"]["field"] == "email"
                assert "not an address" not in bad.text
                none = await admin.post("/v1/admin/erasure", json={})
                assert none.status_code == 400 and none.json()["error"]["code"] == "missing_field"
                answer = await admin.post("/v1/admin/erasure", json={"email": " Jane@Example.com "})
                assert answer.status_code == 200, answer.text
                result = answer.json()
                audit = (await admin.get("/v1/admin/audit-log")).json()["data"][0]

            # Found through her email: her identity, and through it her browser and userId.
            assert result["identified_by"] == ["email"]
            assert result["deleted"] == {"identities": 1, "events": 2, "debugger_records": 4}, result
            after = await stored_values(services)
            for value in jane.identifiers(jane_anon):
                assert value not in after, value
            for value in john.identifiers(john_anon):
                assert value in after, value
            assert (audit["action"], audit["object_id"]) == ("erasure", result["id"])
            assert "jane" not in str(audit).lower() and sha256(jane.email) not in str(audit)
            stats = await services.queue.stats(TOPIC)
            assert (stats.accepted, stats.delivered, stats.filtered, stats.dead_lettered, stats.queued) == \
                (8, 2, 2, 0, 4)  # her erased events (a dead letter, a queued one) count as filtered

            # Later: her browser, and her email from another browser, are dropped; John is not.
            assert (await jane.send(client, {"type": "track", "event": "Product Added"})).json()["accepted"] == 1
            stranger = Visitor("jane", "")  # a new browser, the same person
            answer = await stranger.send(client, {"type": "identify", "traits": {"email": "jane@example.com"}},
                                         {"type": "track", "event": "Signed Up"})
            assert answer.json() == {"success": True, "accepted": 2}
            assert (await john.send(client, {"type": "track", "event": "Product Added"})).status_code == 200
            names = [(ev.anonymous_id, ev.name) for ev in await queued(services)]
            assert (john_anon, "Product Added") in names and len(names) == 5
            assert not any(anon in (jane_anon, stranger.anonymous_id) for anon, _ in names)
            assert stranger.anonymous_id is None  # no identifier is given to an erased person's new browser
            return None if database_url else Path(services.settings.db)

    db = asyncio.run(main())
    if db is not None:  # stopped cleanly: not a byte of her left in the file
        files = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*") if p.suffix != ".lock")
        for value in jane.identifiers(jane.anonymous_id):
            assert value.encode() not in files, value
        assert sha256(john.email).encode() in files


def test_matchers_decide_by_the_record_not_by_a_coincidence():
    person = Person.named(user_id="42", email="jane@example.com")
    ours = msgspec.json.encode(["m1", "track", "src", 1.0, 1.0, "X", {}, "42"])
    theirs = msgspec.json.encode(["m2", "track", "src", 1.0, 1.0, "X", {"quantity": "42"}, "7"])
    assert person.event_matches(ours) and not person.event_matches(theirs)
    assert not person.event_matches(ERASED)
    record = msgspec.json.encode({"incoming": {"user_id": "7", "properties": {"note": "42"}},
                                  "payload": {"user_data": {"em": [sha256("jane@example.com")]}}})
    assert person.record_matches(record)
    assert not person.record_matches(msgspec.json.encode({"incoming": {"user_id": "7", "properties": {"x": "42"}}}))


def test_an_erasure_request_names_what_is_wrong(tmp_path):
    async def main():
        async with edge_in_process(tmp_path) as (services, _, _client):
            admin = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_admin_app(services)),
                                      base_url="http://localhost", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            async with admin:
                national = await admin.post("/v1/admin/erasure", json={"phone": "07700 900123"})
                assert national.status_code == 400 and national.json()["error"] == {
                    "code": "invalid_field", "field": "phone",
                    "message": "phone: no country code; give it with its country code (+44 ...), or the country"}
                assert (await admin.post("/v1/admin/erasure", json={"phone": "07700 900123", "country": "GB"})) \
                    .status_code == 200
                unknown = await admin.post("/v1/admin/erasure", json={"mail": "x@example.com"})
                assert unknown.status_code == 400 and unknown.json()["error"]["field"] == "mail"
    asyncio.run(main())
