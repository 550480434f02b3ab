"""What the Pinterest integration asks for, and what its errors mean, as data.

The admin API serves `catalog()` at `GET /v1/admin/catalog/pinterest`, and the UI
renders its form from it; the troubleshooting table explains failures in the seed's words.
"""

from __future__ import annotations

from typing import Any

import msgspec

from delivery.pinterest.mapping import DEFAULT_PROFILE, PROFILE_HELP
from delivery.pinterest.payload import EVENT_NAMES
from delivery.pinterest.variants import VARIANTS

VENDOR = "pinterest"
CONSENT_CATEGORIES = ("advertising", "analytics", "functional", "personalization", "necessary")


class Field(msgspec.Struct, omit_defaults=True):
    key: str
    label: str
    type: str  # string | secret | boolean | integer | number | object
    required: bool
    help: str
    pattern: str | None = None
    placeholder: str | None = None
    default: Any = None
    choices: list[str] | None = None


CREDENTIAL_FIELDS = (
    Field(
        key="ad_account_id", label="Ad Account ID", type="string", required=True,
        pattern=r"^\d{1,18}$",  # no placeholder: a made-up id in the box reads as one already filled in
        help="Your Pinterest Ad Account ID (numeric). Found in Pinterest Ads Manager under "
        "Account Settings, or in the Ads Manager URL: ads.pinterest.com/advertiser/<id>/ (paste the whole "
        "URL here and signal-edge takes the id from it).",
    ),
    Field(
        key="access_token", label="API access token", type="secret", required=False,
        placeholder="pina_...",
        help="Pinterest API access token with ads:write scope. Generated via the Pinterest "
        "developer portal (My apps > OAuth). Typically starts with pina_. Pasted tokens expire after 30 days: "
        "connect with Pinterest instead (app id and secret below) and signal-edge refreshes them itself.",
    ),
    Field(
        key="conversion_token", label="Conversion access token", type="secret", required=False,
        placeholder="ct_...",
        help="Conversion access token for the Pinterest Tag. Found in Ads Manager under "
        "Conversions > Conversion Access Token. Typically starts with ct_. Once connected, signal-edge can mint one.",
    ),
    Field(
        key="app_id", label="Pinterest app id", type="string", required=False,
        help="To connect with Pinterest: your app's id from developers.pinterest.com (My apps). Register the "
        "redirect URI shown on this page in the app.",
    ),
    Field(
        key="app_secret", label="Pinterest app secret", type="secret", required=False,
        help="The app's secret key, from the same page. Stored encrypted, never shown again.",
    ),
    Field(
        key="refresh_token", label="Refresh token", type="secret", required=False, placeholder="pinr_...",
        help="Only if you already hold one for this app (otherwise use Connect with Pinterest). signal-edge "
        "refreshes the access token at 80% of its life and keeps each new refresh token.",
    ),
)
OPTION_FIELDS = (
    Field(key="test_mode", label="Test mode", type="boolean", required=False, default=False,
          help="Send every request with ?test=true: Pinterest validates the events but does not record them."),
    Field(key="send_custom_event_name", label="Send custom event names", type="boolean",
          required=False, default=False,
          help="Add custom_data.custom_event_name to custom events. Pinterest's published schema "
          "(v5.23) does not list this key, so Pinterest may reject such events; leave off unless "
          "Pinterest asked you to send it."),
    Field(key="event_names", label="Event names", type="string", required=False, default=DEFAULT_PROFILE,
          choices=list(PROFILE_HELP),
          help="The standard event table. " + " ".join(f"{k}: {v}" for k, v in PROFILE_HELP.items())),
    Field(key="event_map", label="Event mapping overrides", type="object", required=False, default={},
          help="Map any event name (or 'page') to a Pinterest event: " + ", ".join(EVENT_NAMES) + "."),
    Field(key="rate_limit_per_second", label="Rate limit (requests/second)", type="number",
          required=False, default=100.0, help="Sustained requests per second to Pinterest."),
    Field(key="rate_limit_burst", label="Burst limit (requests)", type="integer", required=False,
          default=200, help="Requests that may go out at once before the rate limit applies."),
)

# Seed: "Troubleshooting". Keys are what delivery classifies a failure as.
TROUBLESHOOTING: dict[str, str] = {
    "unauthorized": "401 Unauthorized: the access token has expired or been revoked. Generate a new "
    "token in the Pinterest developer portal and update this integration; queued events are kept "
    "and delivery resumes by itself.",
    "forbidden": "403 Forbidden: the access token does not have ads:write scope, or the token's app "
    "does not have access to the specified ad account. Fix the scope or the access, then update "
    "this integration; queued events are kept.",
    "invalid_ad_account": "Invalid ad_account_id: the ad account ID is incorrect or does not belong "
    "to the authenticated user. Verify the ID in Ads Manager.",
    "conversion_token": "conversion_token error: the conversion token may be invalid or regenerated. "
    "Generate a new token in Ads Manager under Conversions > Conversion Access Token.",
    "low_match_rate": "Low Event Match Rate: add user identity signals via _df.identify(). Ensure "
    "epik click IDs are being captured from Pinterest ad URLs and _pin_unauth cookies are being set.",
    "custom_events": "Events showing as custom: the event name is not mapped to a standard Pinterest "
    "event. Check the event mapping table and your _df.track() names, or add an event_map override.",
    "custom_event_name_refused": "Pinterest refused custom_data.custom_event_name, which the option 'Send custom "
    "event names' adds: the events are delivered without it. Turn the option off, or ask Pinterest to enable the "
    "field for this ad account.",
    "refresh_refused": "Pinterest no longer accepts this app's refresh token: connect again. The events are kept "
    "and go out once it is connected (Connect with Pinterest, or paste a new refresh token).",
    "not_connected": "Not connected to Pinterest yet: use Connect with Pinterest, or paste an access token or a "
    "conversion token. The events are kept until then.",
    "internal_error": "signal-edge failed while sending a batch (a fault of its database or a bug). "
    "The events are kept and retried with backoff, and counted as an attempt each time; the server "
    "log has the details under the same message.",
    "not_appearing": "Events not appearing in Ads Manager: verify all three credentials "
    "(ad_account_id, access_token, conversion_token) and that the access token has ads:write scope.",
}


class VariantInfo(msgspec.Struct):
    key: str
    label: str
    use_case: str
    description: str
    priority_events: list[str] | None


class Catalog(msgspec.Struct):
    vendor: str
    name: str
    api: str
    credentials: list[Field]
    options: list[Field]
    variants: list[VariantInfo]
    event_names: list[str]
    consent_categories: list[str]
    troubleshooting: dict[str, str]


def catalog() -> Catalog:
    return Catalog(
        vendor=VENDOR,
        name="Pinterest Conversions API",
        api="POST /v5/ad_accounts/{ad_account_id}/events",
        credentials=list(CREDENTIAL_FIELDS),
        options=list(OPTION_FIELDS),
        variants=[
            VariantInfo(v.key, v.label, v.use_case, v.description,
                        list(v.priority_events) if v.priority_events is not None else None)
            for v in VARIANTS.values()
        ],
        event_names=list(EVENT_NAMES),
        consent_categories=list(CONSENT_CATEGORIES),
        troubleshooting=TROUBLESHOOTING,
    )
