"""What the admin UI's pages show: view models built from the management API's own shapes
(schemas.py), by the code that answers the JSON API (Api.sources_out, Api.integration_out), so a
page and the API its scripts call never disagree. Only what no API answer holds (a deleted
integration's name, the status a badge shows) is added here, as data."""

from __future__ import annotations

import msgspec

from collector.admin import deleted
from collector.admin import schemas as s
from collector.admin.api import dead_letters_source, iso
from delivery.config import Gpc, Ldp

TRACK_EXAMPLE = """_df.track("Order Completed", {
  order_id: "ORD-1001", total: 129.99, currency: "USD",
  products: [{product_id: "SKU-A", name: "Widget", price: 49.99, quantity: 2}]
});"""
IDENTIFY_EXAMPLE = """_df.identify("user-123", {
  email: "jane@example.com",   // hashed with SHA-256 at the edge, never stored raw
  phone: "+1 415 555 0100"
});"""
PREVIEW_EXAMPLE = """{"type": "track", "event": "Order Completed",
 "properties": {"order_id": "ORD-1", "total": 49.99, "currency": "USD"},
 "context": {"traits": {"email": "jane@example.com"}}}"""
COUNTS = (("accepted", "Accepted"), ("delivered", "Delivered"), ("queued", "Queued"), ("in_flight", "In flight"),
          ("filtered", "Filtered (consent)"), ("dead_lettered", "Dead letters"),
          ("skipped_disabled", "Skipped while disabled"))
DEBUGGER_STATUSES = ("queued", "delivered", "retrying", "failed", "filtered", "skipped")
GPC_CHOICES = ((Gpc.OPT_OUT, "Send their events with opt_out: true"), (Gpc.NO_DELIVERY, "Send their events nowhere"))
LDP_CHOICES = ((Ldp.OFF, "Off"), (Ldp.ALL, "Every visitor"), (Ldp.STATES, "Visitors from these US states"))
PROFILE_LABELS = {"current": "Pinterest current names (current)", "seed": "The seed table (seed)"}
# The Add Integration form: the Ad Account ID, then two ways to credentials, one or the other.
TOKEN_FIELDS = ("access_token", "conversion_token")
APP_FIELDS = ("app_id", "app_secret")
HELD_REFRESH_FIELD = "refresh_token"  # with an app, for whoever already holds one


def shown_status(integ: s.IntegrationOut) -> str:
    """The badge: disabled and paused say more than the health behind them."""
    if not integ.enabled:
        return "disabled"
    return "paused" if integ.paused else integ.health.status


class HealthView(msgspec.Struct):
    """The integration page's Health card."""

    status: str  # the badge
    checked_at: str | None
    explanation: str | None  # what to do, when delivery stopped
    pinterest_message: str | None
    last_error: str | None  # shown only while no problem explains the state (see health_view)
    last_error_at: str | None
    pausable: bool  # a disabled integration queues nothing: there is nothing to pause


def health_view(integ: s.IntegrationOut) -> HealthView:
    """Under a problem (401, 403, ...), its explanation is the card's whole story: the last error
    recorded is then that same refusal or older, such as an unrelated dead letter."""
    health, counts = integ.health, integ.delivery
    troubled = health.status == "unhealthy"
    return HealthView(shown_status(integ), health.checked_at, health.message, health.pinterest_message,
                      None if troubled else counts.last_error, None if troubled else counts.last_error_at,
                      integ.enabled)


class DeletedIntegration(msgspec.Struct):
    """What is left of a deleted integration: its dead letters, under the name it had."""

    id: str
    name: str | None  # None when it was deleted before names were kept
    source_id: str | None
    source_name: str | None
    dead_letters: int
    deleted_at: str | None

    @property
    def title(self) -> str:
        return f"Deleted integration {self.name}" if self.name else f"Deleted integration {self.id}"


async def deleted_integration(store, queue, integration_id: str, dead_letters: int) -> DeletedIntegration:
    """One deleted before its name was kept goes under its id, with the source its dead letters name."""
    kept = await deleted.recall(store, integration_id)
    source_id = kept.get("source_id") or await dead_letters_source(store, queue, integration_id)
    source = store.source(source_id) if source_id else None
    return DeletedIntegration(integration_id, kept.get("name"), source_id, source.name if source else None,
                              dead_letters, iso(kept.get("deleted_at")))
