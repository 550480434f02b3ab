"""The live debugger across nodes, over the LISTEN/NOTIFY channel.

A node with someone watching its live stream says so every ANNOUNCE seconds (`watch:`).
While any node watches, every node forwards the records it produces (`debug:`), one per
notification. A notification holds at most 8000 bytes, sealed (channel.py: any role that can
connect could otherwise read every event and inject records), so a record's event and payload
are left out when they would not fit (the debugger's list shows them), and a node forwards at
most RELAY_PER_SECOND records: a live view, not a transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import msgspec

from delivery.debugger import DebugHub
from delivery.postgres.channel import Channel, notify
from delivery.postgres.db import PgDatabase, spawn
from delivery.store import NO_JSON, DebugRecord

log = logging.getLogger("signal_edge.debugger")
ANNOUNCE = 2.0  # seconds between a watching node's announcements
WATCH_FOR = 3 * ANNOUNCE  # how long an announcement keeps the others forwarding
MAX_PAYLOAD = 5700  # bytes of a record: sealed (base64, a nonce and a tag), it must fit in 8000
RELAY_PER_SECOND = 200
TOO_LARGE = msgspec.Raw(b'"[too large for the live stream of another node: see the debugger list]"')
_decode = msgspec.json.Decoder(DebugRecord).decode


class DebugRelay:
    def __init__(self, db: PgDatabase, hub: DebugHub, node: str, channel: Channel) -> None:
        self.db, self.hub, self.node, self.channel = db, hub, node, channel
        self._allowance, self._at = float(RELAY_PER_SECOND), time.monotonic()
        self._tasks: set[asyncio.Task] = set()
        self.dropped = 0

    def start(self) -> None:
        self.hub.relay = self.forward
        self.db.listen(self._notified)
        spawn(self._tasks, self._announce())

    async def _announce(self) -> None:
        while True:
            if self.hub.local_watchers:
                with contextlib.suppress(Exception):  # the database is away: the others stop forwarding for a while
                    await self.db.run(notify, self.channel, "watch", self.node)
            await asyncio.sleep(ANNOUNCE)

    def _notified(self, payload: str) -> None:
        opened = self.channel.open(payload)
        if opened is None:
            return
        kind, rest = opened
        node, _, body = rest.partition(":")
        if node == self.node:
            return
        if kind == "watch":
            self.hub.remote_watch_until = time.monotonic() + WATCH_FOR
        elif kind == "debug" and self.hub.local_watchers:
            with contextlib.suppress(msgspec.DecodeError):
                self.hub.deliver([_decode(body)])

    def forward(self, records: list[DebugRecord]) -> None:
        now = time.monotonic()
        self._allowance = min(float(RELAY_PER_SECOND), self._allowance + (now - self._at) * RELAY_PER_SECOND)
        self._at = now
        messages = []
        for record in records:
            if self._allowance < 1:
                self.dropped += 1
                continue
            self._allowance -= 1
            body = msgspec.json.encode(record)
            if len(body) > MAX_PAYLOAD:
                body = msgspec.json.encode(msgspec.structs.replace(
                    record, incoming=TOO_LARGE if record.incoming is not NO_JSON else NO_JSON,
                    payload=TOO_LARGE if record.payload is not NO_JSON else NO_JSON, warnings=record.warnings[:3]))
            if len(body) <= MAX_PAYLOAD:
                messages.append(f"{self.node}:{body.decode()}")
        if messages:
            spawn(self._tasks, self.db.run(self._send, messages))

    async def _send(self, conn, messages: list[str]) -> None:
        for message in messages:
            await notify(conn, self.channel, "debug", message)

