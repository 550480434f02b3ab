"""Configuration objects as delivery sees them (secrets in clear, in memory only).

The admin API has its own wire shapes (collector/admin/schemas.py) with masked secrets
and ISO timestamps; the config store encrypts secrets before they reach disk.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from delivery.pinterest.mapping import Options


class ConsentSettings(msgspec.Struct):
    enabled: bool = False
    default_categories: list[str] = []


SERVER_KEY_PREFIX = "sk_"  # a source's server key; a pipeline key starts dk_


class Ldp(StrEnum):
    """Limited data processing (US state privacy laws): custom_data.opt_out_type "LDP" on every
    event ("all"), on events of visitors from `ldp_states` ("states"), or only where an event
    asks for it ("off")."""

    OFF = "off"
    ALL = "all"
    STATES = "states"


class Gpc(StrEnum):
    """What a browser's Global Privacy Control (Sec-GPC: 1) means: "opt_out" sends its events
    with opt_out: true; "no_delivery" keeps them from every integration (filtered, with the reason)."""

    OPT_OUT = "opt_out"
    NO_DELIVERY = "no_delivery"


class PrivacySettings(msgspec.Struct):
    ldp: Ldp = Ldp.OFF
    ldp_states: list[str] = []  # two-letter US state codes, lowercase
    url_params_to_remove: list[str] = []  # beside the built-in list (delivery/urls.py)
    gpc: Gpc = Gpc.OPT_OUT


class Serving(msgspec.Struct):
    """Where a site mounts the edge on its own origin: the tag at <prefix>/<script>, ingestion at
    <prefix>/<endpoint> (collector/edge/serving.py derives opaque defaults from the source's id)."""

    prefix: str  # "/sig": the path the site's proxy forwards to the edge
    script: str  # "k3v9q2mx.js"
    endpoint: str  # "w8r2p4nz"


class RetiredKey(msgspec.Struct):
    """A pipeline key replaced by a rotation: accepted until `until`, then refused and counted
    on its source."""

    key: str
    until: float


MAX_RETIRED_KEYS = 5  # the newest are kept; an older key is unknown, like any other


class Source(msgspec.Struct):
    id: str
    name: str
    pipeline_key: str
    created_at: float
    updated_at: float
    domain: str | None = None
    allowed_origins: list[str] = []
    cookie_domain: str | None = None
    default_country: str | None = None
    consent: ConsentSettings = msgspec.field(default_factory=ConsentSettings)
    rate_limit_per_second: float = 1000.0  # events/s accepted per source
    rate_limit_burst: int = 20000
    client_rate_limit_per_second: float = 50.0  # events/s accepted per client address
    client_rate_limit_burst: int = 1000  # at least one full request (500 events)
    privacy: PrivacySettings = msgspec.field(default_factory=PrivacySettings)
    # The secret key for the site's own servers (sk_live_...): only its SHA-256 is kept, and
    # its last four characters to show which one is set.
    server_key_sha256: str | None = None
    server_key_hint: str | None = None
    serving: Serving | None = None  # None: the names derived from the id
    pintrk_bridge: bool = False  # the tag hands its event ids to a Pinterest Tag (pintrk) on the page
    retired_keys: list[RetiredKey] = []  # newest first


class Credential(StrEnum):
    """A credential a test send tries on its own."""

    APP = "app"  # app_id and app_secret, with the refresh token
    CONVERSION_TOKEN = "conversion_token"
    ACCESS_TOKEN = "access_token"


class PinterestConfig(msgspec.Struct):
    ad_account_id: str
    access_token: str | None = None  # pasted, or minted by refreshing (then it expires)
    conversion_token: str | None = None
    # OAuth: with these signal-edge gets access tokens itself and refreshes them (delivery/pinterest/tokens.py).
    app_id: str | None = None
    app_secret: str | None = None
    refresh_token: str | None = None
    access_token_expires_at: float | None = None
    refresh_token_expires_at: float | None = None
    token_refreshed_at: float | None = None
    test_mode: bool = False
    event_map: dict[str, str] = {}
    event_names: str = "current"  # the standard table: Pinterest's current names, or the seed's (mapping.py)
    send_custom_event_name: bool = False
    rate_limit_per_second: float = 100.0
    rate_limit_burst: int = 200


SECRET_KEYS = ("access_token", "conversion_token", "app_secret", "refresh_token")


class Health(msgspec.Struct):
    status: str = "pending"  # pending | healthy | unhealthy
    problem: str | None = None  # a key of catalog.TROUBLESHOOTING
    message: str | None = None  # Pinterest's own words, when it gave any
    at: float | None = None


class Integration(msgspec.Struct):
    id: str
    source_id: str
    name: str
    config: PinterestConfig
    created_at: float
    updated_at: float
    vendor: str = "pinterest"
    enabled: bool = True  # disabled: nothing is queued for it (the edge counts what it skips)
    paused: bool = False  # paused: events are queued but nothing is sent until it is resumed
    variant: str = "default"
    consent_categories: list[str] = []
    health: Health = msgspec.field(default_factory=Health)

    @property
    def oauth(self) -> bool:
        """signal-edge gets this integration's access tokens itself (an app and a refresh token)."""
        cfg = self.config
        return bool(cfg.app_id and cfg.app_secret and cfg.refresh_token)

    @property
    def options(self) -> Options:
        cfg = self.config
        return Options(self.variant, cfg.event_map, cfg.send_custom_event_name, cfg.event_names)


def consent_allows(granted: list[str] | None, source: Source, required: list[str]) -> bool:
    """Design section 5: an event reaches an integration when the source does not enforce
    consent, or its granted categories (else the source's defaults) cover all required.
    Category names compare ignoring case ("Advertising" is "advertising")."""
    if not source.consent.enabled or not required:
        return True
    categories = granted if granted is not None else source.consent.default_categories
    return {c.lower() for c in required} <= {c.lower() for c in categories}
