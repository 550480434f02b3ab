"""The admin's "Send test event": each credential of an integration tried on its own, and the
answer in plain words.

The app (id, secret and refresh token) is tried by a refresh, each token by a ?test=true event
(Pinterest validates it but records nothing). The integration's health follows what delivery
can do: healthy when one token works, since delivery falls back to it.
"""

from __future__ import annotations

import httpx
import msgspec

from delivery.clock import Clock
from delivery.config import Health, Integration
from delivery.pinterest import client, oauth
from delivery.pinterest.catalog import TROUBLESHOOTING
from delivery.pinterest.credentials import Credentials
from delivery.pinterest.payload import Event
from delivery.pinterest.policy import PAUSING
from delivery.pinterest.tokens import RefreshRefused
from delivery.store import ConfigStore

CREDENTIAL_LABELS = {"app": "the app credentials", "conversion_token": "the conversion token",
                     "access_token": "the API access token"}


class Check(msgspec.Struct):
    credential: str  # app | conversion_token | access_token
    ok: bool
    message: str


class TestOutcome(msgspec.Struct):
    ok: bool  # every credential works
    message: str
    checks: list[Check]


async def check(integration: Integration, sample: Event, credentials: Credentials, http: httpx.AsyncClient,
                store: ConfigStore, clock: Clock) -> tuple[TestOutcome, bool]:
    """Try every credential; record the integration's health. Returns the outcome, and whether
    a token works (delivery may resume)."""
    checks: list[Check] = []
    if integration.oauth:
        integration, app = await _check_app(integration, credentials)
        checks.append(app)
    cfg = integration.config
    body = client.encode([sample])
    answers: list[client.Answer] = []
    for name in ("conversion_token", "access_token"):
        if token := getattr(cfg, name):
            answer = await credentials.send_with(http, integration, token, body, 1, test=True)
            answers.append(answer)
            checks.append(_token_check(name, answer))
    if not checks:
        return TestOutcome(False, TROUBLESHOOTING["not_connected"], []), False
    delivering = any(a.kind == "ok" for a in answers)
    if delivering:
        await store.set_health(integration.id, Health("healthy", at=clock.time()))
    elif refused := next((a for a in answers if a.kind in PAUSING), None):
        await store.set_health(integration.id, Health("unhealthy", refused.kind, refused.message, clock.time()))
    return _outcome(cfg.ad_account_id, checks, delivering), delivering


async def _check_app(integration: Integration, credentials: Credentials) -> tuple[Integration, Check]:
    """The app's id and secret and the refresh token, tried by a refresh (kept, as any is)."""
    try:
        integration = await credentials.tokens.refresh(integration.id, force=True)
        return integration, Check("app", True, "Pinterest issued a fresh access token for the app id, app secret "
                                               "and refresh token")
    except RefreshRefused as exc:
        return integration, Check("app", False, f"Pinterest refused the refresh: {exc}; connect again")
    except oauth.Unavailable as exc:
        return integration, Check("app", False, f"Pinterest did not answer the token refresh: {exc}; try again "
                                                "shortly")


def _token_check(name: str, answer: client.Answer) -> Check:
    if answer.kind == "ok":
        result = answer.results[0] if answer.results else None
        if result and result.status == "failed":
            return Check(name, False, f"Pinterest answered but failed the test event: {result.error_message}")
        warning = f" (warning: {result.warning_message})" if result and result.warning_message else ""
        return Check(name, True, "Pinterest accepted the test event" + warning)
    if answer.kind == "invalid_ad_account":
        return Check(name, False, f"Pinterest does not know the ad account with this token: {answer.message}")
    status = f"{answer.status} " if answer.status else ""
    return Check(name, False, f"refused: {status}{answer.message}" if status else f"no answer: {answer.message}")


def _outcome(ad_account_id: str, checks: list[Check], delivering: bool) -> TestOutcome:
    failed = [CREDENTIAL_LABELS[c.credential] for c in checks if not c.ok]
    if not failed:
        worked = " and ".join(CREDENTIAL_LABELS[c.credential] for c in checks)
        return TestOutcome(True, f"Pinterest accepted the test event for ad account {ad_account_id} with {worked}. "
                                 "Test events are not recorded.", checks)
    failed_text = " and ".join(failed)
    message = f"{failed_text[0].upper()}{failed_text[1:]} failed."
    if delivering:
        message += " Delivery goes on with the credential that works; replace the failing one."
    return TestOutcome(False, message, checks)
