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
import json
import re
import threading
import time
from typing import Any
from urllib.parse import parse_qs

from delivery.pinterest.sandbox_control import ControlEndpoints
from delivery.pinterest.sandbox_eqs import (
    INGESTION_SOURCES,
    LOOKBACK_SECONDS,
    SOURCE_PLATFORMS,
    conversion_eqs,
)
from delivery.pinterest.sandbox_oauth import OAuthEndpoints
from delivery.pinterest.sandbox_state import Answer, Fault, Recorded, RequestLog, SandboxState, Token, Trickled
from delivery.pinterest.schema_check import (
    fast_validator,
    schema_validator,
    validation_errors,
)

_EVENTS_PATH = re.compile(r"^/v5/ad_accounts/([^/]+)/events/?$")
_EQS_PATH = re.compile(r"^/v5/ad_accounts/([^/]+)/conversion_eqs/?$")
MAX_AGE_SECONDS = 7 * 24 * 3600
WELL_FORMED_TOKEN = re.compile(r"(?:pina|ct)_\S{3,}")
RATE_LIMIT_MESSAGE = (
    "This request exceeded a rate limit. This can happen if the client exceeds one\n"
    "of the published rate limits within a short time window."
)



class Sandbox(OAuthEndpoints, ControlEndpoints):
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

        with self.lock:
            self.state.arrivals += 1
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

def _warning(event: dict[str, Any]) -> str | None:
    custom = event.get("custom_data") or {}
    if event["event_name"] == "checkout" and "value" not in custom:
        return "custom_data.value is missing: checkout events should carry the order value."
    return None
