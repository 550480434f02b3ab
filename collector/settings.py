"""Settings from command-line flags and SIGNAL_* environment variables (flags win)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path

import msgspec

from delivery.ratelimit import ACCOUNT_CALLS_PER_MINUTE, RATE_RECOVERY
from delivery.retry import DEFAULT_DELAYS

DEFAULT_TRUSTED_PROXIES = ("127.0.0.1/32", "::1/128")
# A token someone chose (SIGNAL_ADMIN_TOKEN) guards the whole admin API: it must be long and
# varied enough to be random. Generated tokens (sea_ + 43 characters) pass by far.
MIN_ADMIN_TOKEN = 32
MIN_ADMIN_TOKEN_DISTINCT = 12


def default_static_dir() -> str:
    """The tag and the admin UI's assets: package data of an installed signal-edge (setup.py puts
    them in collector/static/), else static/ at the top of the checkout."""
    installed = Path(__file__).resolve().parent / "static"
    return str(installed if installed.is_dir() else installed.parent.parent / "static")


class Settings(msgspec.Struct, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8080
    admin_host: str = "127.0.0.1"  # the admin port is never meant for the internet
    admin_port: int = 8084
    admin_hosts: tuple[str, ...] = ()  # host names the admin app answers to, beside localhost
    db: str = "./signal-edge.db"
    database_url: str | None = None  # postgresql://...: PostgreSQL instead of the SQLite file
    pool_size: int = 10  # PostgreSQL connections per process
    workers: int = 1  # processes serving the same ports (PostgreSQL only)
    reuse_port: bool = False  # one of --workers' processes: the ports are shared (SO_REUSEPORT)
    admin_token: str | None = None
    secret_key: str | None = None
    secret_key_file: str | None = None  # default: beside the database file, named *.key
    pinterest_api_base: str = "https://api.pinterest.com"
    pinterest_oauth_url: str = "https://www.pinterest.com/oauth/"  # where Connect with Pinterest signs in
    admin_public_url: str | None = None  # how browsers reach the admin app (the OAuth redirect's base)
    trusted_proxies: tuple[str, ...] = DEFAULT_TRUSTED_PROXIES
    log_level: str = "info"
    log_format: str = "text"  # text | json: one JSON object per line
    access_log: bool = False  # a log line per request
    # Tuning, from the environment only.
    flush_interval: float = 1.0
    batch_size: int = 1000  # events per request to Pinterest (Pinterest's maximum)
    max_in_flight: int = 4  # concurrent requests per integration
    queue_max: int = 1_000_000  # above this many queued events, ingestion answers 503
    retry_delays: tuple[float, ...] = DEFAULT_DELAYS  # the backoff; the last repeats until the 7-day window closes
    request_timeout: float = 30.0  # the whole request to Pinterest, however slowly it answers
    lease_seconds: float = 20.0  # a batch in flight is taken over this long after its node stopped renewing it
    rate_recovery: float = RATE_RECOVERY  # seconds for a rate halved by a 429 to double back
    account_calls_per_minute: float = ACCOUNT_CALLS_PER_MINUTE  # each ad account's budget, for the whole cluster
    disk_reserve_mb: float = 64.0  # SQLite: below this much free disk, ingestion answers 503 (delivery goes on)
    auth_recheck: float = 600.0
    shutdown_grace: float = 5.0
    db_synchronous: str = "FULL"
    static_dir: str = msgspec.field(default_factory=default_static_dir)
    public_url: str | None = None  # where browsers reach the edge (https://data.example.com)
    max_connections: int | None = None  # the edge's open connections; default: from the file limit
    head_timeout: float = 10.0  # seconds for a request's line and headers to arrive
    body_timeout: float = 30.0  # seconds for its body to arrive after them
    identity_retention_days: float = 60.0  # identity memory kept after its last change
    debug_retention_days: float = 7.0  # the delivery log: debugger records
    dead_letter_retention_days: float = 30.0  # dead letters, after they died
    audit_retention_days: float = 365.0  # the audit log and the alert history
    retention_interval: float = 600.0  # seconds between the retention task's passes
    suppression_days: float = 30.0  # after an erasure, that person's new events are dropped this long
    # Alerts: how often they are judged, and their thresholds.
    alert_interval: float = 30.0
    alert_failing_minutes: float = 15.0  # delivery failing this long (no event delivered) is an incident
    alert_dead_letters: int = 100  # an integration holding more dead letters than this
    alert_drop_window: float = 3600.0  # seconds of an event type's volume set against its baseline
    alert_drop_baseline: float = 7 * 86400.0  # the trailing baseline, in seconds
    alert_drop_fraction: float = 0.25  # a window below this fraction of the baseline's rate is a drop
    alert_drop_min_events: float = 20.0  # types the baseline expects fewer of per window are not judged

    @property
    def edge_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "localhost" if self.host in ("127.0.0.1", "0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    @property
    def key_file(self) -> Path:
        """Where the generated secret key lives: never inside the database it protects."""
        default = "signal-edge.key" if self.database_url else Path(self.db).with_suffix(".key")
        return Path(self.secret_key_file or default).expanduser()

    @property
    def database(self) -> str:
        """The database, for people: the SQLite file, or the PostgreSQL URL without its password."""
        if not self.database_url:
            return self.db
        from delivery.postgres.db import shown
        return shown(self.database_url)

    def trusted_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(cidr.strip(), strict=False) for cidr in self.trusted_proxies if cidr.strip()]


_ENV = {
    "SIGNAL_HOST": "host",
    "SIGNAL_PORT": "port",
    "SIGNAL_ADMIN_HOST": "admin_host",
    "SIGNAL_ADMIN_PORT": "admin_port",
    "SIGNAL_ADMIN_HOSTS": "admin_hosts",
    "SIGNAL_DB": "db",
    "SIGNAL_DATABASE_URL": "database_url",
    "SIGNAL_POOL_SIZE": "pool_size",
    "SIGNAL_ADMIN_TOKEN": "admin_token",
    "SIGNAL_SECRET_KEY": "secret_key",
    "SIGNAL_SECRET_KEY_FILE": "secret_key_file",
    "SIGNAL_PINTEREST_API_BASE": "pinterest_api_base",
    "SIGNAL_PINTEREST_OAUTH_URL": "pinterest_oauth_url",
    "SIGNAL_ADMIN_PUBLIC_URL": "admin_public_url",
    "SIGNAL_TRUSTED_PROXIES": "trusted_proxies",
    "SIGNAL_LOG_LEVEL": "log_level",
    "SIGNAL_LOG_FORMAT": "log_format",
    "SIGNAL_ACCESS_LOG": "access_log",
    "SIGNAL_FLUSH_INTERVAL": "flush_interval",
    "SIGNAL_BATCH_SIZE": "batch_size",
    "SIGNAL_MAX_IN_FLIGHT": "max_in_flight",
    "SIGNAL_QUEUE_MAX": "queue_max",
    "SIGNAL_RETRY_DELAYS": "retry_delays",
    "SIGNAL_REQUEST_TIMEOUT": "request_timeout",
    "SIGNAL_LEASE_SECONDS": "lease_seconds",
    "SIGNAL_RATE_RECOVERY": "rate_recovery",
    "SIGNAL_ACCOUNT_CALLS_PER_MINUTE": "account_calls_per_minute",
    "SIGNAL_DISK_RESERVE_MB": "disk_reserve_mb",
    "SIGNAL_AUTH_RECHECK": "auth_recheck",
    "SIGNAL_SHUTDOWN_GRACE": "shutdown_grace",
    "SIGNAL_DB_SYNCHRONOUS": "db_synchronous",
    "SIGNAL_STATIC_DIR": "static_dir",
    "SIGNAL_PUBLIC_URL": "public_url",
    "SIGNAL_MAX_CONNECTIONS": "max_connections",
    "SIGNAL_HEAD_TIMEOUT": "head_timeout",
    "SIGNAL_BODY_TIMEOUT": "body_timeout",
    "SIGNAL_IDENTITY_RETENTION_DAYS": "identity_retention_days",
    "SIGNAL_RETENTION_INTERVAL": "retention_interval",
    "SIGNAL_DEBUG_RETENTION_DAYS": "debug_retention_days",
    "SIGNAL_DEAD_LETTER_RETENTION_DAYS": "dead_letter_retention_days",
    "SIGNAL_AUDIT_RETENTION_DAYS": "audit_retention_days",
    "SIGNAL_SUPPRESSION_DAYS": "suppression_days",
    "SIGNAL_ALERT_INTERVAL": "alert_interval",
    "SIGNAL_ALERT_FAILING_MINUTES": "alert_failing_minutes",
    "SIGNAL_ALERT_DEAD_LETTERS": "alert_dead_letters",
    "SIGNAL_ALERT_DROP_WINDOW": "alert_drop_window",
    "SIGNAL_ALERT_DROP_BASELINE": "alert_drop_baseline",
    "SIGNAL_ALERT_DROP_FRACTION": "alert_drop_fraction",
    "SIGNAL_ALERT_DROP_MIN_EVENTS": "alert_drop_min_events",
}
_LISTS = {"trusted_proxies", "retry_delays", "admin_hosts"}
_POSITIVE = {"identity_retention_days", "debug_retention_days", "dead_letter_retention_days", "audit_retention_days",
             "retention_interval", "suppression_days", "alert_interval", "alert_failing_minutes", "alert_drop_window",
             "alert_drop_baseline", "account_calls_per_minute"}


class SettingsError(ValueError):
    pass


def load_settings(flags: dict | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Environment first, then flags that were given (not None) on top."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    raw: dict = {}
    for var, field in _ENV.items():
        value = env.get(var)
        if value is None or value == "":
            continue
        raw[field] = [v.strip() for v in value.split(",") if v.strip()] if field in _LISTS else value
    raw.update({k: v for k, v in (flags or {}).items() if v is not None})
    if raw.get("database_url") and raw.get("db"):
        raise SettingsError("choose one database: --db / SIGNAL_DB (a SQLite file, one process) or --database-url / "
                            "SIGNAL_DATABASE_URL (PostgreSQL, any number of nodes), not both")
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        field = str(exc).rsplit("$.", 1)[-1].rstrip("`")
        var = next((v for v, f in _ENV.items() if f == field), field)
        raise SettingsError(f"setting {var}: {exc}") from None
    try:
        settings.trusted_networks()
    except ValueError as exc:
        raise SettingsError(f"setting SIGNAL_TRUSTED_PROXIES: {exc}") from None
    if not 1 <= settings.batch_size <= 1000:
        raise SettingsError("setting SIGNAL_BATCH_SIZE: from 1 to 1000 (Pinterest takes at most 1000 events a request)")
    for var, seconds in (("SIGNAL_REQUEST_TIMEOUT", settings.request_timeout),
                         ("SIGNAL_LEASE_SECONDS", settings.lease_seconds),
                         ("SIGNAL_RATE_RECOVERY", settings.rate_recovery)):
        if not seconds > 0:
            raise SettingsError(f"setting {var}: a number of seconds above 0")
    if not settings.retry_delays or min(settings.retry_delays) <= 0:
        raise SettingsError("setting SIGNAL_RETRY_DELAYS: seconds between attempts, comma-separated, each above 0 "
                            "(the last one repeats until Pinterest's 7-day window for the event closes)")
    if settings.disk_reserve_mb < 0:
        raise SettingsError("setting SIGNAL_DISK_RESERVE_MB: 0 or more (0: not watched)")
    if settings.max_in_flight < 1:
        raise SettingsError("setting SIGNAL_MAX_IN_FLIGHT: at least 1")
    if settings.database_url and not settings.database_url.startswith(("postgresql://", "postgres://")):
        raise SettingsError("setting SIGNAL_DATABASE_URL: use postgresql://user:password@host:port/database")
    if settings.pool_size < 2:
        raise SettingsError("setting SIGNAL_POOL_SIZE: at least 2 (the queue's appender keeps one connection)")
    if settings.workers < 1:
        raise SettingsError("--workers: at least 1")
    if settings.workers > 1 and not settings.database_url:
        raise SettingsError("--workers above 1 needs PostgreSQL: a SQLite file serves one process. Set "
                            "SIGNAL_DATABASE_URL (or --database-url) to run several processes or nodes")
    if settings.admin_token is not None and weak_token(settings.admin_token):
        raise SettingsError(
            f"setting SIGNAL_ADMIN_TOKEN: too weak to guard the admin API; use at least {MIN_ADMIN_TOKEN} random "
            "characters (such as the output of `openssl rand -base64 32`), or leave it unset and signal-edge "
            "generates one and prints it once")
    for var, field in _ENV.items():
        if field in _POSITIVE and getattr(settings, field) <= 0:
            raise SettingsError(f"setting {var}: more than 0")
    if not 0 < settings.alert_drop_fraction < 1:
        raise SettingsError("setting SIGNAL_ALERT_DROP_FRACTION: between 0 and 1 (0.25: a quarter of the baseline)")
    if settings.alert_drop_baseline <= settings.alert_drop_window:
        raise SettingsError("setting SIGNAL_ALERT_DROP_BASELINE: longer than SIGNAL_ALERT_DROP_WINDOW")
    if settings.log_format not in ("text", "json"):
        raise SettingsError("setting SIGNAL_LOG_FORMAT: text or json")
    if settings.db_synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise SettingsError("setting SIGNAL_DB_SYNCHRONOUS: use NORMAL, FULL or EXTRA")
    return settings


def weak_token(token: str) -> bool:
    """Too short, or too few distinct characters to be random ("aaaa...", "abcabc...")."""
    return len(token) < MIN_ADMIN_TOKEN or len(set(token)) < MIN_ADMIN_TOKEN_DISTINCT
