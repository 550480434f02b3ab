"""Pinterest's verdict on the events it received: the Event Quality Score.

`GET /v5/ad_accounts/{id}/conversion_eqs?lookback_period=1d|14d&ingestion_source=CONVERSIONS_API`
answers, per source platform, an overall status and per signal (email, MAID, IP, User-Agent, click
id, external id, event id, order id, value, product id, source URL) the coverage per event type,
the issues Pinterest found, and for event ids the overlap with the Pinterest Tag.

It is read with an access token that has `ads:read` (a conversion token only sends events), every
REFRESH_EVERY per integration in the background, and on demand no more than once per
ON_DEMAND_GAP: two reads (1 and 14 days) each time, far inside Pinterest's read budget. The
answer is cached in the store's meta (`eqs:<integration id>`), so every node and the admin UI
show the same one, and one node reads at a time (the store's exclusive lock).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Literal

import httpx
import msgspec

from delivery.config import Integration
from delivery.pinterest import oauth
from delivery.pinterest.tokens import RefreshRefused, TokenKeeper
from delivery.store import ConfigStore, StorageError

log = logging.getLogger("signal_edge.eqs")
LOOKBACKS = ("1d", "14d")
INGESTION_SOURCE = "CONVERSIONS_API"
REFRESH_EVERY = 4 * 3600.0  # seconds between background reads per integration
RETRY_AFTER_FAULT = 15 * 60.0  # after a timeout, a 429 or a 5xx
ON_DEMAND_GAP = 15.0  # a "read it now" within this of the last read answers the cached one
TICK = 60.0  # how often the background task looks for integrations that are due

# --- Pinterest's wire shapes (EventQualityScore in its OpenAPI description) ---------------------


class QualityIssue(msgspec.Struct):
    id: str
    name: str
    reason: str


class QualityDetails(msgspec.Struct, omit_defaults=True):
    coverage: float  # a percentage
    issues: list[QualityIssue] = []
    overlap: float | None = None  # a percentage; only for external_event_id: shared with the Pinterest Tag


ByEvent = dict[str, QualityDetails]  # event type (checkout, page_visit, ...) -> its details


class QualityComponents(msgspec.Struct, omit_defaults=True):
    advertiser_external_id: ByEvent = {}
    click_id_epik: ByEvent = {}
    external_event_id: ByEvent = {}
    hashed_email: ByEvent = {}
    hashed_maid: ByEvent = {}
    ip_address: ByEvent = {}
    order_id: ByEvent = {}
    order_value: ByEvent = {}
    product_id: ByEvent = {}
    source_url: ByEvent = {}
    user_agent: ByEvent = {}


SIGNALS: tuple[str, ...] = QualityComponents.__struct_fields__


class EventQualityScore(msgspec.Struct):
    overall_status: Literal["NEEDS_IMPROVEMENT", "FAIR", "GOOD"]
    quality_components: QualityComponents
    ingestion_source: str
    source_platform: str
    lookback_period: str


_scores_decoder = msgspec.json.Decoder(list[EventQualityScore])


class _Error(msgspec.Struct):
    code: int = 0
    message: str = ""


# --- what is cached ------------------------------------------------------------------------------


class Report(msgspec.Struct, omit_defaults=True):
    """The last answer for an integration, and the state of the last attempt."""

    ad_account_id: str
    checked_at: float  # the last attempt
    next_at: float  # when the background reads again
    scores: dict[str, list[EventQualityScore]] = {}  # by lookback period
    scores_at: float | None = None  # when `scores` were read (kept when a later attempt fails)
    problem: str | None = None  # a key of PROBLEMS
    pinterest_message: str | None = None


PROBLEMS = {
    "no_read_token": "Pinterest's Event Quality Score is read with an access token that has the ads:read scope; "
    "this integration has only a conversion token, which can only send events. Connect with Pinterest (or paste "
    "an access token with ads:read) to see it here. Meanwhile Ads Manager shows it under Conversions.",
    "needs_ads_read": "Pinterest would not show the Event Quality Score to this access token: it lacks the ads:read "
    "scope, or access to this ad account. Connect with Pinterest again (signal-edge asks for ads:read), or paste a "
    "token that has it. Events are still delivered; meanwhile Ads Manager shows the score under Conversions.",
    "unauthorized": "Pinterest did not accept the access token (expired or revoked): paste a new one, or connect "
    "with Pinterest so that signal-edge keeps it fresh.",
    "refresh_refused": "Pinterest no longer accepts this app's refresh token: connect with Pinterest again.",
    "unavailable": "Pinterest did not answer (a timeout, a rate limit or an error on its side); signal-edge tries "
    "again in 15 minutes.",
    "not_found": "Pinterest does not know this ad account: check the Ad Account ID.",
}


class Refused(Exception):
    """Not read: `problem` (a key of PROBLEMS), what happened (for the log), whether to try again
    soon, and Pinterest's own words when it answered."""

    def __init__(self, problem: str, detail: str, retry: bool = False, said: str | None = None) -> None:
        super().__init__(detail)
        self.problem, self.retry, self.said = problem, retry, said


def meta_key(integration_id: str) -> str:
    return f"eqs:{integration_id}"


def eqs_url(api_base: str, ad_account_id: str) -> str:
    return f"{api_base.rstrip('/')}/v5/ad_accounts/{ad_account_id}/conversion_eqs"


async def fetch(http: httpx.AsyncClient, api_base: str, ad_account_id: str, token: str,
                lookback: str) -> list[EventQualityScore]:
    """One read; raises Refused with the problem it shows."""
    try:
        response = await http.get(eqs_url(api_base, ad_account_id),
                                  params={"lookback_period": lookback, "ingestion_source": INGESTION_SOURCE},
                                  headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        raise Refused("unavailable", f"could not reach Pinterest: {type(exc).__name__}", retry=True) from None
    if response.status_code == 200:
        try:
            return _scores_decoder.decode(response.content)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise Refused("unavailable", f"Pinterest's answer was not an Event Quality Score: {exc}",
                          retry=True) from None
    try:
        message = msgspec.json.decode(response.content, type=_Error).message
    except (msgspec.DecodeError, msgspec.ValidationError):
        message = ""
    status = response.status_code
    problem = {401: "unauthorized", 403: "needs_ads_read", 404: "not_found"}.get(status, "unavailable")
    raise Refused(problem, f"HTTP {status}: {message}", problem == "unavailable", message or None)


class EqsReader:
    def __init__(self, store: ConfigStore, tokens: TokenKeeper, api_base: str,
                 refresh_every: float = REFRESH_EVERY, clock: Callable[[], float] = time.time) -> None:
        self.store, self.tokens, self.api_base = store, tokens, api_base
        self.refresh_every, self.clock = refresh_every, clock

    async def cached(self, integration_id: str) -> Report | None:
        raw = await self.store.get_meta(meta_key(integration_id))
        if raw is None:
            return None
        try:
            return msgspec.json.decode(raw, type=Report)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None  # written by another version: read again

    async def report(self, integration: Integration, refresh: bool = False) -> Report:
        """The cached report, read again when asked (at most once per ON_DEMAND_GAP), when there
        is none yet, or when the ad account changed."""
        cached = await self.cached(integration.id)
        if cached is not None and cached.ad_account_id == integration.config.ad_account_id and \
                not (refresh and self.clock() - cached.checked_at >= ON_DEMAND_GAP):
            return cached
        return await self.refresh(integration, ON_DEMAND_GAP if refresh else 0.0)

    async def refresh(self, integration: Integration, gap: float | None = None) -> Report:
        """Read both lookback periods now, unless another node read them less than `gap` ago
        (None: unless they are not due yet)."""
        async with self.store.exclusive(meta_key(integration.id)):
            cached = await self.cached(integration.id)
            now = self.clock()
            if cached is not None and cached.ad_account_id == integration.config.ad_account_id and (
                    now < cached.next_at if gap is None else now - cached.checked_at < gap):
                return cached
            report = await self._read(integration, cached, now)
            await self.store.set_meta(meta_key(integration.id), msgspec.json.encode(report).decode())
            return report

    async def _read(self, integration: Integration, cached: Report | None, now: float) -> Report:
        account = integration.config.ad_account_id
        kept = cached if cached is not None and cached.ad_account_id == account else None
        try:
            token = await self._token(integration)
            try:
                scores = await self._fetch_all(account, token)
            except Refused as exc:
                if exc.problem != "unauthorized" or not integration.oauth:
                    raise
                integration = await self._refreshed(integration, token)  # expired early: once more
                scores = await self._fetch_all(account, integration.config.access_token or "")
        except Refused as exc:
            log.info("integration %s: the Event Quality Score was not read (%s: %s)", integration.id, exc.problem, exc)
            return Report(account, now, now + (RETRY_AFTER_FAULT if exc.retry else self.refresh_every),
                          kept.scores if kept else {}, kept.scores_at if kept else None, exc.problem, exc.said)
        return Report(account, now, now + self.refresh_every, scores, now)

    async def _fetch_all(self, account: str, token: str) -> dict[str, list[EventQualityScore]]:
        return {lookback: await fetch(self.tokens.http, self.api_base, account, token, lookback)
                for lookback in LOOKBACKS}

    async def _token(self, integration: Integration) -> str:
        if integration.oauth:
            integration = await self._refreshed(integration)
        if not integration.config.access_token:
            raise Refused("no_read_token", "no access token")
        return integration.config.access_token

    async def _refreshed(self, integration: Integration, failed_token: str | None = None) -> Integration:
        """The integration with a fresh OAuth access token (refreshed when due, or when Pinterest
        refused `failed_token`)."""
        try:
            if failed_token is None:
                return await self.tokens.fresh(integration)
            return await self.tokens.refresh(integration.id, failed_token)
        except RefreshRefused as exc:
            raise Refused("refresh_refused", str(exc), said=str(exc)) from None
        except oauth.Unavailable as exc:
            raise Refused("unavailable", f"the access token could not be refreshed: {exc}", retry=True) from None

    async def run(self, tick: float = TICK) -> None:
        """Read every enabled integration's score when it is due, one at a time. The first look
        is a tick after the start: a restart reads nothing at once, and a new integration's score
        is read when its page is first shown (or at the next tick)."""
        while True:
            await asyncio.sleep(tick)
            for integration in self.store.integrations():
                if not integration.enabled:
                    continue
                try:
                    await self.refresh(integration)
                except StorageError as exc:
                    log.warning("the Event Quality Score could not be kept now (%s); trying again later", exc)
                except Exception:  # one integration's fault never stops the others' reads
                    log.exception("integration %s: reading the Event Quality Score failed", integration.id)
