"""Alerts through the admin API (`/v1/admin/alerts/...`: destinations, a test button, history and
open incidents) and the UI's Alerts page. delivery/alerts/ judges the rules and sends."""

from __future__ import annotations

import time
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType
from starlette.requests import Request
from starlette.responses import Response

from collector.admin.api import Api, ApiRoute, iso, json_response
from collector.admin.errors import ApiError
from collector.admin.schemas import page_of
from collector.services import Services
from delivery.alerts import AlertRecord, Destination, new_destination_id
from delivery.secrets import mask

Url = Annotated[str, Meta(
    pattern=r"^https?://[^\s]+$", max_length=2048,
    description="where alerts are POSTed: http(s)://... (a Slack incoming webhook's URL for slack)")]
Kind = Literal["webhook", "slack"]
Name = Annotated[str, Meta(min_length=1, max_length=200)]


class DestinationCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    url: Url
    kind: Kind = "webhook"
    enabled: bool = True


class DestinationPatch(msgspec.Struct, forbid_unknown_fields=True):
    name: Name | UnsetType = UNSET
    url: Url | UnsetType = UNSET
    kind: Kind | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET


class DestinationOut(msgspec.Struct):
    id: str
    name: str
    kind: str
    url: str  # masked: a Slack webhook's URL is a secret
    enabled: bool
    created_at: str | None


class DeliveryOut(msgspec.Struct):
    destination_id: str
    status: str
    attempts: int
    error: str | None
    at: str | None


class AlertOut(msgspec.Struct):
    id: int | None
    at: str | None
    rule: str
    subject: str
    state: str
    message: str
    deliveries: list[DeliveryOut]


class IncidentOut(msgspec.Struct):
    key: str
    rule: str
    subject: str
    message: str
    opened_at: str | None


class TestOut(msgspec.Struct):
    ok: bool
    message: str


def shown_url(url: str) -> str:
    """The scheme and host, and the path's last four characters: enough to recognise it."""
    scheme, _, rest = url.partition("://")
    host, _, path = rest.partition("/")
    return f"{scheme}://{host}/" + (mask(path) or "") if path else f"{scheme}://{host}"


def destination_out(d: Destination) -> DestinationOut:
    return DestinationOut(d.id, d.name, d.kind, shown_url(d.url), d.enabled, iso(d.created_at))


def alert_out(r: AlertRecord) -> AlertOut:
    return AlertOut(r.id, iso(r.at), r.rule, r.subject, r.state, r.message,
                    [DeliveryOut(k, v.status, v.attempts, v.error, iso(v.at)) for k, v in r.deliveries.items()])


class AlertsApi:
    def __init__(self, services: Services) -> None:
        self.s = services
        self.alerts = services.alerts
        self.api = Api(services)

    async def destination_or_404(self, destination_id: str) -> Destination:
        found = next((d for d in await self.alerts.destinations() if d.id == destination_id), None)
        if found is None:
            raise ApiError(404, "not_found", f"no alert destination with id {destination_id}")
        return found

    async def list_destinations(self, request: Request) -> Response:
        data = [destination_out(d) for d in await self.alerts.destinations()]
        return json_response({"data": data, "next_cursor": None, "has_more": False})

    async def create_destination(self, request: Request) -> Response:
        body: DestinationCreate = await self.api.decode(request, DestinationCreate)
        destination = Destination(id=new_destination_id(), name=body.name, kind=body.kind, url=body.url,
                                  enabled=body.enabled, created_at=time.time())
        await self.alerts.put_destination(destination, "create")
        return json_response(destination_out(destination), 201)

    async def patch_destination(self, request: Request) -> Response:
        destination = await self.destination_or_404(request.path_params["id"])
        body: DestinationPatch = await self.api.decode(request, DestinationPatch)
        changes = {k: v for k in DestinationPatch.__struct_fields__ if (v := getattr(body, k)) is not UNSET}
        updated = msgspec.structs.replace(destination, **changes)
        await self.alerts.put_destination(updated, "update")
        return json_response(destination_out(updated))

    async def delete_destination(self, request: Request) -> Response:
        destination = await self.destination_or_404(request.path_params["id"])
        await self.alerts.delete_destination(destination.id)
        return Response(status_code=204)

    async def test_destination(self, request: Request) -> Response:
        destination = await self.destination_or_404(request.path_params["id"])
        outcome = await self.alerts.test(destination)
        if outcome.status == "sent":
            return json_response(TestOut(True, f"{destination.name} accepted the test alert."))
        return json_response(TestOut(False, f"{destination.name} did not accept the test alert: {outcome.error}. "
                                            "Check the URL (and that the receiver is reachable from this server)."))

    async def history(self, request: Request) -> Response:
        limit = self.api.limit(request)
        rows = await self.alerts.history(self.api.int_cursor(request), limit + 1)
        data = [alert_out(r) for r in rows[:limit]]
        has_more = len(rows) > limit
        return json_response({"data": data, "next_cursor": str(data[-1].id) if has_more else None,
                              "has_more": has_more})

    async def incidents(self, request: Request) -> Response:
        data = [IncidentOut(i.key, i.rule, i.subject, i.message, iso(i.opened_at))
                for i in await self.alerts.incidents()]
        return json_response({"data": data, "next_cursor": None, "has_more": False})


ROUTES = (
    ApiRoute("GET", "/alerts/destinations", "list_destinations", "List alert destinations (webhooks)",
             response=page_of(DestinationOut)),
    ApiRoute("POST", "/alerts/destinations", "create_destination", "Add an alert destination: a generic JSON "
             "webhook or a Slack incoming webhook", DestinationCreate, DestinationOut, 201),
    ApiRoute("PATCH", "/alerts/destinations/{id}", "patch_destination", "Update an alert destination",
             DestinationPatch, DestinationOut),
    ApiRoute("DELETE", "/alerts/destinations/{id}", "delete_destination", "Delete an alert destination",
             status=204),
    ApiRoute("POST", "/alerts/destinations/{id}/test", "test_destination", "Send a test alert now",
             response=TestOut),
    ApiRoute("GET", "/alerts/history", "history", "Alerts sent, newest first, with what became of each at each "
             "destination", response=page_of(AlertOut), query=("cursor", "limit")),
    ApiRoute("GET", "/alerts/incidents", "incidents", "Incidents open now", response=page_of(IncidentOut)),
)

RULES = (
    ("integration_paused", "Pinterest refused an integration's credentials or refresh token: it keeps its events and "
     "sends nothing until they are fixed."),
    ("storage_degraded", "A node's database fails its transactions (a full disk, a lock, an I/O error)."),
    ("delivery_failing", "An integration has delivered nothing for SIGNAL_ALERT_FAILING_MINUTES while its requests "
     "to Pinterest fail."),
    ("dead_letters", "An integration holds more than SIGNAL_ALERT_DEAD_LETTERS dead letters."),
    ("silent_drop", "An event type's volume over SIGNAL_ALERT_DROP_WINDOW fell below SIGNAL_ALERT_DROP_FRACTION of "
     "its own trailing baseline."),
)

