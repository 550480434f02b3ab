"""Erasing one person, and keeping their later events out for a while.

An erasure names the person by a userId, an email address, a phone number or an anonymous id
(`_dfid`). The email and phone are normalised as the edge normalises them and hashed at once;
what identifies the person in stored records is then:

- hashes: the SHA-256 of the email and phone (Pinterest's em and ph), of the userId as the edge
  stores it, and of that (Pinterest's external_id);
- ids: the userId as the edge stores it (raw, unless it was an address or a number) and the
  anonymous ids, in memory only while the erasure runs (never stored or logged).

Identity memory links them: a browser's identity that holds the email gives its anonymous id and
userId, whose events are the person's too (`Person.learn`). What is found is deleted from
identity memory, the queue, the dead letters and the debugger log (each backend's `erase`
methods scan in bounded batches with the matchers below), and the person is suppressed: for
SIGNAL_SUPPRESSION_DAYS their new events are dropped at the edge. Suppressions are keyed digests
(BLAKE2b keyed with a random salt kept in the database), so no table holds the person's hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import msgspec

from delivery.events import IDENTITY_FIELDS, EdgeEvent, Identity, event_decoder
from delivery.pinterest import normalize as norm
from delivery.pinterest.identity import hashed_user_id

# What a queued event that was erased while a request for it was in flight becomes: an event of
# a type that is never sent (delivery counts it as filtered), so that the row keeps its size and
# the lease's item ids stay right.
ERASED_TYPE = "erased"
ERASED = b'["erased","erased","",0,0]'
SALT_META = "suppression_salt"


class Person:
    def __init__(self, hashes: Iterable[str] = (), user_ids: Iterable[str] = (),
                 anonymous_ids: Iterable[str] = ()) -> None:
        self.hashes: set[str] = set(hashes)
        self.user_ids: set[str] = set()
        self.anonymous_ids: set[str] = set(anonymous_ids)
        for user_id in user_ids:
            self.add_user_id(user_id)
        self._needles: list[bytes] | None = None

    @classmethod
    def named(cls, user_id: str | None = None, email: str | None = None, phone: str | None = None,
              anonymous_id: str | None = None, default_country: str | None = None) -> Person:
        """The person an erasure request names. Raises norm.Invalid (its message names the field,
        never the value) for an email or phone the edge could not have hashed either."""
        hashes = []
        if email is not None:
            hashes.append(norm.prehashed(email) or norm.sha256(norm.email(email)))
        if phone is not None:
            hashes.append(norm.prehashed(phone) or norm.sha256(norm.phone(phone, default_country)))
        if anonymous_id:  # the _dfid cookie as it is: "<anonymous id>.<the day it was last renewed>"
            anonymous_id = anonymous_id.partition(".")[0]
        return cls(hashes, [user_id] if user_id else [], [anonymous_id] if anonymous_id else [])

    def add_user_id(self, user_id: str) -> None:
        stored = hashed_user_id(user_id) or user_id
        self.user_ids.add(stored)
        self.hashes.add(norm.prehashed(stored) or norm.sha256(stored))  # the external_id Pinterest got
        self._needles = None

    def learn(self, anonymous_id: str, user_id: str | None, identity: Identity) -> bool:
        """Take in what a matching identity record knows of the person; True when it was new."""
        before = (len(self.hashes), len(self.user_ids), len(self.anonymous_ids))
        self.anonymous_ids.add(anonymous_id)
        if user_id:
            self.add_user_id(user_id)
        self.hashes.update(identity.em, identity.ph)
        self._needles = None
        return before != (len(self.hashes), len(self.user_ids), len(self.anonymous_ids))

    def needles(self) -> list[bytes]:
        """Each identifier as a JSON string: a record that holds none of them is not the person's
        (a bytes search; only a record holding one is decoded)."""
        if self._needles is None:
            self._needles = [msgspec.json.encode(value) for value in (*self.hashes, *self.user_ids,
                                                                      *self.anonymous_ids)]
        return self._needles

    def mentioned(self, data: bytes) -> bool:
        """`data` holds one of the person's identifiers as a JSON string."""
        return any(needle in data for needle in self.needles())

    # --- matchers for each kind of stored record ---------------------------------------------

    def event_matches(self, line: bytes) -> bool:
        """A queued or dead-lettered event (an EdgeEvent as a JSON array) is the person's."""
        if not self.mentioned(line):
            return False
        try:
            ev = event_decoder.decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            return True  # names the person and cannot be read: it goes too
        return self._event(ev)

    def _event(self, ev: EdgeEvent) -> bool:
        if ev.anonymous_id in self.anonymous_ids or ev.user_id in self.user_ids or ev.user_id in self.hashes:
            return True
        return any(not self.hashes.isdisjoint(getattr(ev.identity, field)) for field in IDENTITY_FIELDS)

    def identity_matches(self, anonymous_id: str, user_id: str | None, identity: Identity) -> bool:
        return (anonymous_id in self.anonymous_ids or (user_id is not None and user_id in self.user_ids)
                or not self.hashes.isdisjoint(identity.em) or not self.hashes.isdisjoint(identity.ph))

    def record_matches(self, record: bytes) -> bool:
        """A debugger record (the event as received, by field name, and the Pinterest payload)."""
        if not self.mentioned(record):
            return False
        try:
            data = msgspec.json.decode(record)
        except (msgspec.DecodeError, RecursionError):
            return True
        incoming = data.get("incoming") if isinstance(data, dict) else None
        if isinstance(incoming, dict):
            if incoming.get("anonymous_id") in self.anonymous_ids or incoming.get("user_id") in self.user_ids:
                return True
            identity = incoming.get("identity")
            if isinstance(identity, dict) and self._any_hash(identity.values()):
                return True
        payload = data.get("payload") if isinstance(data, dict) else None
        user_data = payload.get("user_data") if isinstance(payload, dict) else None
        return isinstance(user_data, dict) and self._any_hash(user_data.values())

    def _any_hash(self, values) -> bool:
        return any(isinstance(v, list) and not self.hashes.isdisjoint(x for x in v if isinstance(x, str))
                   for v in values)

    # --- suppression ----------------------------------------------------------------------

    def suppression_keys(self, salt: bytes) -> set[str]:
        return ({suppression_key(salt, "h", h) for h in self.hashes}
                | {suppression_key(salt, "a", a) for a in self.anonymous_ids})


def suppression_key(salt: bytes, kind: str, value: str) -> str:
    """A keyed digest of one identifier: the suppressions table never holds the person's hashes."""
    return hashlib.blake2b(f"{kind}:{value}".encode(), key=salt, digest_size=16).hexdigest()


class Suppressions:
    """The suppressions in force, in memory: the edge asks `suppressed()` of each event while
    there are any (none: one truth test per request)."""

    def __init__(self) -> None:
        self.salt = b""
        self.until: dict[str, float] = {}

    def __bool__(self) -> bool:
        return bool(self.until)

    def suppressed(self, ev: EdgeEvent, now: float) -> bool:
        key, until = self.salt, self.until
        candidates = [suppression_key(key, "a", ev.anonymous_id)] if ev.anonymous_id else []
        if ev.user_id:
            stored = ev.user_id
            candidates.append(suppression_key(key, "h", norm.prehashed(stored) or norm.sha256(stored)))
        ident = ev.identity
        candidates += [suppression_key(key, "h", h) for h in (*ident.em, *ident.ph)]
        return any(until.get(c, 0.0) > now for c in candidates)


class Erased(msgspec.Struct):
    """What an erasure deleted, by kind (no identifier of the person)."""

    identities: int
    events: int  # queued and dead-lettered
    debugger_records: int
    suppressed_until: float


async def erase_person(store, queue, person: Person, topics: Iterable[str], suppress_until: float) -> Erased:
    """Delete everything stored of `person` and suppress their new events until `suppress_until`.
    Identity memory first: what it knows of the person widens what the rest is searched for. The
    suppression is in force before the queue is searched, so that nothing of theirs comes in behind."""
    identities = await store.erase_identities(person)
    await store.suppress(person.suppression_keys(store.suppressions.salt), suppress_until)
    events = 0
    for topic in topics:
        events += await queue.erase(topic, person.event_matches)
    records = await store.erase_debug(person)
    return Erased(identities, events, records, suppress_until)
