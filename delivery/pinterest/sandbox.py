"""A local stand-in for Pinterest's Conversions API, used by `signal-edge demo` and the tests.

It is a plain ASGI application (delivery/ imports no web framework) that behaves like
`POST /v5/ad_accounts/{ad_account_id}/events`:
- checks the bearer token (401 code 2, 403 code 29) and the ad account id;
- validates every body against Pinterest's published schema (`schema/`), plus the
  event_name and action_source values the spec lists in prose, and answers 400 naming
  the failing path;
- answers 200 with per-event results, or 422 (DetailedError whose details carry the
  per-event results) when some events failed;
- fails events older than 7 days, as Pinterest does;
- plays scripted faults (status codes, Retry-After, delays, poisoned event ids, a
  requests-per-second limit) and records every request and event with timestamps;
- serves `GET /v5/ad_accounts/{ad_account_id}/conversion_eqs`, the Event Quality Score of
  what it received (sandbox_eqs.py), to tokens with ads:read.

Control endpoints under `/_sandbox/` let another process script and inspect it.
"""

from __future__ import annotations

import asyncio
import base64
import html
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

from delivery.pinterest.sandbox_eqs import (
    INGESTION_SOURCES,
    LOOKBACK_SECONDS,
    SOURCE_PLATFORMS,
    conversion_eqs,
)
from delivery.pinterest.schema_check import (
    fast_validator,
    schema_validator,
    validation_errors,
)

_EVENTS_PATH = re.compile(r"^/v5/ad_accounts/([^/]+)/events/?$")
_EQS_PATH = re.compile(r"^/v5/ad_accounts/([^/]+)/conversion_eqs/?$")
MAX_AGE_SECONDS = 7 * 24 * 3600
WELL_FORMED_TOKEN = re.compile(r"(?:pina|ct)_\S{3,}")
REFRESH_TOKEN_SECONDS = 60 * 24 * 3600  # a continuous refresh token lives 60 days
RATE_LIMIT_MESSAGE = (
    "This request exceeded a rate limit. This can happen if the client exceeds one\n"
    "of the published rate limits within a short time window."
)



@dataclass
class Token:
    scopes: frozenset[str] = frozenset({"ads:write"})
    ad_accounts: frozenset[str] | None = None  # None: every ad account
    expires_at: float | None = None  # an OAuth access token runs out; a pasted or conversion token does not


@dataclass
class Grant:
    """An authorization code or a refresh token: whose app, and (a code) which redirect."""

    app_id: str
    expires_at: float
    redirect_uri: str | None = None


@dataclass
class Fault:
    """One scripted answer, used for the next `count` requests (0: until cleared)."""

    status: int
    count: int = 1
    retry_after: float | None = None
    delay: float = 0.0  # seconds before the answer starts (longer than a client waits: a hang)
    trickle: float = 0.0  # seconds between each byte of the answer's body (a server that trickles)
    body: dict[str, Any] | None = None
    ad_account_id: str | None = None  # only requests for this ad account (None: any)


@dataclass
class Trickled:
    """An answer to send a byte at a time, `every` seconds apart."""

    payload: dict[str, Any]
    every: float


# What the sandbox answers: JSON (an object or a list), its HTML page, or JSON sent slowly.
Answer = dict[str, Any] | list[Any] | str | Trickled


@dataclass
class Recorded:
    at: float
    ad_account_id: str
    test: bool
    token: str
    event: dict[str, Any]


@dataclass
class RequestLog:
    at: float  # when the request arrived
    ad_account_id: str
    status: int
    events: int
    test: bool
    ended: float = 0.0  # when it was answered
    event_ids: list[str] = field(default_factory=list)


@dataclass
class SandboxState:
    tokens: dict[str, Token] = field(default_factory=dict)
    accept_any_token: bool = False  # the benchmarks: any token at all
    demo: bool = False  # the demo: any well-formed pina_/ct_ token (the seed's own examples), any app
    apps: dict[str, str] = field(default_factory=dict)  # OAuth apps: id -> secret
    codes: dict[str, Grant] = field(default_factory=dict)
    refresh_tokens: dict[str, Grant] = field(default_factory=dict)  # each valid once: refreshing rotates it
    access_token_seconds: int = 30 * 24 * 3600  # Pinterest's: 30 days
    refreshes: int = 0
    refused_refreshes: int = 0
    faults: list[Fault] = field(default_factory=list)
    poison_event_ids: set[str] = field(default_factory=set)  # whole request -> 400
    failing_event_ids: dict[str, str] = field(default_factory=dict)  # event -> error_message
    partial_status: int = 422  # 200 or 422 when some events failed
    rate_limit_per_second: int | None = None
    received: list[Recorded] = field(default_factory=list)
    requests: list[RequestLog] = field(default_factory=list)
    tag_event_ids: dict[str, set[str]] = field(default_factory=dict)  # ad account -> ids a Pinterest Tag sent
    eqs_reads: int = 0  # GET conversion_eqs answered (any status)


class Sandbox:
    """The ASGI app. Thread-safe enough for tests that inspect it from another thread."""

    def __init__(self, tokens: dict[str, Token] | None = None, accept_any_token: bool = False,
                 demo: bool = False) -> None:
        self.state = SandboxState(tokens=dict(tokens or {}), accept_any_token=accept_any_token, demo=demo)
        self.validator = schema_validator()
        self.fast = fast_validator()
        self.lock = threading.Lock()
        self._window: list[float] = []

    # --- test-side API ----------------------------------------------------------------

    def add_token(self, token: str, scopes=("ads:write",), ad_accounts=None) -> None:
        with self.lock:
            self.state.tokens[token] = Token(frozenset(scopes), frozenset(ad_accounts) if ad_accounts else None)

    def add_app(self, app_id: str, app_secret: str) -> None:
        with self.lock:
            self.state.apps[app_id] = app_secret

    def grant(self, app_id: str) -> str:
        """A refresh token for `app_id`, as if someone had connected (tests hand it out)."""
        with self.lock:
            return self._issue_refresh(app_id, time.time())

    def add_tag_events(self, ad_account_id: str, event_ids) -> None:
        """Event ids a Pinterest Tag on the site sent too: the EQS reports their overlap."""
        with self.lock:
            self.state.tag_event_ids.setdefault(ad_account_id, set()).update(event_ids)

    def remove_token(self, token: str) -> None:
        with self.lock:
            self.state.tokens.pop(token, None)

    def add_fault(self, fault: Fault) -> None:
        with self.lock:
            self.state.faults.append(fault)

    def clear_faults(self) -> None:
        with self.lock:
            self.state.faults.clear()

    def events(self, include_test: bool = True) -> list[dict[str, Any]]:
        with self.lock:
            return [r.event for r in self.state.received if include_test or not r.test]

    def recorded(self) -> list[Recorded]:
        with self.lock:
            return list(self.state.received)

    def request_log(self) -> list[RequestLog]:
        with self.lock:
            return list(self.state.requests)

    def reset(self) -> None:
        with self.lock:
            self.state.received.clear()
            self.state.requests.clear()
            self.state.faults.clear()
            self.state.poison_event_ids.clear()
            self.state.failing_event_ids.clear()
            self.state.rate_limit_per_second = None
            self.state.tag_event_ids.clear()

    # --- ASGI -------------------------------------------------------------------------

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status, payload, headers = await self.handle(scope, body)
        trickle = 0.0
        if isinstance(payload, Trickled):
            trickle, payload = payload.every, payload.payload
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        content_type = b"text/html; charset=utf-8" if isinstance(payload, str) else b"application/json"
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(data)).encode()), *headers],
        })
        if trickle:
            gone = asyncio.ensure_future(receive())  # the request is read: next comes the disconnect
            for i in range(len(data) - 1):
                await send({"type": "http.response.body", "body": data[i:i + 1], "more_body": True})
                await asyncio.wait((gone,), timeout=trickle)
                if gone.done():  # the client gave up: so does this answer
                    return
            gone.cancel()
            data = data[-1:]
        await send({"type": "http.response.body", "body": data})

    async def handle(self, scope, body: bytes) -> tuple[int, Answer, list[tuple[bytes, bytes]]]:
        path, method = scope["path"], scope["method"]
        if path == "/healthz":
            return 200, {"ok": True}, []
        if path == "/oauth/" and method == "GET":
            return self._authorize(scope)
        if path == "/v5/oauth/token" and method == "POST":
            return self._token(scope, body)
        if path == "/v5/oauth/conversion_token" and method == "POST":
            return self._conversion_token(scope)
        if path.startswith("/_sandbox/"):
            return self._control(path, method, body)
        if path == "/" and method == "GET":
            return 200, self._html(), []
        eqs = _EQS_PATH.match(path)
        if eqs and method == "GET":
            return self._conversion_eqs(scope, eqs.group(1))
        match = _EVENTS_PATH.match(path)
        if not match:
            return 404, {"code": 404, "message": "Not found."}, []
        if method != "POST":
            return 405, {"code": 405, "message": "Method not allowed."}, []
        return await self._events(scope, match.group(1), body)

    async def _events(self, scope, ad_account_id: str, body: bytes):
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        test = "test=true" in scope.get("query_string", b"").decode("latin-1").lower()
        now = time.time()

        def answer(status: int, payload: dict, n: int = 0, extra=(), ids=()):
            with self.lock:
                self.state.requests.append(RequestLog(now, ad_account_id, status, n, test, time.time(), list(ids)))
            return status, payload, list(extra)

        fault = self._next_fault(ad_account_id)
        if fault and fault.delay:
            await asyncio.sleep(fault.delay)
        if self._over_rate(now):
            return answer(429, {"code": 8, "message": RATE_LIMIT_MESSAGE}, extra=[(b"retry-after", b"1")])
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        info = self._live_token(token, now)
        if info is None:
            return answer(401, {"code": 2, "message": "Authentication failed."})
        if not re.fullmatch(r"\d{1,18}", ad_account_id):
            message = f"Invalid ad_account_id: '{ad_account_id[:40]}' must be digits (at most 18)."
            return answer(400, {"code": 1, "message": message})
        if "ads:write" not in info.scopes or (info.ad_accounts is not None and ad_account_id not in info.ad_accounts):
            return answer(403, {"code": 29, "message": "You are not permitted to access that resource."})
        if fault and fault.status != 200:
            extra = [(b"retry-after", f"{fault.retry_after:g}".encode())] if fault.retry_after is not None else []
            scripted = fault.body or {"code": fault.status, "message": f"Scripted {fault.status}."}
            return answer(fault.status, scripted, extra=extra)
        if not headers.get("content-type", "").startswith("application/json"):
            return answer(415, {"code": 1, "message": "Content-Type must be application/json."})
        try:
            payload = json.loads(body)
        except ValueError:
            return answer(400, {"code": 1, "message": "Invalid request body: not JSON."})
        errors = validation_errors(self.validator, payload, self.fast)
        if errors:
            return answer(400, {"code": 1, "message": "Invalid request body: " + "; ".join(errors[:5])})
        events = payload["data"]
        if any(e.get("event_id") in self.state.poison_event_ids for e in events):
            return answer(400, {"code": 4196, "message": "The request was invalid."}, len(events))
        status, payload, extra = answer(*self._accept(ad_account_id, test, token, events, now),
                                        ids=[e["event_id"] for e in events])
        return status, Trickled(payload, fault.trickle) if fault and fault.trickle else payload, extra

    def _accept(self, ad_account_id, test, token, events, now) -> tuple[int, dict[str, Any], int]:
        results, processed = [], 0
        with self.lock:
            for event in events:
                error = self.state.failing_event_ids.get(event.get("event_id", ""))
                if error is None and event["event_time"] < now - MAX_AGE_SECONDS:
                    error = "event_time is more than 7 days in the past."
                if error is None and event["event_time"] > now + 3600:
                    error = "event_time is in the future."
                if error:
                    results.append({"status": "failed", "error_message": error, "warning_message": None})
                    continue
                processed += 1
                self.state.received.append(Recorded(now, ad_account_id, test, token, event))
                results.append({"status": "processed", "error_message": None, "warning_message": _warning(event)})
        body = {"num_events_received": len(events), "num_events_processed": processed, "events": results}
        if processed == len(events) or self.state.partial_status == 200:
            return 200, body, len(events)
        partial = {"code": 4197, "message": "Not all events were successfully processed.", "details": body}
        return 422, partial, len(events)

    def _conversion_eqs(self, scope, ad_account_id: str):
        """GET conversion_eqs: the Event Quality Score of what this sandbox received (sandbox_eqs.py),
        behind Pinterest's checks: a live token with ads:read and access to the ad account."""
        now = time.time()
        with self.lock:
            self.state.eqs_reads += 1
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        auth = headers.get("authorization", "")
        info = self._live_token(auth[7:].strip() if auth.lower().startswith("bearer ") else "", now)
        if info is None:
            return 401, {"code": 2, "message": "Authentication failed."}, []
        if not re.fullmatch(r"\d{1,18}", ad_account_id):
            return 400, {"code": 1, "message": f"Invalid ad_account_id: '{ad_account_id[:40]}' must be digits."}, []
        if "ads:read" not in info.scopes or (info.ad_accounts is not None and ad_account_id not in info.ad_accounts):
            return 403, {"code": 29, "message": "You are not permitted to access that resource."}, []
        query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        lookback, platform = query.get("lookback_period", ""), query.get("source_platform")
        problems = []
        if lookback not in LOOKBACK_SECONDS:
            problems.append(f"lookback_period: '{lookback[:40]}' is not one of 1d, 14d (required)")
        if platform is not None and platform not in SOURCE_PLATFORMS:
            problems.append(f"source_platform: '{platform[:40]}' is not a source platform")
        ingestion = query.get("ingestion_source")
        if ingestion is not None and ingestion not in INGESTION_SOURCES:
            problems.append(f"ingestion_source: '{ingestion[:40]}' is not an ingestion source")
        if problems:
            return 400, {"code": 1, "message": "Invalid parameters: " + "; ".join(problems)}, []
        if ingestion not in (None, "CONVERSIONS_API"):
            return 200, [], []  # this sandbox only receives through the Conversions API
        with self.lock:
            events = [(r.at, r.event) for r in self.state.received if r.ad_account_id == ad_account_id and not r.test]
            tag_ids = set(self.state.tag_event_ids.get(ad_account_id, ()))
        return 200, conversion_eqs(events, tag_ids, lookback, platform, now), []

    def _live_token(self, token: str, now: float) -> Token | None:
        state = self.state
        welcome = (state.accept_any_token and token) or (state.demo and WELL_FORMED_TOKEN.fullmatch(token))
        # A welcome access token can read (ads:read) as well as send; a conversion token only sends.
        scopes = {"ads:write"} if token.startswith("ct_") else {"ads:read", "ads:write"}
        info = state.tokens.get(token) or (Token(frozenset(scopes)) if welcome else None)
        if info is not None and info.expires_at is not None and info.expires_at <= now:
            return None  # an access token that has run out
        return info

    # --- OAuth ---------------------------------------------------------------------------

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

    def _next_fault(self, ad_account_id: str) -> Fault | None:
        with self.lock:
            for i, fault in enumerate(self.state.faults):
                if fault.ad_account_id not in (None, ad_account_id):
                    continue
                if fault.count > 0:
                    fault.count -= 1
                    if fault.count == 0:
                        self.state.faults.pop(i)
                return fault
            return None

    def _over_rate(self, now: float) -> bool:
        limit = self.state.rate_limit_per_second
        if not limit:
            return False
        with self.lock:
            self._window = [t for t in self._window if t > now - 1.0]
            if len(self._window) >= limit:
                return True
            self._window.append(now)
            return False

    # --- control API and page -----------------------------------------------------------

    def _control(self, path: str, method: str, body: bytes):
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            return 400, {"error": "body is not JSON"}, []
        name = path[len("/_sandbox/"):]
        if name == "events" and method == "GET":
            return 200, {"data": [
                {"at": r.at, "ad_account_id": r.ad_account_id, "test": r.test, "event": r.event}
                for r in self.recorded()
            ]}, []
        if name == "requests" and method == "GET":
            return 200, {"data": [r.__dict__ for r in self.request_log()]}, []
        if name == "reset" and method == "POST":
            self.reset()
            return 200, {"ok": True}, []
        if name == "oauth" and method == "POST":
            with self.lock:
                if "access_token_seconds" in data:
                    self.state.access_token_seconds = int(data["access_token_seconds"])
                for app_id, app_secret in data.get("apps", {}).items():
                    self.state.apps[app_id] = app_secret
            return 200, {"ok": True}, []
        if name == "oauth" and method == "GET":
            with self.lock:
                return 200, {"refreshes": self.state.refreshes, "refused_refreshes": self.state.refused_refreshes}, []
        if name == "tag-events" and method == "POST":
            self.add_tag_events(str(data["ad_account_id"]), [str(i) for i in data.get("event_ids", [])])
            return 200, {"ok": True}, []
        if name == "tokens" and method == "POST":
            self.add_token(data["token"], data.get("scopes", ["ads:write"]), data.get("ad_accounts"))
            return 200, {"ok": True}, []
        if name == "faults" and method == "POST":
            for item in data.get("faults", []):
                self.add_fault(Fault(**item))
            with self.lock:
                self.state.poison_event_ids.update(data.get("poison_event_ids", []))
                self.state.failing_event_ids.update(data.get("failing_event_ids", {}))
                if "rate_limit_per_second" in data:
                    self.state.rate_limit_per_second = data["rate_limit_per_second"]
                if "partial_status" in data:
                    self.state.partial_status = data["partial_status"]
            return 200, {"ok": True}, []
        if name == "faults" and method == "DELETE":
            self.clear_faults()
            return 200, {"ok": True}, []
        return 404, {"error": "unknown sandbox endpoint"}, []

    def _html(self) -> str:
        rows = "".join(
            f"<tr><td>{time.strftime('%H:%M:%S', time.localtime(r.at))}</td>"
            f"<td>{html.escape(r.event['event_name'])}</td><td>{html.escape(r.event['event_id'])}</td>"
            f"<td><pre>{html.escape(json.dumps(r.event, indent=1))}</pre></td></tr>"
            for r in reversed(self.recorded()[-50:])
        )
        return (
            "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=2>"
            "<title>Pinterest sandbox</title><h1>Pinterest sandbox</h1>"
            f"<p>{len(self.state.received)} events received (newest first, refreshes every 2 s).</p>"
            f"<table border=1 cellpadding=4><tr><th>time<th>event_name<th>event_id<th>payload</tr>{rows}</table>"
        )


def _headers(scope) -> dict[str, str]:
    """An ASGI scope's headers by lower-case name (the last of repeated ones)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _warning(event: dict[str, Any]) -> str | None:
    custom = event.get("custom_data") or {}
    if event["event_name"] == "checkout" and "value" not in custom:
        return "custom_data.value is missing: checkout events should carry the order value."
    return None
