"""Connect with Pinterest: the authorization-code flow, run by the admin app.

start: the admin (logged in to the UI) is sent to Pinterest's sign-in page with a `state`
    that is random, single-use, short-lived and bound to their UI session, kept in the
    database (the callback may reach another node);
callback: Pinterest sends the browser back with a code and that state; a state that does
    not match the session is refused (CSRF), the code is exchanged for an access token and a
    refresh token, both stored sealed, and the browser goes back to the integration's page,
    which offers to mint a conversion token.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from collector.admin.session import Sessions
from collector.services import Services
from delivery.pinterest import oauth
from delivery.pinterest.tokens import with_tokens

CALLBACK = "/oauth/pinterest/callback"
STATE_SECONDS = 600


def redirect_uri(services: Services, request: Request) -> str:
    """The address to register in the Pinterest app: SIGNAL_ADMIN_PUBLIC_URL, else how this
    browser reached the admin app."""
    base = services.settings.admin_public_url or f"{request.url.scheme}://{request.url.netloc}"
    return base.rstrip("/") + CALLBACK


def _state_key(state: str) -> str:
    return "oauth_state:" + hashlib.sha256(state.encode()).hexdigest()


class Connect:
    def __init__(self, services: Services, sessions: Sessions) -> None:
        self.s = services
        self.sessions = sessions

    async def start(self, request: Request) -> Response:
        session = await self.sessions.read(request)
        integration_id = request.query_params.get("integration_id", "")
        if session is None:
            return RedirectResponse("/login?next=" + quote(f"/oauth/pinterest/start?integration_id={integration_id}"), 303)
        integration = self.s.store.integration(integration_id)
        if integration is None:
            return self._back(None, "error", "no such integration")
        cfg = integration.config
        if not (cfg.app_id and cfg.app_secret):
            return self._back(integration_id, "error", "give the Pinterest app's id and secret first, then connect")
        state = secrets.token_urlsafe(32)
        uri = redirect_uri(self.s, request)
        await self.s.store.set_meta(_state_key(state), json.dumps({
            "integration_id": integration_id, "session": session.key, "redirect_uri": uri,
            "expires_at": time.time() + STATE_SECONDS}))
        return RedirectResponse(oauth.authorize_url(self.s.settings.pinterest_oauth_url, cfg.app_id, uri, state), 303)

    async def callback(self, request: Request) -> Response:
        q = request.query_params
        state, code = q.get("state", ""), q.get("code", "")
        session = await self.sessions.read(request)
        pending = await self.s.store.get_meta(_state_key(state)) if state else None
        if pending is not None:
            await self.s.store.delete_meta(_state_key(state))  # single use, whatever comes next
        started = json.loads(pending) if pending else None
        if started is None or started["expires_at"] < time.time() or session is None \
                or not secrets.compare_digest(started["session"], session.key):
            return self._back(started["integration_id"] if started else None, "error",
                              "this sign-in was not started here, or is too old: connect again")
        integration_id = started["integration_id"]
        if q.get("error") or not code:
            return self._back(integration_id, "error", f"Pinterest did not connect: {q.get('error', 'no code')}")
        integration = self.s.store.integration(integration_id)
        if integration is None:
            return self._back(None, "error", "the integration was deleted meanwhile")
        cfg = integration.config
        try:
            answer = await oauth.exchange_code(self.s.delivery.tokens.http, self.s.settings.pinterest_api_base,
                                               cfg.app_id, cfg.app_secret, code, started["redirect_uri"])
        except (oauth.Refused, oauth.Unavailable) as exc:
            return self._back(integration_id, "error", f"Pinterest did not give a token: {exc}")
        await self.s.store.put_integration(with_tokens(integration, answer, time.time()), "connect")
        return self._back(integration_id, "connected", "connected")

    @staticmethod
    def _back(integration_id: str | None, kind: str, message: str) -> Response:
        where = f"/integrations/{integration_id}" if integration_id else "/integrations"
        return RedirectResponse(f"{where}?{kind}={quote(message)}", 303)
