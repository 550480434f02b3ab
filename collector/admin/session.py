"""The UI's session: a signed, HttpOnly, SameSite=Strict cookie (itsdangerous) naming a session
kept in the config store, with a per-session CSRF token that every state-changing request must
echo in X-CSRF-Token. Kept server-side, so a logout (on any node) or a rotation of the admin
token ends the session everywhere within a second, even where its cookie was copied."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from delivery.store import AdminSession

COOKIE = "se_session"
MAX_AGE = 12 * 3600
RECHECK = 0.5  # seconds a server trusts what it last read of a session
_CACHED = 1024


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class Sessions:
    def __init__(self, store, secret_key: str) -> None:
        self.store = store
        self.signer = URLSafeTimedSerializer(secret_key, salt="signal-edge admin session")
        self._cache: OrderedDict[str, tuple[float, AdminSession | None]] = OrderedDict()

    async def start(self, response: Response, secure: bool, client: str | None) -> AdminSession:
        session_id = secrets.token_urlsafe(32)
        now = time.time()
        session = AdminSession(_key(session_id), secrets.token_urlsafe(24), now, now + MAX_AGE, client)
        await self.store.put_session(session)
        response.set_cookie(COOKIE, self.signer.dumps(session_id), max_age=MAX_AGE, httponly=True,
                            samesite="strict", secure=secure, path="/")
        return session

    async def end(self, request: Request, response: Response) -> AdminSession | None:
        session = await self.read(request)
        if session is not None:
            await self.store.delete_sessions(session.key)
            self._cache.pop(session.key, None)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return session

    async def read(self, request: Request) -> AdminSession | None:
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            session_id = self.signer.loads(raw, max_age=MAX_AGE)
        except (SignatureExpired, BadSignature):
            return None
        if not isinstance(session_id, str):
            return None
        key = _key(session_id)
        cached = self._cache.get(key)
        if cached is None or time.monotonic() - cached[0] >= RECHECK:
            cached = (time.monotonic(), await self.store.get_session(key))
            self._cache[key] = cached
            self._cache.move_to_end(key)
            if len(self._cache) > _CACHED:
                self._cache.popitem(last=False)
        session = cached[1]
        return session if session is not None and session.expires_at > time.time() else None

    @staticmethod
    def csrf_ok(request: Request, session: AdminSession) -> bool:
        sent = request.headers.get("x-csrf-token", "")
        return bool(sent) and hmac.compare_digest(sent, session.csrf)
