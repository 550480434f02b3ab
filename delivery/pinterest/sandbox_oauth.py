"""The sandbox's OAuth: Pinterest's sign-in page, token endpoint and conversion tokens (sandbox.py)."""

from __future__ import annotations

import base64
import secrets
import threading
import time
from urllib.parse import parse_qs, urlencode

from delivery.pinterest.sandbox_state import Grant, SandboxState, Token

REFRESH_TOKEN_SECONDS = 60 * 24 * 3600  # a continuous refresh token lives 60 days


class OAuthEndpoints:
    state: SandboxState
    lock: threading.Lock

    def _live_token(self, token: str, now: float) -> Token | None:
        raise NotImplementedError  # the Sandbox's

    def _authorize(self, scope):
        """The sign-in page, approving at once: back to the app's redirect with a code."""
        query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        app_id, redirect = query.get("client_id", ""), query.get("redirect_uri", "")
        if query.get("response_type") != "code" or not redirect:
            return 400, "<!doctype html><title>OAuth</title><p>response_type=code and redirect_uri are required", []
        with self.lock:
            if app_id not in self.state.apps and not (self.state.accept_any_token or self.state.demo):
                return 400, "<!doctype html><title>OAuth</title><p>Unknown client_id.", []
            self.state.apps.setdefault(app_id, "")  # the demo: any app, its secret set at the first exchange
            code = "code_" + secrets.token_urlsafe(16)
            self.state.codes[code] = Grant(app_id, time.time() + 600, redirect)
        separator = "&" if "?" in redirect else "?"
        location = f"{redirect}{separator}{urlencode({'code': code, 'state': query.get('state', '')})}"
        return 302, "", [(b"location", location.encode())]

    def _app(self, scope) -> str | None:
        """The app that Basic authentication names, when its secret is right."""
        auth = _headers(scope).get("authorization", "")
        try:
            app_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":") if auth[:6].lower() == "basic " \
                else ("", "", "")
        except ValueError:
            return None
        known = self.state.apps.get(app_id)
        # The demo's app: its first secret is its secret.
        if known == "" and (self.state.accept_any_token or self.state.demo):
            self.state.apps[app_id] = known = secret
        return app_id if known is not None and secret and secrets.compare_digest(known, secret) else None

    def _token(self, scope, body: bytes):
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        now = time.time()
        with self.lock:
            app_id = self._app(scope)
            if app_id is None:
                return 401, {"code": 2, "message": "Authentication failed: wrong client_id or client secret."}, []
            grant_type = form.get("grant_type")
            if grant_type == "authorization_code":
                code = self.state.codes.pop(form.get("code", ""), None)
                if code is None or code.app_id != app_id or code.expires_at < now or \
                        code.redirect_uri != form.get("redirect_uri"):
                    return 400, {"code": 1, "message": "Invalid authorization code."}, []
            elif grant_type == "refresh_token":
                held = self.state.refresh_tokens.pop(form.get("refresh_token", ""), None)
                if held is None or held.app_id != app_id or held.expires_at < now:
                    self.state.refused_refreshes += 1
                    return 400, {"code": 1, "message": "Invalid refresh token."}, []
                self.state.refreshes += 1
            else:
                return 400, {"code": 1, "message": "grant_type must be authorization_code or refresh_token."}, []
            access = "pina_" + secrets.token_urlsafe(24)
            seconds = self.state.access_token_seconds
            self.state.tokens[access] = Token(frozenset({"ads:read", "ads:write"}), None, now + seconds)
            refresh = self._issue_refresh(app_id, now)
        return 200, {"access_token": access, "token_type": "bearer", "expires_in": seconds,
                     "scope": "ads:read,ads:write", "refresh_token": refresh,
                     "refresh_token_expires_in": REFRESH_TOKEN_SECONDS, "response_type": grant_type}, []

    def _issue_refresh(self, app_id: str, now: float) -> str:
        token = "pinr_" + secrets.token_urlsafe(24)
        self.state.refresh_tokens[token] = Grant(app_id, now + REFRESH_TOKEN_SECONDS)
        return token

    def _conversion_token(self, scope):
        auth = _headers(scope).get("authorization", "")
        with self.lock:
            info = self._live_token(auth[7:].strip() if auth.lower().startswith("bearer ") else "", time.time())
            if info is None or info.expires_at is None:  # an OAuth access token, and a live one
                return 401, {"code": 2, "message": "Authentication failed."}, []
            token = "ct_" + secrets.token_urlsafe(24)
            self.state.tokens[token] = Token(info.scopes)
        return 200, {"access_token": token, "token_type": "conversion"}, []


def _headers(scope) -> dict[str, str]:
    """An ASGI scope's headers by lower-case name (the last of repeated ones)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
