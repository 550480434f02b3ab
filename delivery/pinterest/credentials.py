"""Which credential a request to Pinterest goes with, and OAuth access tokens kept fresh for it.

- A request goes with the conversion token when there is one, else the access token; after a
  401 it is tried once with the other one (delivery goes on with whichever works).
- An integration with an app and a refresh token (delivery/pinterest/tokens.py) has its access
  token refreshed before a batch when it is due, once at once after a 401 (a token revoked
  before its time), and while it sends nothing (`refresh_idle`: a refresh token lives 60 days).
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import httpx

from delivery.clock import SYSTEM, Clock
from delivery.config import Integration
from delivery.pinterest import client, oauth
from delivery.pinterest.tokens import REFUSED, RefreshRefused, TokenKeeper, due
from delivery.store import StorageError

log = logging.getLogger("signal_edge.delivery")


class NotReady(NamedTuple):
    """No credential to send with now. `problem` (catalog.TROUBLESHOOTING): none until the
    credentials change; None: Pinterest's token endpoint is away, soon again."""

    problem: str | None
    message: str


class Credentials:
    def __init__(self, tokens: TokenKeeper, api_base: str, request_timeout: float, clock: Clock = SYSTEM) -> None:
        self.tokens = tokens
        self.api_base = api_base
        self.request_timeout = request_timeout
        self.clock = clock

    async def send(self, http: httpx.AsyncClient, integration: Integration, body: bytes, count: int,
                   test: bool = False) -> client.Answer:
        """Conversion token first when present, else the access token; on a 401 the other once."""
        cfg = integration.config
        answer = client.Answer("unauthorized", None, "no token to send with")
        for token in (t for t in (cfg.conversion_token, cfg.access_token) if t):
            answer = await self.send_with(http, integration, token, body, count, test)
            if answer.kind != "unauthorized":
                break
        return answer

    async def send_with(self, http: httpx.AsyncClient, integration: Integration, token: str, body: bytes, count: int,
                        test: bool = False) -> client.Answer:
        cfg = integration.config
        return await client.send(http, self.api_base, cfg.ad_account_id, token, body, count, test or cfg.test_mode,
                                 self.request_timeout)

    async def send_refreshing(self, http: httpx.AsyncClient, integration: Integration, body: bytes,
                              count: int) -> tuple[client.Answer, Integration, bool]:
        """`send`, and when the access token is refused before its time, refresh it and send
        once more. Returns the answer, the integration as it now is, and whether it refreshed."""
        answer = await self.send(http, integration, body, count)
        if answer.kind != "unauthorized" or not integration.oauth:
            return answer, integration, False
        try:
            integration = await self.tokens.refresh(integration.id, integration.config.access_token)
        except (RefreshRefused, oauth.Unavailable) as exc:
            log.warning("integration %s: refreshing after a 401 failed: %s", integration.id, exc)
            return answer, integration, True
        return await self.send(http, integration, body, count), integration, True

    async def ready(self, integration: Integration) -> Integration | NotReady:
        """The integration with an access token that is not about to expire (refreshed here
        when it is), or why there is nothing to send with."""
        cfg = integration.config
        if not (cfg.access_token or cfg.conversion_token or integration.oauth):
            return NotReady("not_connected", "no access token, conversion token or connection yet")
        try:
            return await self.tokens.fresh(integration)
        except RefreshRefused as exc:
            return NotReady(REFUSED, str(exc))
        except oauth.Unavailable as exc:
            return NotReady(None, f"the access token could not be refreshed: {exc}")

    async def refresh_idle(self, integrations: list[Integration]) -> None:
        """Refresh the tokens that are due of integrations that send nothing meanwhile."""
        now = self.clock.time()
        for integration in integrations:
            if integration.enabled and due(integration, now) and integration.health.problem != REFUSED:
                try:
                    await self.tokens.refresh(integration.id)
                except (RefreshRefused, oauth.Unavailable, StorageError) as exc:
                    log.warning("integration %s: the idle refresh did not happen: %s", integration.id, exc)


def credentials_of(integration: Integration) -> tuple:
    """What delivery sends with: when it changes, what waited for better credentials goes."""
    cfg = integration.config
    return cfg.ad_account_id, cfg.access_token, cfg.conversion_token, cfg.app_id, cfg.app_secret, cfg.refresh_token
