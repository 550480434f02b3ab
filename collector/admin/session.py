"""The UI's session: a signed, HttpOnly, SameSite=Strict cookie (itsdangerous), with a
per-session CSRF token that every state-changing request must echo in X-CSRF-Token."""

from __future__ import annotations

import hmac
import secrets

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

COOKIE = "se_session"
MAX_AGE = 12 * 3600


class Sessions:
    def __init__(self, secret_key: str) -> None:
        self.signer = URLSafeTimedSerializer(secret_key, salt="signal-edge admin session")

    def start(self, response: Response, token_digest: str, secure: bool) -> str:
        csrf = secrets.token_urlsafe(24)
        value = self.signer.dumps({"csrf": csrf, "tok": token_digest[:16]})
        response.set_cookie(COOKIE, value, max_age=MAX_AGE, httponly=True, samesite="strict", secure=secure, path="/")
        return csrf

    def end(self, response: Response) -> None:
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")

    def read(self, request: Request, token_digest: str | None = None) -> dict | None:
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            data = self.signer.loads(raw, max_age=MAX_AGE)
        except (SignatureExpired, BadSignature):
            return None
        if not isinstance(data, dict) or "csrf" not in data:
            return None
        if token_digest is not None and not hmac.compare_digest(str(data.get("tok", "")), token_digest[:16]):
            return None  # the admin token was rotated since this login
        return data

    @staticmethod
    def csrf_ok(request: Request, session: dict) -> bool:
        sent = request.headers.get("x-csrf-token", "")
        return bool(sent) and hmac.compare_digest(sent, session["csrf"])
