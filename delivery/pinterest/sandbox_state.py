"""What the Pinterest sandbox (sandbox.py) knows: its tokens, apps, faults and what it received."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
    requests: list[RequestLog] = field(default_factory=list)  # each when it is answered
    arrivals: int = 0  # requests to the events endpoint, counted as they arrive (one that hangs too)
    tag_event_ids: dict[str, set[str]] = field(default_factory=dict)  # ad account -> ids a Pinterest Tag sent
    eqs_reads: int = 0  # GET conversion_eqs answered (any status)
