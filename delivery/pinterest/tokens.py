"""Access tokens that never silently expire: an integration with an app (id and secret) and a
refresh token gets its access tokens from Pinterest, and refreshes them itself.

- When: at 80% of an access token's life (Pinterest's last 30 days), and at once after a 401.
  Idle integrations are refreshed too (the supervisor asks every minute), so a refresh token
  (60 days, renewed by each refresh) never runs out for want of traffic.
- One node at a time: the refresh holds the store's exclusive lock for the integration
  (`credentials_lock`) and reads the stored tokens again under it; a node that waited finds
  them fresh and uses them. With rotating refresh tokens a second refresh with the same token
  would be refused, and so would a rotated token written back: every other write of an
  integration's credentials (an admin's PATCH, a connection, a minted conversion token) takes
  the same lock, and every write applies its change to the row as stored
  (ConfigStore.update_integration), never to a copy read before the refresh.
- Durable first: the rotated refresh token and the new access token are written (sealed)
  before the access token is used; a crash right after the refresh loses nothing.
- Refused: when Pinterest no longer accepts the refresh token, the integration is marked
  unhealthy with what to do, its events are kept, and delivery resumes when it is connected
  again (its credentials change).
"""

from __future__ import annotations

import logging
from collections import Counter

import httpx
import msgspec

from delivery.clock import SYSTEM, Clock
from delivery.config import Health, Integration
from delivery.pinterest import oauth
from delivery.store import ConfigStore

log = logging.getLogger("signal_edge.tokens")
REFRESH_AT = 0.8  # of an access token's life
REFUSED = "refresh_refused"


class RefreshRefused(Exception):
    """Pinterest no longer accepts the integration's refresh token: connect again."""


def credentials_lock(integration_id: str) -> str:
    """The store's exclusive lock held by whatever writes the integration's credentials."""
    return f"refresh:{integration_id}"


def due(integration: Integration, now: float) -> bool:
    cfg = integration.config
    if not integration.oauth:
        return False
    if not cfg.access_token or cfg.access_token_expires_at is None:
        return True
    issued = cfg.token_refreshed_at or cfg.access_token_expires_at
    return now >= issued + REFRESH_AT * (cfg.access_token_expires_at - issued)


class TokenKeeper:
    def __init__(self, store: ConfigStore, api_base: str, http: httpx.AsyncClient, clock: Clock = SYSTEM) -> None:
        self.store = store
        self.clock = clock
        self.api_base = api_base
        self.http = http
        self.counts: Counter[str] = Counter()  # refreshes, refresh_failures (per integration: /metrics)

    async def fresh(self, integration: Integration) -> Integration:
        """`integration` with an access token that is not due for a refresh."""
        if not due(integration, self.clock.time()):
            return integration
        return await self.refresh(integration.id)

    async def refresh(self, integration_id: str, failed_token: str | None = None, force: bool = False) -> Integration:
        """Refresh when due, or when `failed_token` (the access token a 401 refused) is still the
        stored one, or when `force`d (a test of the app's credentials). Raises RefreshRefused,
        or oauth.Unavailable (try later)."""
        async with self.store.exclusive(credentials_lock(integration_id)):
            current = await self.store.reload_integration(integration_id)
            if current is None or not current.oauth:
                raise RefreshRefused("this integration has no app and refresh token to refresh with")
            stale = force or (failed_token is not None and current.config.access_token == failed_token)
            if not stale and not due(current, self.clock.time()):
                return current  # another node (or an earlier call) has just refreshed it
            cfg = current.config
            assert cfg.app_id and cfg.app_secret and cfg.refresh_token  # current.oauth
            try:
                answer = await oauth.refresh(self.http, self.api_base, cfg.app_id, cfg.app_secret,
                                             cfg.refresh_token)
            except oauth.Refused as exc:
                self.counts[f"{integration_id}:refresh_failures"] += 1
                await self.store.set_health(integration_id, Health("unhealthy", REFUSED, str(exc), self.clock.time()))
                await self.store.audit("refresh-refused", "integration", integration_id, None, {"pinterest": str(exc)})
                log.warning("integration %s: Pinterest refused the refresh token (%s); connect again",
                            integration_id, exc)
                raise RefreshRefused(str(exc)) from None
            except oauth.Unavailable:
                self.counts[f"{integration_id}:refresh_failures"] += 1
                raise
            now = self.clock.time()
            updated = await self.store.update_integration(  # durable before it is used (audited, sealed)
                integration_id, lambda stored: with_tokens(stored, answer, now), "refresh")
            if updated is None:
                raise RefreshRefused("the integration was deleted meanwhile")
            self.counts[f"{integration_id}:refreshes"] += 1
            log.info("integration %s: access token refreshed; it expires in %ds", integration_id, answer.expires_in)
            return updated


def with_tokens(integration: Integration, answer: oauth.TokenAnswer, now: float) -> Integration:
    """The integration holding what Pinterest issued (a refresh token only replaces the old one
    when a new one came)."""
    cfg = integration.config
    config = msgspec.structs.replace(
        cfg, access_token=answer.access_token, access_token_expires_at=now + answer.expires_in,
        refresh_token=answer.refresh_token or cfg.refresh_token,
        refresh_token_expires_at=now + answer.refresh_token_expires_in if answer.refresh_token_expires_in
        else cfg.refresh_token_expires_at,
        token_refreshed_at=now)
    health = integration.health
    if health.problem == REFUSED:
        health = Health("pending", at=now)
    return msgspec.structs.replace(integration, config=config, health=health, updated_at=now)
