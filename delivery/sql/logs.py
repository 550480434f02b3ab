"""What a config store records beside the configuration: the audit log (secrets redacted), the
debugger's log, each source's refusals and last event, and their retention."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec

from delivery.config import SECRET_KEYS
from delivery.erasure import Person, Suppressions
from delivery.snapshot import encode
from delivery.sql.statements import Driver, Op, Row, execute, executemany, fetch
from delivery.store import AuditEntry, DebugRecord, Refusal, SourceActivity

DEBUG_LOG_KEEP = 20_000
DEBUG_LOG_KEEP_LOW = 200  # while the disk is down to the reserve kept for delivery
# Records a statement deletes when the log is cut to its size: a record carries its event (up to
# 32 KB) and SQLite's secure_delete writes every deleted byte to the WAL, so that one statement
# needs a few MB of disk at most, and the WAL is checkpointed in between.
DEBUG_TRIM_BATCH = 50
REFUSAL_EXAMPLES_KEPT = 10  # per source
ERASE_DEBUG_BATCH = 2000  # records an erasure scans per statement: others get the database in between

AuditRow = tuple[str, str, str, bytes | None, bytes | None]  # action, type, id, old, new (JSON, redacted)
_debug_decoder = msgspec.json.Decoder(DebugRecord)

# The debugger's log cut to its newest records (arguments: how many stay, then the limit).
_TRIM_DEBUG = ("DELETE FROM debug_log WHERE id IN (SELECT id FROM debug_log "
               "WHERE id <= (SELECT max(id) FROM debug_log) - ? ORDER BY id LIMIT ?)")
# Retention, the oldest records first. Tables whose rows come in time order are read in id order,
# `limit` rows a statement whatever their size (a look for expired rows never scans the table).
# Arguments: the time before which records go, then the limit.
_PRUNE = {
    "debug": "DELETE FROM debug_log WHERE at < ? AND id IN (SELECT id FROM debug_log ORDER BY id LIMIT ?)",
    "audit": "DELETE FROM audit_log WHERE at < ? AND id IN (SELECT id FROM audit_log ORDER BY id LIMIT ?)",
    "alerts": "DELETE FROM alert_history WHERE at < ? AND id IN (SELECT id FROM alert_history ORDER BY id LIMIT ?)",
    "volume": "DELETE FROM event_volume WHERE (topic, event, bucket) IN (SELECT topic, event, bucket FROM event_volume "
              "WHERE bucket < ? LIMIT ?)",
    "suppressions": "DELETE FROM suppressions WHERE key IN (SELECT key FROM suppressions WHERE until < ? LIMIT ?)",
}


class Logs:
    sql: Driver
    suppressions: Suppressions  # IdentityMemory's
    _debug_writes = 0  # records added since the debugger's log was last pruned
    _debug_shrunk = False  # down to DEBUG_LOG_KEEP_LOW, and nothing added since

    async def audit(self, action: str, object_type: str, object_id: str, old: dict | None, new: dict | None) -> None:
        await self.sql.transaction(insert_audit, (action, object_type, object_id, _json(old), _json(new)))

    async def audit_log(self, before_id: int | None, limit: int) -> list[AuditEntry]:
        rows = await self.sql.fetch("SELECT id, at, action, object_type, object_id, old, new FROM audit_log "
                                    "WHERE id < ? ORDER BY id DESC LIMIT ?", before_id or 2**62, limit)
        return [audit_entry(*row) for row in rows]

    async def add_debug(self, records: list[DebugRecord]) -> None:
        """Keep `records`; the oldest beyond DEBUG_LOG_KEEP are pruned now and then."""
        if not records:
            return
        self._debug_shrunk = False
        self._debug_writes += len(records)
        prune = self._debug_writes >= DEBUG_LOG_KEEP // 4
        if prune:
            self._debug_writes = 0
        # The edge refuses NUL in ids; one queued by an older version must not cost its batch's records
        # (PostgreSQL refuses NUL in text columns).
        rows = [(r.at, r.source_id, r.integration_id, r.event_id.replace("\x00", "\ufffd"), r.status, encode(r))
                for r in records]
        await self.sql.executemany("INSERT INTO debug_log (at, source_id, topic, event_id, status, record) "
                                   "VALUES (?, ?, ?, ?, ?, ?)", rows)
        if prune:
            await self._trim_debug(DEBUG_LOG_KEEP)

    async def shrink_debug(self) -> None:
        """The disk is down to the reserve kept for delivery: keep only the newest
        DEBUG_LOG_KEEP_LOW records. An outage writes a record per event and attempt, each with its
        event, and delivering the queue frees none of their room; left there they could hold
        ingestion off for good."""
        if not self._debug_shrunk:  # (set once done: a storage fault has it tried again)
            await self._trim_debug(DEBUG_LOG_KEEP_LOW)
            self._debug_shrunk = True

    async def _trim_debug(self, keep: int) -> None:
        """Delete all but the newest `keep` records, DEBUG_TRIM_BATCH a statement."""
        while await self.sql.execute(_TRIM_DEBUG, keep, DEBUG_TRIM_BATCH) == DEBUG_TRIM_BATCH:
            pass

    async def debug_records(self, source_id: str | None, integration_id: str | None, status: str | None,
                            before_id: int | None, limit: int) -> list[DebugRecord]:
        where: list[str] = ["id < ?"]
        args: list[Any] = [before_id or 2**62]
        for column, value in (("source_id", source_id), ("topic", integration_id), ("status", status)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        rows = await self.sql.fetch(f"SELECT id, at, source_id, topic, event_id, status, record FROM debug_log "
                                    f"WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?", *args, limit)
        return [debug_record(*row) for row in rows]

    async def erase_debug(self, person: Person, batch: int = ERASE_DEBUG_BATCH) -> int:
        """Delete the debugger records that mention the person."""
        deleted, after = 0, 0
        while True:
            gone, after = await self.sql.transaction(_erase_debug, person.record_matches, after, batch)
            deleted += gone
            if not after:
                return deleted

    async def record_activity(self, refused: dict[tuple[str, str], int], examples: list[tuple[str, Refusal]],
                              last_events: dict[str, float]) -> None:
        """Add to the refusal counts ((source, reason) -> n), keep the examples (the last few per
        source), and move each source's last event time forward."""
        await self.sql.transaction(_record_activity, refused, examples, last_events)

    async def activity(self, source_ids: list[str]) -> dict[str, SourceActivity]:
        return await self.sql.transaction(_activity, source_ids)

    async def prune(self, kind: str, before: float, limit: int = 1000) -> int:
        """Delete up to `limit` records of `kind` older than `before` (Unix seconds): "debug"
        (the delivery log), "audit" (the audit log), "alerts" (alert history), "volume" (event
        counts behind the silent-drop alert), "suppressions" (ended ones). Returns how many went."""
        if kind == "suppressions":  # ended ones leave memory too: with none left the edge checks nothing
            self.suppressions.until = {k: u for k, u in self.suppressions.until.items() if u >= before}
        return await self.sql.execute(_PRUNE[kind], before, limit)


def insert_audit(row: AuditRow | None) -> Op[None]:
    if row is not None:
        yield execute("INSERT INTO audit_log (at, action, object_type, object_id, old, new) VALUES (?, ?, ?, ?, ?, ?)",
                      time.time(), *row)


def _erase_debug(match: Callable[[bytes], bool], after: int, limit: int) -> Op[tuple[int, int]]:
    """Scan up to `limit` records after the id `after`, delete those `match` names; returns how
    many went and the id to go on from (0: done)."""
    rows = yield fetch("SELECT id, record FROM debug_log WHERE id > ? ORDER BY id LIMIT ?", after, limit)
    gone = [(row[0],) for row in rows if match(row[1])]
    if gone:
        yield executemany("DELETE FROM debug_log WHERE id = ?", gone)
    return len(gone), (rows[-1][0] if len(rows) == limit else 0)


def _record_activity(refused: dict[tuple[str, str], int], examples: list[tuple[str, Refusal]],
                     last_events: dict[str, float]) -> Op[None]:
    yield executemany("INSERT INTO refusals (source_id, reason, count) VALUES (?, ?, ?) ON CONFLICT "
                      "(source_id, reason) DO UPDATE SET count = refusals.count + excluded.count",
                      [(source, reason, n) for (source, reason), n in refused.items()])
    yield executemany("INSERT INTO refusal_examples (source_id, at, reason, detail) VALUES (?, ?, ?, ?)",
                      [(source, r.at, r.reason, r.detail) for source, r in examples])
    for source in sorted({source for source, _ in examples}):
        yield execute("DELETE FROM refusal_examples WHERE source_id = ? AND id <= (SELECT id FROM "
                      "refusal_examples WHERE source_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                      source, source, REFUSAL_EXAMPLES_KEPT)
    yield executemany("INSERT INTO source_activity (source_id, last_event_at) VALUES (?, ?) ON CONFLICT (source_id) "
                      "DO UPDATE SET last_event_at = {greatest}(source_activity.last_event_at, excluded.last_event_at)",
                      list(last_events.items()))


def _activity(source_ids: list[str]) -> Op[dict[str, SourceActivity]]:
    """Each source's activity from its three tables' rows (the examples newest first)."""
    ids = msgspec.json.encode(source_ids).decode()
    among = "source_id IN (SELECT value FROM {json_each})"
    found = {source: SourceActivity({}, []) for source in source_ids}
    for source, reason, count in (yield fetch(f"SELECT source_id, reason, count FROM refusals WHERE {among}", ids)):
        found[source].refused[reason] = count
    examples: list[Row] = yield fetch(f"SELECT source_id, at, reason, detail FROM refusal_examples WHERE {among} "
                                      "ORDER BY id DESC", ids)
    for source, *row in examples:
        if len(found[source].recent_refusals) < REFUSAL_EXAMPLES_KEPT:  # PostgreSQL's nodes trim concurrently
            found[source].recent_refusals.append(Refusal(*row))
    for source, at in (yield fetch(f"SELECT source_id, last_event_at FROM source_activity WHERE {among}", ids)):
        found[source].last_event_at = at
    return found


def _json(value: Any) -> bytes | None:
    return None if value is None else encode(value)


def redacted(obj: Any) -> dict | None:
    """An object as the audit log keeps it: secrets replaced by a marker, health left out."""
    if obj is None:
        return None
    data = msgspec.to_builtins(obj)
    config = data.get("config")
    if isinstance(config, dict):
        for key in SECRET_KEYS:
            if config.get(key):
                config[key] = "[redacted]"
    data.pop("health", None)
    return data


def audit_row(action: str | None, object_type: str, object_id: str, old: Any, new: Any) -> AuditRow | None:
    if action is None:
        return None
    return (action, object_type, object_id, _json(redacted(old)), _json(redacted(new)))


def audit_entry(row_id: int, at: float, action: str, object_type: str, object_id: str, old: bytes | None,
                new: bytes | None) -> AuditEntry:
    return AuditEntry(row_id, at, action, object_type, object_id, msgspec.json.decode(old) if old else None,
                      msgspec.json.decode(new) if new else None)


def debug_record(row_id: int, at: float, source_id: str, topic: str | None, event_id: str, status: str,
                 record: bytes) -> DebugRecord:
    """A stored debugger record; one that cannot be read (nested too deep by an older version,
    say) is shown as such, and never fails the listing it is in."""
    try:
        return msgspec.structs.replace(_debug_decoder.decode(record), id=row_id)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return DebugRecord(at, source_id or "", event_id or "", "", status, topic, id=row_id,
                           message="this stored record cannot be shown (it is not readable JSON)")
