"""Connect with Pinterest: the authorization-code flow, run by the admin app.

start: the admin (logged in to the UI) is sent to Pinterest's sign-in page with a `state`
    that is random, single-use and short-lived, kept in the database (the callback may reach
    another node) with the session that started it and the hash of a binding cookie set in
    this browser (`se_oauth`);
callback: Pinterest sends the browser back with a code and that state. Pinterest's page is
    another site, so the UI's SameSite=Strict session cookie does not come along; the binding
    cookie does (SameSite=Lax: sent on a top-level GET from another site). A state without
    this browser's binding cookie, or whose session has ended, is refused (CSRF, a link made
    for another browser). The code is exchanged for an access token and a refresh token, both
    stored sealed, and a page of this site forwards the browser to the integration's page:
    that second navigation is same-site, so the session cookie is sent again. What happened
    is told there by a notice kept for the session (flash.py), never by text in the address.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from collector.admin import flash
from collector.admin.peers import Peers
from collector.admin.session import Sessions
from collector.admin.templating import render
from collector.services import Services
from delivery.pinterest import oauth
from delivery.pinterest.tokens import credentials_lock, with_tokens

CALLBACK = "/oauth/pinterest/callback"
STATE_SECONDS = 600
BINDING_COOKIE = "se_oauth"
NOT_STARTED_HERE = ("This sign-in was not started here (in this browser, by a logged-in admin), or is too old: "
                    "go back to the integration and connect again.")
NO_APP = "Give the Pinterest app's id and secret first, then connect."
DENIED = "You did not allow signal-edge at Pinterest: connect again and allow access to connect."
NO_CODE = ("Pinterest sent the browser back without a code: connect again; if it keeps failing, check that the "
           "redirect URI registered in the Pinterest app is the one this page shows.")


def redirect_uri(services: Services, request: Request, https: bool) -> str:
    """The address to register in the Pinterest app: SIGNAL_ADMIN_PUBLIC_URL, else how this
    browser reached the admin app (https when a trusted proxy says so)."""
    base = services.settings.admin_public_url or f"{'https' if https else 'http'}://{request.url.netloc}"
    return base.rstrip("/") + CALLBACK


def _state_key(state: str) -> str:
    return "oauth_state:" + hashlib.sha256(state.encode()).hexdigest()


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class Connect:
    def __init__(self, services: Services, sessions: Sessions, peers: Peers) -> None:
        self.s = services
        self.sessions = sessions
        self.peers = peers

    async def start(self, request: Request) -> Response:
        session = await self.sessions.read(request)
        integration_id = request.query_params.get("integration_id", "")
        if session is None:
            back = f"/oauth/pinterest/start?integration_id={integration_id}"
            return RedirectResponse("/login?next=" + quote(back), 303)
        integration = self.s.store.integration(integration_id)
        if integration is None:
            return await self._back(
                request, session.key, None, "error",
                "There is no such integration (it may have been deleted): choose one from the list.")
        cfg = integration.config
        if not (cfg.app_id and cfg.app_secret):
            return await self._back(request, session.key, integration_id, "error", NO_APP)
        state = secrets.token_urlsafe(32)
        binding = request.cookies.get(BINDING_COOKIE, "")
        if not (40 <= len(binding) <= 64):  # one per browser, shared by connections started in other tabs
            binding = secrets.token_urlsafe(32)
        https = self.peers.https(request)
        uri = redirect_uri(self.s, request, https)
        await self.s.store.set_meta(_state_key(state), json.dumps({
            "integration_id": integration_id, "session": session.key, "binding": _digest(binding),
            "redirect_uri": uri, "expires_at": time.time() + STATE_SECONDS}))
        response = RedirectResponse(oauth.authorize_url(self.s.settings.pinterest_oauth_url, cfg.app_id, uri, state),
                                    303)
        response.set_cookie(BINDING_COOKIE, binding, max_age=STATE_SECONDS, path=CALLBACK, httponly=True,
                            samesite="lax", secure=https)
        return response

    async def callback(self, request: Request) -> Response:
        q = request.query_params
        state, code = q.get("state", ""), q.get("code", "")
        pending = await self.s.store.get_meta(_state_key(state)) if state else None
        if pending is not None:
            await self.s.store.delete_meta(_state_key(state))  # single use, whatever comes next
        started = json.loads(pending) if pending else None
        binding = request.cookies.get(BINDING_COOKIE, "")
        if started is None or started["expires_at"] < time.time() or not binding \
                or not secrets.compare_digest(started["binding"], _digest(binding)) \
                or await self.s.store.get_session(started["session"]) is None:
            return render(request, "message.html", "Connect with Pinterest", None, status=400, error=NOT_STARTED_HERE,
                          links=(("/integrations", "Go to the integrations"),))
        session_key, integration_id = started["session"], started["integration_id"]
        if q.get("error") or not code:
            return await self._back(request, session_key, integration_id, "error",
                                    DENIED if q.get("error") == "access_denied" else NO_CODE, forward=True)
        integration = self.s.store.integration(integration_id)
        if integration is None:
            return await self._back(request, session_key, None, "error", "The integration was deleted meanwhile.",
                                    forward=True)
        cfg = integration.config
        if not (cfg.app_id and cfg.app_secret):  # removed since the connection started
            return await self._back(request, session_key, integration_id, "error", NO_APP, forward=True)
        try:
            answer = await oauth.exchange_code(self.s.delivery.tokens.http, self.s.settings.pinterest_api_base,
                                               cfg.app_id, cfg.app_secret, code, started["redirect_uri"])
        except (oauth.Refused, oauth.Unavailable) as exc:  # Pinterest's own words, from its API, not the address
            return await self._back(request, session_key, integration_id, "error",
                                    f"Pinterest did not give a token: {exc}", forward=True)
        now = time.time()
        async with self.s.store.exclusive(credentials_lock(integration_id)):
            connected = await self.s.store.update_integration(
                integration_id, lambda current: with_tokens(current, answer, now), "connect")
        if connected is None:
            return await self._back(request, session_key, None, "error", "The integration was deleted meanwhile.",
                                    forward=True)
        return await self._back(request, session_key, integration_id, "ok",
                                "Connected: signal-edge now gets its access tokens itself.", forward=True)

    async def _back(self, request: Request, session_key: str, integration_id: str | None, kind: str, message: str,
                    forward: bool = False) -> Response:
        """To the integration's page (or the list), which tells `message` once. `forward`: from
        the callback, whose request came from Pinterest's site: a redirect would still be that
        cross-site navigation (without the session cookie), so a page of ours moves on instead."""
        await flash.leave(self.s.store, session_key, kind, message)
        where = f"/integrations/{quote(integration_id)}" if integration_id else "/integrations"
        if not forward:
            return RedirectResponse(where, 303)
        return render(request, "message.html", "Connect with Pinterest", None, forward=where,
                      links=((where, "Continue to the integration"),))
