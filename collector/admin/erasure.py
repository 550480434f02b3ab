"""Erasure of one person through the admin API (`POST /v1/admin/erasure`) and the UI's Erasure page
(delivery/erasure.py does the work). The identifiers are hashed or held in memory only while the
erasure runs: the audit log records that an erasure happened, by what kinds of identifier, and
what it deleted, never the values."""

from __future__ import annotations

import secrets
import time
from typing import Annotated

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response

from collector.admin.api import Api, ApiRoute, iso, json_response
from collector.admin.errors import ApiError
from collector.services import Services
from delivery.erasure import Person, erase_person
from delivery.pii import MAX_LENGTH
from delivery.pinterest import normalize as norm

Identifier = Annotated[str, Meta(min_length=1, max_length=256)]


class ErasureRequest(msgspec.Struct, forbid_unknown_fields=True):
    user_id: Identifier | None = None
    email: Annotated[str, Meta(min_length=1, max_length=MAX_LENGTH["em"])] | None = None
    phone: Annotated[str, Meta(min_length=1, max_length=MAX_LENGTH["ph"])] | None = None
    anonymous_id: Identifier | None = None  # the _dfid cookie
    country: Annotated[str, Meta(pattern=r"^[A-Za-z]{2}$", description="for a phone number without its "
                                 "country code: the two-letter country")] | None = None
    suppress_days: Annotated[float, Meta(gt=0, le=3650)] | None = None  # default SIGNAL_SUPPRESSION_DAYS


class ErasureDeleted(msgspec.Struct):
    identities: int
    events: int  # queued and dead-lettered
    debugger_records: int


class ErasureResult(msgspec.Struct):
    id: str
    identified_by: list[str]
    deleted: ErasureDeleted
    suppressed_until: str
    message: str


IDENTIFIERS = ("user_id", "email", "phone", "anonymous_id")


class ErasureApi:
    def __init__(self, services: Services) -> None:
        self.s = services
        self.api = Api(services)

    async def erase(self, request: Request) -> Response:
        body: ErasureRequest = await self.api.decode(request, ErasureRequest)
        given = [name for name in IDENTIFIERS if getattr(body, name) is not None]
        if not given:
            raise ApiError(400, "missing_field", "give at least one of user_id, email, phone or anonymous_id", "email")
        try:
            person = Person.named(body.user_id, body.email, body.phone, body.anonymous_id, body.country)
        except norm.Invalid as exc:  # its message names the field, never the value
            field = "email" if str(exc).startswith("em") else "phone"
            hint = "" if field == "email" else "; give it with its country code (+44 ...), or the country"
            reason = str(exc).partition(": ")[2].split(" and the source")[0]  # the edge's words speak of a source
            raise ApiError(400, "invalid_field", f"{field}: {reason}{hint}", field) from None
        now = time.time()
        until = now + (body.suppress_days or self.s.settings.suppression_days) * 86400
        topics = [i.id for i in self.s.store.integrations()] + list(await self.s.queue.dead_letter_topics())
        erased = await erase_person(self.s.store, self.s.queue, person, dict.fromkeys(topics), until)
        erasure_id = "era_" + secrets.token_hex(8)
        deleted = ErasureDeleted(erased.identities, erased.events, erased.debugger_records)
        await self.s.store.audit("erasure", "person", erasure_id, None, {
            "identified_by": given, "deleted": msgspec.to_builtins(deleted), "suppressed_until": iso(until)})
        return json_response(ErasureResult(
            erasure_id, given, deleted, iso(until),
            f"Deleted {erased.identities} identity records, {erased.events} queued or dead-lettered events and "
            f"{erased.debugger_records} debugger records. New events of this person are dropped until "
            f"{iso(until)}. Events already sent to Pinterest are Pinterest's to delete."))


ROUTES = (
    ApiRoute("POST", "/erasure", "erase", "Erase one person (by user_id, email, phone or anonymous_id) and suppress "
             "their new events for a while", ErasureRequest, ErasureResult),
)

