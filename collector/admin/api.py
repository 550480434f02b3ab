"""Management API handlers (`/v1/admin`, design section 6) and the route table that also
generates the OpenAPI document."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, overload
from urllib.parse import urlsplit

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from collector.admin import deleted, flash
from collector.admin import schemas as s
from collector.admin.deployment import deployment, serving_out
from collector.admin.errors import ApiError, from_validation
from collector.admin.match import match_quality
from collector.edge.ingest import EventError, RequestContext, build_event
from collector.edge.serving import conflict, default_serving, script_tag, serving_of
from collector.edge.wire import event_decoder as wire_event_decoder
from collector.services import Services
from delivery.config import (
    MAX_RETIRED_KEYS,
    SERVER_KEY_PREFIX,
    ConsentSettings,
    Credential,
    Health,
    Integration,
    PinterestConfig,
    PrivacySettings,
    RetiredKey,
    Serving,
    Source,
    consent_allows,
)
from delivery.events import EdgeEvent, event_decoder, event_view
from delivery.pinterest import client, oauth
from delivery.pinterest.catalog import TROUBLESHOOTING, Catalog, catalog
from delivery.pinterest.eqs import LOOKBACKS, PROBLEMS
from delivery.pinterest.mapping import (
    CUSTOM_EVENT,
    DELIVERED_TYPES,
    PROFILE_HELP,
    MappingOrigin,
    effective_mapping,
    event_name,
    map_event,
    name_key,
)
from delivery.pinterest.normalize import sha256
from delivery.pinterest.payload import Event, UserData
from delivery.pinterest.schema_check import schema_validator
from delivery.pinterest.tokens import RefreshRefused, credentials_lock
from delivery.pinterest.variants import VARIANTS
from delivery.queue import Waiting
from delivery.retry import MARGIN, MAX_AGE, TOO_OLD, too_old
from delivery.secrets import mask
from delivery.store import DebugRecord, SourceActivity

_encoder = msgspec.json.Encoder()
MAX_LIMIT = 100
MAX_SHOWN = 32 * 1024  # bytes of a stored event shown as text when it cannot be shown as JSON
MAX_ADMIN_BODY = 256 * 1024
SSE_HEARTBEAT = 15.0
NOT_CONNECTED = "connect with Pinterest first: a conversion token is minted with the OAuth access token"


@overload
def iso(ts: float) -> str: ...
@overload
def iso(ts: float | None) -> str | None: ...
def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(_encoder.encode(obj), status, media_type="application/json")


def page_response(data: list, has_more: bool) -> Response:
    """One page of a listing; its last item's id is the cursor of the next."""
    return json_response({"data": data, "next_cursor": str(data[-1].id) if has_more else None, "has_more": has_more})


def new_id(prefix: str) -> str:
    return prefix + base64.b32encode(secrets.token_bytes(10)).decode().lower()


def new_pipeline_key() -> str:
    return "dk_live_" + secrets.token_urlsafe(24)


def new_server_key() -> str:
    return SERVER_KEY_PREFIX + "live_" + secrets.token_urlsafe(32)


def privacy_settings(body: s.Privacy) -> PrivacySettings:
    return PrivacySettings(body.ldp, [state.lower() for state in body.ldp_states], list(body.url_params_to_remove),
                           body.gpc)


def hosts_of_urls(body: Any) -> Any:
    """A URL pasted where a host name belongs ("https://Shop.example.com/cart") is cut to its host."""
    if isinstance(body, dict):
        for key in ("domain", "cookie_domain"):
            value = body.get(key)
            if isinstance(value, str) and any(c in value for c in ":/?#"):
                host = urlsplit(value.strip() if "://" in value else "//" + value.strip()).hostname
                body[key] = host.rstrip(".") if host else value
    return body


def snippet(public_url: str, pipeline_key: str) -> str:
    """The snippet for the edge on its own host (SIGNAL_PUBLIC_URL)."""
    return script_tag(f'{public_url.rstrip("/")}/d.js', pipeline_key)


@dataclass(frozen=True)
class ApiRoute:
    method: str
    path: str  # below /v1/admin
    handler: str  # method name on Api
    summary: str
    body: Any = None
    response: Any = None
    status: int = 200
    query: tuple[str, ...] = ()
    media: str | None = None  # a response that is not JSON


class Api:
    def __init__(self, services: Services) -> None:
        self.s = services
        self.store = services.store
        self.queue = services.queue

    # --- plumbing ---------------------------------------------------------------------

    @staticmethod
    async def body(request: Request) -> bytes:
        content_type = request.headers.get("content-type", "")
        if not content_type.split(";")[0].strip().lower().endswith("json"):
            raise ApiError(415, "unsupported_media_type", "send the body as JSON with Content-Type: application/json")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_ADMIN_BODY:
                raise ApiError(413, "body_too_large", f"body is over {MAX_ADMIN_BODY // 1024} KB")
        return body

    async def decode(self, request: Request, type_: Any, prepare=None) -> Any:
        """The body as `type_`; `prepare` first tidies the decoded JSON (a pasted URL, say)."""
        body = await self.body(request)
        try:
            if prepare is None:
                return msgspec.json.decode(body, type=type_)
            return msgspec.convert(prepare(msgspec.json.decode(body)), type_)
        except msgspec.ValidationError as exc:
            raise from_validation(exc, body, type_) from None
        except msgspec.DecodeError as exc:
            raise ApiError(400, "malformed_json", f"body is not valid JSON: {exc}") from None

    @staticmethod
    def limit(request: Request, default: int = 50) -> int:
        raw = request.query_params.get("limit")
        if raw is None:
            return default
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
            raise ApiError(400, "invalid_field", f"limit: a whole number from 1 to {MAX_LIMIT}", "limit")
        return int(raw)

    @staticmethod
    def int_cursor(request: Request) -> int | None:
        raw = request.query_params.get("cursor")
        if not raw:
            return None
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
            raise ApiError(400, "invalid_cursor", "cursor: use the next_cursor of the previous page", "cursor")
        return int(raw)

    def page(self, request: Request, items: list, key=lambda x: x.id) -> dict:
        """Cursor pagination over an ordered snapshot list; the cursor is the last id seen."""
        limit = self.limit(request)
        cursor = request.query_params.get("cursor")
        if cursor:
            ids = [key(i) for i in items]
            if cursor not in ids:
                raise ApiError(400, "invalid_cursor", "cursor: use the next_cursor of the previous page", "cursor")
            items = items[ids.index(cursor) + 1:]
        chunk = items[:limit]
        has_more = len(items) > limit
        return {"data": chunk, "next_cursor": key(chunk[-1]) if has_more else None, "has_more": has_more}

    def source_or_404(self, source_id: str) -> Source:
        source = self.store.source(source_id)
        if source is None:
            raise ApiError(404, "not_found", f"no source with id {source_id}")
        return source

    def integration_or_404(self, integration_id: str) -> Integration:
        integration = self.store.integration(integration_id)
        if integration is None:
            raise ApiError(404, "not_found", f"no integration with id {integration_id}")
        return integration

    # --- views --------------------------------------------------------------------------

    async def sources_out(self, sources: list[Source]) -> list[s.SourceOut]:
        await self.s.activity.flush()  # this node's latest, so the answer is current
        activity = await self.store.activity([src.id for src in sources]) if sources else {}
        return [self.source_out(src, activity[src.id]) for src in sources]

    async def one_source_out(self, src: Source) -> s.SourceOut:
        return (await self.sources_out([src]))[0]

    def source_out(self, src: Source, activity: SourceActivity) -> s.SourceOut:
        return s.SourceOut(
            id=src.id, name=src.name, pipeline_key=src.pipeline_key, domain=src.domain,
            allowed_origins=src.allowed_origins, cookie_domain=src.cookie_domain,
            default_country=src.default_country,
            consent=s.Consent(src.consent.enabled, list(src.consent.default_categories)),
            rate_limit_per_second=src.rate_limit_per_second, rate_limit_burst=src.rate_limit_burst,
            client_rate_limit_per_second=src.client_rate_limit_per_second,
            client_rate_limit_burst=src.client_rate_limit_burst,
            privacy=s.Privacy(src.privacy.ldp, list(src.privacy.ldp_states), list(src.privacy.url_params_to_remove),
                              src.privacy.gpc),
            server_key=f"{SERVER_KEY_PREFIX}****{src.server_key_hint}" if src.server_key_hint else None,
            created_at=iso(src.created_at), updated_at=iso(src.updated_at),
            snippet=snippet(self.s.settings.edge_url, src.pipeline_key),
            rejected=activity.refused,
            recent_refusals=[s.RefusalOut(iso(r.at), r.reason, r.detail) for r in activity.recent_refusals],
            last_event_at=iso(activity.last_event_at),
            serving=serving_out(src, self.s.settings.port), pintrk_bridge=src.pintrk_bridge,
            previous_keys=[s.PreviousKeyOut(r.key, iso(r.until)) for r in src.retired_keys],
            deployment=deployment(src, self.s.activity),
        )

    def serving(self, body: s.ServingIn, source_id: str, current: Serving) -> Serving:
        """The names asked for (the current ones where omitted), if they can be served."""
        serving = Serving(body.prefix or current.prefix, body.script or current.script,
                          body.endpoint or current.endpoint)
        problem = conflict(serving, source_id, self.store.sources())
        if problem:
            raise ApiError(409 if problem.taken else 400, "conflict" if problem.taken else "invalid_field",
                           f"serving.{problem.field}: {problem.message}", f"serving.{problem.field}")
        return serving

    async def integration_out(self, integ: Integration) -> s.IntegrationOut:
        cfg = integ.config
        stats = await self.queue.stats(integ.id)
        health = integ.health
        return s.IntegrationOut(
            id=integ.id, source_id=integ.source_id, vendor=integ.vendor, name=integ.name, enabled=integ.enabled,
            paused=integ.paused, variant=integ.variant, consent_categories=integ.consent_categories,
            config=s.PinterestConfigOut(
                ad_account_id=cfg.ad_account_id, access_token=mask(cfg.access_token),
                conversion_token=mask(cfg.conversion_token), app_id=cfg.app_id, app_secret=mask(cfg.app_secret),
                refresh_token=mask(cfg.refresh_token), connected=integ.oauth,
                access_token_expires_at=iso(cfg.access_token_expires_at),
                token_refreshed_at=iso(cfg.token_refreshed_at),
                refresh_token_expires_at=iso(cfg.refresh_token_expires_at), test_mode=cfg.test_mode,
                event_map=cfg.event_map,
                event_names=cfg.event_names, send_custom_event_name=cfg.send_custom_event_name,
                rate_limit_per_second=cfg.rate_limit_per_second, rate_limit_burst=cfg.rate_limit_burst,
            ),
            health=s.HealthOut(
                status=health.status, problem=health.problem,
                message=TROUBLESHOOTING.get(health.problem) if health.problem else None,
                pinterest_message=health.message, checked_at=iso(health.at),
            ),
            delivery=s.DeliveryCounts(
                accepted=stats.accepted, filtered=stats.filtered, queued=stats.queued, in_flight=stats.in_flight,
                delivered=stats.delivered, dead_lettered=stats.dead_lettered,
                skipped_disabled=stats.skipped_disabled, last_error=stats.last_error,
                last_error_at=iso(stats.last_error_at),
            ),
            warnings=config_warnings(cfg),
            created_at=iso(integ.created_at), updated_at=iso(integ.updated_at),
        )

    # --- sources --------------------------------------------------------------------------

    async def list_sources(self, request: Request) -> Response:
        page = self.page(request, self.store.sources())
        page["data"] = await self.sources_out(page["data"])
        return json_response(page)

    async def create_source(self, request: Request) -> Response:
        body: s.SourceCreate = await self.decode(request, s.SourceCreate, hosts_of_urls)
        source_id = body.id or new_id("src_")
        if self.store.source(source_id):
            raise ApiError(409, "conflict", f"a source with id {source_id} already exists", "id")
        serving = self.serving(body.serving, source_id, default_serving(source_id))
        now = time.time()
        source = Source(
            id=source_id, name=body.name, pipeline_key=new_pipeline_key(), created_at=now, updated_at=now,
            domain=body.domain, allowed_origins=body.allowed_origins, cookie_domain=body.cookie_domain,
            default_country=body.default_country.upper() if body.default_country else None,
            consent=ConsentSettings(body.consent.enabled, list(body.consent.default_categories)),
            rate_limit_per_second=body.rate_limit_per_second, rate_limit_burst=body.rate_limit_burst,
            client_rate_limit_per_second=body.client_rate_limit_per_second,
            client_rate_limit_burst=body.client_rate_limit_burst,
            privacy=privacy_settings(body.privacy),
            serving=serving if serving != default_serving(source_id) else None, pintrk_bridge=body.pintrk_bridge,
        )
        await self.store.put_source(source, "create")
        return json_response(await self.one_source_out(source), 201)

    async def get_source(self, request: Request) -> Response:
        return json_response(await self.one_source_out(self.source_or_404(request.path_params["id"])))

    async def patch_source(self, request: Request) -> Response:
        source = self.source_or_404(request.path_params["id"])
        body: s.SourcePatch = await self.decode(request, s.SourcePatch, hosts_of_urls)
        changes = {k: v for k in s.SourcePatch.__struct_fields__ if (v := getattr(body, k)) is not msgspec.UNSET}
        if "consent" in changes:
            consent = changes["consent"]
            changes["consent"] = ConsentSettings(consent.enabled, list(consent.default_categories))
        if changes.get("default_country"):
            changes["default_country"] = changes["default_country"].upper()
        if "privacy" in changes:
            changes["privacy"] = privacy_settings(changes["privacy"])
        if "serving" in changes:
            changes["serving"] = self.serving(changes["serving"], source.id, serving_of(source))
        updated = msgspec.structs.replace(source, **changes, updated_at=time.time())
        await self.store.put_source(updated, "update")
        return json_response(await self.one_source_out(updated))

    async def delete_source(self, request: Request) -> Response:
        source = self.source_or_404(request.path_params["id"])
        if self.store.integrations(source.id):
            raise ApiError(409, "conflict", "this source still has integrations; delete them first")
        await self.store.delete_source(source.id)
        return Response(status_code=204)

    async def rotate_server_key(self, request: Request) -> Response:
        """A new server key for the site's own servers (the old one stops at once); shown once."""
        source = self.source_or_404(request.path_params["id"])
        key = new_server_key()
        updated = msgspec.structs.replace(source, server_key_sha256=hashlib.sha256(key.encode()).hexdigest(),
                                          server_key_hint=key[-4:], updated_at=time.time())
        await self.store.put_source(updated, "rotate-server-key")
        return json_response(s.ServerKeyIssued(key, "Shown this once: only its hash is kept. Send it from your servers "
                                               "only (Authorization: Bearer ...): it lets events give the visitor's "
                                               "IP address and User-Agent (context.ip, context.userAgent)."))

    async def rotate_key(self, request: Request) -> Response:
        """A new pipeline key; the replaced one keeps working for `overlap_days` (7 by default), so
        that pages cached with the old snippet are not refused meanwhile."""
        source = self.source_or_404(request.path_params["id"])
        body = await self.decode(request, s.RotateKey) if _has_body(request) else s.RotateKey()
        now = time.time()
        retired = [RetiredKey(source.pipeline_key, now + body.overlap_days * 86400), *source.retired_keys]
        updated = msgspec.structs.replace(source, pipeline_key=new_pipeline_key(), updated_at=now,
                                          retired_keys=retired[:MAX_RETIRED_KEYS])
        await self.store.put_source(updated, "rotate-key")
        return json_response(await self.one_source_out(updated))

    # --- integrations ---------------------------------------------------------------------

    async def list_integrations(self, request: Request) -> Response:
        source_id = request.query_params.get("source_id")
        page = self.page(request, self.store.integrations(source_id or None))
        page["data"] = [await self.integration_out(x) for x in page["data"]]
        return json_response(page)

    async def create_integration(self, request: Request) -> Response:
        body: s.IntegrationCreate = await self.decode(request, s.IntegrationCreate, ad_account_of_url)
        if self.store.source(body.source_id) is None:
            raise ApiError(400, "unknown_source",
                           f"source_id: no source with id {body.source_id}; create the source first", "source_id")
        check_credentials(body.config)
        check_event_map(body.config.event_map)
        now = time.time()
        integration = Integration(
            id=new_id("int_"), source_id=body.source_id, name=body.name, created_at=now, updated_at=now,
            vendor=body.vendor, enabled=body.enabled, variant=body.variant,
            consent_categories=list(body.consent_categories),
            config=msgspec.convert(msgspec.to_builtins(body.config), PinterestConfig),
        )
        await self.store.put_integration(integration, "create")
        return json_response(await self.integration_out(integration), 201)

    async def get_integration(self, request: Request) -> Response:
        return json_response(await self.integration_out(self.integration_or_404(request.path_params["id"])))

    async def patch_integration(self, request: Request) -> Response:
        integ = self.integration_or_404(request.path_params["id"])
        body: s.IntegrationPatch = await self.decode(request, s.IntegrationPatch, ad_account_of_url)
        changes: dict[str, Any] = {
            k: v for k in ("name", "enabled", "paused", "variant", "consent_categories")
            if (v := getattr(body, k)) is not msgspec.UNSET
        }
        config_changes = {} if body.config is msgspec.UNSET else {
            k: v for k in s.PinterestConfigPatch.__struct_fields__
            if (v := getattr(body.config, k)) is not msgspec.UNSET}
        check_event_map(config_changes.get("event_map", {}))
        now = time.time()

        def patched(current: Integration) -> Integration:
            """The change applied to the integration as stored (its tokens may have been refreshed
            since this request began)."""
            update = dict(changes)
            if config_changes:
                update["config"] = msgspec.structs.replace(current.config, **config_changes)
                check_credentials(update["config"])
                if CREDENTIALS & config_changes.keys() and current.health.status == "unhealthy":
                    update["health"] = Health("pending", at=now)
            return msgspec.structs.replace(current, **update, updated_at=now)

        async with self.store.exclusive(credentials_lock(integ.id)):  # no token refresh meanwhile
            updated = await self.store.update_integration(integ.id, patched, "update")
        if updated is None:
            raise ApiError(404, "not_found", f"no integration with id {integ.id}")
        return json_response(await self.integration_out(updated))

    async def delete_integration(self, request: Request) -> Response:
        """Deleting never loses an event: what is still queued becomes dead letters, which stay
        readable, exportable and replayable into another integration."""
        integ = self.integration_or_404(request.path_params["id"])
        await deleted.remember(self.store, integ)  # the name its dead letters go under
        await self.store.delete_integration(integ.id)  # its worker stops: nothing new is leased
        moved = await self.queue.discard(integ.id, DELETED)
        if moved:
            await self.store.audit("discard", "integration", integ.id, None, {"dead_lettered": moved})
        return Response(status_code=204)

    async def test_integration(self, request: Request) -> Response:
        integ = self.integration_or_404(request.path_params["id"])
        now = int(time.time())
        sample = Event(
            event_name="page_visit", action_source="web", event_time=now,
            event_id=f"signal-edge-test-{uuid.uuid4()}",
            user_data=UserData(em=[sha256("test@signal-edge.invalid")], client_ip_address="203.0.113.50",
                               client_user_agent="signal-edge integration test"),
            event_source_url="https://signal-edge.invalid/test",
        )
        outcome = await self.s.delivery.send_test(integ, sample)
        checks = [s.CredentialCheck(Credential(c.credential), c.ok, c.message) for c in outcome.checks]
        return json_response(s.TestResult(outcome.ok, outcome.message, checks))

    async def preview(self, request: Request) -> Response:
        """What an event would become for this integration: ingestion (PII hashed), consent,
        the mapping and the payload, checked against Pinterest's schema. Nothing is queued."""
        integ = self.integration_or_404(request.path_params["id"])
        source = self.source_or_404(integ.source_id)
        body = await self.body(request)
        try:
            ev = preview_event(body, source)
        except msgspec.ValidationError as exc:
            raise from_validation(exc, body) from None
        except msgspec.DecodeError as exc:
            raise ApiError(400, "malformed_json", f"body is not valid JSON: {exc}") from None
        except RecursionError:
            raise ApiError(400, "too_deep", "body: nested too deeply; send flatter data") from None
        except EventError as exc:
            raise ApiError(400, exc.code, str(exc), exc.field) from None
        incoming, profile = event_view(ev), integ.config.event_names
        if ev.type not in DELIVERED_TYPES:
            return json_response(s.PreviewOut(False, "not sent: identify and group events only add identity to the "
                                                     "events that follow", incoming, profile))
        if not consent_allows(ev.consent, source, integ.consent_categories):
            categories = ", ".join(integ.consent_categories)
            return json_response(s.PreviewOut(False, "not sent: the visitor's consent does not cover this "
                                                     f"integration's categories ({categories})", incoming, profile))
        mapped = map_event(ev, integ.options)
        warnings = ev.notes + mapped.warnings  # what the edge left out, then the mapping
        if mapped.event is None:
            return json_response(s.PreviewOut(False, mapped.reason, incoming, profile, warnings=warnings))
        if too_old(ev.event_time, time.time()):  # as delivery would: dead-lettered, not sent
            return json_response(s.PreviewOut(False, TOO_OLD, incoming, profile, mapped.event.event_name,
                                              warnings=warnings))
        payload = msgspec.json.decode(client.encode([mapped.event]))
        problems = [f"{'/'.join(map(str, error.absolute_path)) or 'body'}: {error.message}"
                    for error in schema_validator().iter_errors(payload)]
        return json_response(s.PreviewOut(True, None, incoming, profile, mapped.event.event_name, payload,
                                          warnings, problems))

    async def mapping(self, request: Request) -> Response:
        integ = self.integration_or_404(request.path_params["id"])
        options, variant = integ.options, VARIANTS[integ.variant]
        rows = [s.MappingRow(name, event, origin, variant.is_priority(event))
                for name, event, origin in effective_mapping(options, integ.config.event_map)]
        profile = integ.config.event_names
        return json_response(s.MappingOut(
            integ.variant, profile, PROFILE_HELP[profile], rows,
            s.MappingRow("anything else", CUSTOM_EVENT, MappingOrigin.STANDARD, variant.is_priority(CUSTOM_EVENT)),
            list(variant.priority_events) if variant.priority_events is not None else None, integ.config.event_map,
            integ.config.send_custom_event_name))

    async def topic_or_404(self, integration_id: str) -> str:
        """An integration's id, or a deleted one's that still has dead letters."""
        if (self.store.integration(integration_id) is None
                and integration_id not in await self.queue.dead_letter_topics()):
            raise ApiError(404, "not_found", f"no integration with id {integration_id}")
        return integration_id

    async def mint_conversion_token(self, request: Request) -> Response:
        """A conversion token minted with the integration's OAuth access token, and kept."""
        integ = self.integration_or_404(request.path_params["id"])
        if not integ.oauth:
            raise ApiError(409, "not_connected", NOT_CONNECTED)
        tokens = self.s.delivery.tokens
        try:
            integ = await tokens.fresh(integ)
            if integ.config.access_token is None:  # disconnected meanwhile
                raise ApiError(409, "not_connected", NOT_CONNECTED)
            minted = await oauth.conversion_token(tokens.http, self.s.settings.pinterest_api_base,
                                                  integ.config.access_token)
        except RefreshRefused:
            raise ApiError(409, "refresh_refused", TROUBLESHOOTING["refresh_refused"]) from None
        except (oauth.Refused, oauth.Unavailable) as exc:
            raise ApiError(502, "pinterest_refused", f"Pinterest did not mint a conversion token: {exc}") from None
        now = time.time()
        async with self.store.exclusive(credentials_lock(integ.id)):
            updated = await self.store.update_integration(integ.id, lambda current: msgspec.structs.replace(
                current, config=msgspec.structs.replace(current.config, conversion_token=minted), updated_at=now),
                "mint-conversion-token")
        if updated is None:
            raise ApiError(404, "not_found", f"no integration with id {integ.id}")
        if (session := getattr(request.state, "session", None)) is not None:  # the UI reloads the page
            await flash.leave(self.store, session.key, "ok", "A conversion token was minted and saved: it does not "
                              "expire, and the integration sends with it from now on.")
        return json_response(await self.integration_out(updated))

    async def dead_letters(self, request: Request) -> Response:
        topic = await self.topic_or_404(request.path_params["id"])
        limit = self.limit(request)
        after = self.int_cursor(request) or 0
        rows = await self.queue.dead_letters(topic, after, limit + 1)
        data = [dead_letter_out(d) for d in rows[:limit]]
        has_more = len(rows) > limit
        return page_response(data, has_more)

    async def export_dead_letters(self, request: Request) -> Response:
        """Every dead letter as JSON Lines, one object per line, read page by page."""
        topic = await self.topic_or_404(request.path_params["id"])

        async def lines():
            after = 0
            while rows := await self.queue.dead_letters(topic, after, 500):
                yield b"".join(_encoder.encode(dead_letter_out(d)) + b"\n" for d in rows)
                after = rows[-1].id

        return StreamingResponse(lines(), media_type="application/x-ndjson", headers={
            "Content-Disposition": f'attachment; filename="{topic}-dead-letters.jsonl"'})

    async def replay(self, request: Request) -> Response:
        topic = await self.topic_or_404(request.path_params["id"])
        body = await self.decode(request, s.ReplayRequest) if _has_body(request) else s.ReplayRequest()
        into = body.into or topic
        target = self.store.integration(into)
        if target is None:
            raise ApiError(409 if into == topic else 400, "no_such_integration",
                           f"into: integration {into} does not exist; replay into an existing integration"
                           if body.into else "this integration was deleted: replay its dead letters into another "
                           "one with {\"into\": \"int_...\"}, or export them", "into")
        if into != topic and not body.confirm_other_source:
            origin = await dead_letters_source(self.store, self.queue, topic)
            if origin != target.source_id:
                raise ApiError(400, "confirm_other_source", f"confirm_other_source: {into} belongs to another source "
                               f"({target.source_id}) than these events ({origin or 'unknown'}): replayed there, one "
                               "site's visitors go to another site's ad account. Send \"confirm_other_source\": true "
                               "if that is what you mean", "confirm_other_source")
        now = time.time()
        count = await self.queue.replay(topic, body.ids, into, since=now - REPLAY_WINDOW)
        await self.store.audit("replay", "integration", topic, None,
                               {"replayed": count, "ids": body.ids, **({"into": into} if into != topic else {})})
        self.s.notify(into)
        return json_response(s.ReplayResult(count))

    async def event_quality(self, request: Request) -> Response:
        """Pinterest's Event Quality Score, as last read (in the background every few hours);
        `?refresh=1` reads it now (again after 15 s at the soonest)."""
        integ = self.integration_or_404(request.path_params["id"])
        refresh = request.query_params.get("refresh") in ("1", "true")
        report = await self.s.eqs.report(integ, refresh)
        return json_response(s.EventQualityOut(
            integ.id, report.ad_account_id, iso(report.checked_at), iso(report.scores_at), iso(report.next_at),
            [s.EventQualityPeriod(lookback, report.scores.get(lookback, [])) for lookback in LOOKBACKS],
            report.problem, PROBLEMS.get(report.problem) if report.problem else None, report.pinterest_message))

    async def match_quality(self, request: Request) -> Response:
        integ = self.integration_or_404(request.path_params["id"])
        records = await self.store.debug_records(None, integ.id, "delivered", None, self.limit(request, 100))
        return json_response(match_quality(integ.id, records))

    # --- catalog, debugger, audit -------------------------------------------------------

    async def get_catalog(self, request: Request) -> Response:
        return json_response(catalog())

    async def debug_events(self, request: Request) -> Response:
        q = request.query_params
        limit = self.limit(request)
        if q.get("status") == "queued":
            return await self.queued_events(request, limit)
        rows = await self.store.debug_records(q.get("source_id"), q.get("integration_id"), q.get("status"),
                                              self.int_cursor(request), limit + 1)
        data = [debug_out(r) for r in rows[:limit]]
        has_more = len(rows) > limit
        return page_response(data, has_more)

    async def queued_events(self, request: Request, limit: int) -> Response:
        """Events still in the queue, newest first: waiting behind a paused or failing
        integration, for a retry, or in flight. (The debugger log holds outcomes only.)"""
        q = request.query_params
        integrations = {i.id: i for i in self.store.integrations(q.get("source_id") or None)
                        if not q.get("integration_id") or i.id == q.get("integration_id")}
        rows = await self.queue.waiting(list(integrations), self.int_cursor(request), limit + 1)
        data = [waiting_out(w, integrations[w.topic]) for w in rows[:limit]]
        has_more = len(rows) > limit
        return json_response({"data": data, "next_cursor": str(rows[limit - 1].position) if has_more else None,
                              "has_more": has_more})

    async def debug_stream(self, request: Request) -> Response:
        q = request.query_params
        wanted = {k: v for k in ("source_id", "integration_id", "status") if (v := q.get(k))}
        hub = self.s.hub

        async def events():
            queue = hub.subscribe()
            try:
                yield b": connected\n\n"
                while True:
                    try:
                        record = await asyncio.wait_for(queue.get(), SSE_HEARTBEAT)
                    except TimeoutError:
                        yield b": heartbeat\n\n"
                        continue
                    if all(getattr(record, k) == v or (k == "integration_id" and self.queued_for(record, v))
                           for k, v in wanted.items()) and (shown := live_out(record)) is not None:
                        yield b"data: " + _encoder.encode(shown) + b"\n\n"
            finally:
                hub.unsubscribe(queue)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def queued_for(self, record: DebugRecord, integration_id: str) -> bool:
        """A live "queued" record stands for every integration of its source."""
        integ = self.store.integration(integration_id)
        return record.integration_id is None and integ is not None and integ.source_id == record.source_id

    async def audit_log(self, request: Request) -> Response:
        limit = self.limit(request)
        rows = await self.store.audit_log(self.int_cursor(request), limit + 1)
        data = [s.AuditOut(a.id, iso(a.at), a.action, a.object_type, a.object_id, a.old, a.new) for a in rows[:limit]]
        has_more = len(rows) > limit
        return page_response(data, has_more)


def debug_out(r: DebugRecord) -> s.DebugEventOut:
    return s.DebugEventOut(
        id=r.id, at=iso(r.at), source_id=r.source_id, event_id=r.event_id, event=r.event, status=r.status,
        integration_id=r.integration_id, pinterest_event=r.pinterest_event, attempts=r.attempts, message=r.message,
        warnings=r.warnings, incoming=r.incoming, payload=r.payload,
    )


def live_out(r: DebugRecord) -> s.DebugEventOut | None:
    """A live record as the debugger shows it. What the edge just queued comes as the queue holds
    it (a positional array), shown here by field name, off the hot path; identify and group calls
    are queued for nobody (they only feed identity memory): no row that would never resolve."""
    if r.status != "queued" or r.integration_id is not None:
        return debug_out(r)
    try:
        ev = event_decoder.decode(r.incoming)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return debug_out(r)
    if ev.type not in DELIVERED_TYPES:
        return None
    return msgspec.structs.replace(debug_out(r), incoming=event_view(ev))


PREVIEW_IP, PREVIEW_USER_AGENT = "203.0.113.50", "Mozilla/5.0 (signal-edge preview)"


def preview_event(body: bytes, source: Source) -> EdgeEvent:
    """The event as ingestion would queue it: from a browser, whose request carries example
    values for the address and User-Agent; or, when it gives context.ip or context.userAgent,
    from the site's server (server key), which sends only what the event says."""
    now = time.time()
    inc = wire_event_decoder.decode(body)
    server = inc.context is not None and bool(inc.context.ip or inc.context.userAgent)
    ctx = RequestContext(source, PREVIEW_IP, PREVIEW_USER_AGENT, "preview-anonymous-id", "preview-pin-unauth", None,
                         None, now, 0.0, suspect=True, trusted=server)
    return build_event(inc, None, ctx, None)[0]


def waiting_out(w: Waiting, integ: Integration) -> s.DebugEventOut:
    try:
        ev = event_decoder.decode(w.payload)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        ev = None
    return s.DebugEventOut(
        id=None, at=iso(ev.received_at if ev else w.created_at), source_id=integ.source_id,
        event_id=ev.message_id if ev else "", event=(ev.name or ev.type) if ev else "(unreadable)", status="queued",
        integration_id=w.topic, pinterest_event=event_name(ev, integ.options) if ev else None, attempts=w.attempts,
        message=why_waiting(w, integ), incoming=_event_view(w.payload))


def why_waiting(w: Waiting, integ: Integration) -> str:
    if w.in_flight:
        return "being sent to Pinterest now"
    if integ.paused:
        return "waiting: the integration is paused; resume it to send"
    if integ.health.status == "unhealthy":
        return f"waiting: delivery stopped ({integ.health.problem}); see the integration's health for what to do"
    if w.attempts:
        return f"waiting to retry: attempt {w.attempts} failed ({w.last_error or 'no answer'})"
    return "waiting for the next batch"


async def dead_letters_source(store, queue, topic: str) -> str | None:
    """The source whose events `topic`'s dead letters hold: its integration's, or, once it was
    deleted, the one its first dead letter names (None when none can be read)."""
    integ = store.integration(topic)
    if integ is not None:
        return integ.source_id
    first = await queue.dead_letters(topic, 0, 1)
    try:
        return event_decoder.decode(first[0].payload).source_id if first else None
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None


# An event in flight at that moment may still reach Pinterest; a replay of it is harmless, since
# Pinterest deduplicates on event_id.
DELETED = ("the integration was deleted before this event's delivery was confirmed "
           "(replay into another integration, or export)")


REPLAY_WINDOW = MAX_AGE - MARGIN  # what delivery would still send (delivery/retry.py)


def dead_letter_out(d) -> s.DeadLetterOut:
    replayable = d.created_at >= time.time() - REPLAY_WINDOW
    return s.DeadLetterOut(d.id, d.event_id, d.reason, d.attempts, iso(d.created_at), iso(d.dead_at),
                           _event_view(d.payload), replayable,
                           None if replayable else "too old to replay: Pinterest refuses events over 7 days old; "
                                                   "export it instead")


def check_event_map(event_map: dict[str, str]) -> None:
    """Names match ignoring case and the spaces around them (mapping.name_key): two overrides
    that differ only in those would leave one of them silently without effect."""
    seen: dict[str, str] = {}
    for name in event_map:
        key, field = name_key(name), f"config.event_map.{name}"
        if not key:
            raise ApiError(400, "invalid_field", f"{field}: is empty: name the event to override", field)
        if key in seen:
            raise ApiError(400, "invalid_field", f'{field}: "{name.strip()}" and "{seen[key].strip()}" differ only in '
                           "case or spaces, and event names match ignoring both: keep one of them", field)
        seen[key] = name


def ad_account_of_url(body: Any) -> Any:
    """The Ads Manager URL the help names (https://ads.pinterest.com/advertiser/549764982399/...)
    pasted for the Ad Account ID: the id in it."""
    config = body.get("config") if isinstance(body, dict) else None
    if not isinstance(config, dict):
        return body
    value = config.get("ad_account_id")
    if not isinstance(value, str) or "/" not in value or len(value) > 2048:
        return body
    text = value.strip()
    try:
        parts = urlsplit(text if "://" in text else "https://" + text)
    except ValueError:  # not a URL after all: the format check says what is wrong
        return body
    segments = parts.path.split("/")
    host = parts.hostname or ""
    if (host == "pinterest.com" or host.endswith(".pinterest.com")) and "advertiser" in segments:
        found = segments[segments.index("advertiser") + 1:][:1]
        if found and found[0].isascii() and found[0].isdigit():
            config["ad_account_id"] = found[0]
    return body


CREDENTIALS = frozenset({"ad_account_id", "access_token", "conversion_token", "app_id", "app_secret", "refresh_token"})


def check_credentials(cfg) -> None:
    """Some way to send: a pasted token, or an app (with a refresh token, or to connect later)."""
    if cfg.access_token or cfg.conversion_token or (cfg.app_id and cfg.app_secret):
        return
    if cfg.app_id or cfg.app_secret or cfg.refresh_token:
        field = "config.app_secret" if cfg.app_id else "config.app_id"
        raise ApiError(400, "missing_field", f"{field}: required with the app's other credentials "
                       "(app_id and app_secret, then a refresh token or Connect with Pinterest)", field)
    raise ApiError(400, "missing_field", "config.access_token: required: paste an access token or a conversion "
                   "token, or give app_id and app_secret and connect with Pinterest", "config.access_token")


def config_warnings(cfg: PinterestConfig) -> list[str]:
    warnings = []
    if cfg.access_token and not cfg.access_token.startswith("pina_"):
        warnings.append("config.access_token does not start with pina_: check that you pasted the API access token")
    if cfg.conversion_token and not cfg.conversion_token.startswith("ct_"):
        warnings.append("config.conversion_token does not start with ct_: check that you pasted the conversion token")
    if cfg.send_custom_event_name:
        warnings.append("config.send_custom_event_name: Pinterest's published schema does not list "
                        "custom_event_name; Pinterest may reject custom events")
    return warnings


def _event_view(payload: bytes) -> Any:
    """A dead letter's event by field name (or as stored, when it is not an event of ours).
    A stored record can never make a listing fail."""
    try:
        view = event_view(event_decoder.decode(payload))
        _encoder.encode(view)  # nested too deep to encode, say: shown as text below
        return view
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, ValueError, TypeError):
        return payload[:MAX_SHOWN].decode("utf-8", "replace")


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return bool(length and length != "0") or "chunked" in request.headers.get("transfer-encoding", "")


Page = s.page_of
ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute("GET", "/sources", "list_sources", "List sources", response=Page(s.SourceOut), query=("cursor", "limit")),
    ApiRoute("POST", "/sources", "create_source", "Create a source", s.SourceCreate, s.SourceOut, 201),
    ApiRoute("GET", "/sources/{id}", "get_source", "Get a source", response=s.SourceOut),
    ApiRoute("PATCH", "/sources/{id}", "patch_source", "Update a source", s.SourcePatch, s.SourceOut),
    ApiRoute("DELETE", "/sources/{id}", "delete_source", "Delete a source (without integrations)", status=204),
    ApiRoute("POST", "/sources/{id}/rotate-key", "rotate_key",
             "Issue a new pipeline key; the old one keeps working for overlap_days (default 7)", s.RotateKey,
             s.SourceOut),
    ApiRoute("POST", "/sources/{id}/rotate-server-key", "rotate_server_key",
             "Issue a new server key for server-side calls (shown once)", response=s.ServerKeyIssued),
    ApiRoute("GET", "/integrations", "list_integrations", "List integrations", response=Page(s.IntegrationOut),
             query=("source_id", "cursor", "limit")),
    ApiRoute("POST", "/integrations", "create_integration", "Add a Pinterest integration", s.IntegrationCreate,
             s.IntegrationOut, 201),
    ApiRoute("GET", "/integrations/{id}", "get_integration", "Get an integration", response=s.IntegrationOut),
    ApiRoute("PATCH", "/integrations/{id}", "patch_integration", "Update an integration (omitted secrets are kept)",
             s.IntegrationPatch, s.IntegrationOut),
    ApiRoute("DELETE", "/integrations/{id}", "delete_integration",
             "Delete an integration (its queued events become dead letters)", status=204),
    ApiRoute("POST", "/integrations/{id}/conversion-token", "mint_conversion_token",
             "Mint a conversion token with the integration's OAuth access token, and keep it",
             response=s.IntegrationOut),
    ApiRoute("POST", "/integrations/{id}/test", "test_integration", "Send a test event (?test=true) to Pinterest",
             response=s.TestResult),
    ApiRoute("GET", "/integrations/{id}/mapping", "mapping",
             "The event mapping in effect: the standard table, the variant's rows, this integration's overrides",
             response=s.MappingOut),
    ApiRoute("POST", "/integrations/{id}/preview", "preview",
             "What an event (as the tag sends it) would become for this integration; nothing is sent",
             s.PreviewEvent, s.PreviewOut),
    ApiRoute("GET", "/integrations/{id}/dead-letters", "dead_letters", "List dead letters",
             response=Page(s.DeadLetterOut), query=("cursor", "limit")),
    ApiRoute("GET", "/integrations/{id}/dead-letters/export", "export_dead_letters",
             "Every dead letter as JSON Lines", media="application/x-ndjson"),
    ApiRoute("POST", "/integrations/{id}/dead-letters/replay", "replay",
             "Replay dead letters (all, or ids), into this integration or another", s.ReplayRequest, s.ReplayResult),
    ApiRoute("GET", "/integrations/{id}/match-quality", "match_quality", "Identity signals of recent events",
             response=s.MatchQuality, query=("limit",)),
    ApiRoute("GET", "/integrations/{id}/event-quality", "event_quality",
             "Pinterest's Event Quality Score for 1 and 14 days "
             "(?refresh=1 reads it now; again after 15 s at the soonest)",
             response=s.EventQualityOut, query=("refresh",)),
    ApiRoute("GET", "/catalog/pinterest", "get_catalog", "Pinterest config fields and variants", response=Catalog),
    ApiRoute("GET", "/debugger/events", "debug_events", "Recent events and their delivery outcome",
             response=Page(s.DebugEventOut), query=("source_id", "integration_id", "status", "cursor", "limit")),
    ApiRoute("GET", "/debugger/stream", "debug_stream", "Live event stream (Server-Sent Events)",
             query=("source_id", "integration_id", "status"), media="text/event-stream"),
    ApiRoute("GET", "/audit-log", "audit_log", "Configuration changes, newest first", response=Page(s.AuditOut),
             query=("cursor", "limit")),
)
