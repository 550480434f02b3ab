"""The sandbox's Event Quality Score: `GET /v5/ad_accounts/{id}/conversion_eqs` computed from the
events it received, in the response shape of Pinterest's OpenAPI description (EventQualityScore).

Coverage is what it says: the percentage of an event type's events that carried the signal. The
issues and the overall status are the sandbox's stand-in for Pinterest's own rules, which are not
published: a matching signal on fewer than half the events is an issue, so is one IP address on
most events (a server's own, sent as its visitors'), and the overall status weighs the signals
Pinterest matches people on.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from importlib import resources
from typing import Any

# The answer's schema, from Pinterest's OpenAPI description (schema/SOURCE.md): tests hold the
# sandbox to it.
EQS_SCHEMA = json.loads(resources.files("delivery.pinterest").joinpath("schema/conversion-eqs.schema.json").read_text())
LOOKBACK_SECONDS = {"1d": 24 * 3600, "14d": 14 * 24 * 3600}
PLATFORMS = {"web": "WEB", "app_android": "MOBILE_ANDROID", "app_ios": "MOBILE_IOS", "offline": "OFFLINE"}
SOURCE_PLATFORMS = ("WEB", "MOBILE", "MOBILE_ANDROID", "MOBILE_IOS", "OFFLINE", "PINTEREST_WEB",
                    "PINTEREST_ANDROID", "PINTEREST_IOS", "POINT_OF_SALE")
INGESTION_SOURCES = ("TAG", "MMP", "FILE_UPLOAD", "CONVERSIONS_API", "NATIVE")
LOW = 50.0  # percent


def _custom(event: dict) -> dict:
    return event.get("custom_data") or {}


# Each quality component, and whether an event carried it.
SIGNALS = {
    "hashed_email": lambda e: bool(e["user_data"].get("em")),
    "hashed_maid": lambda e: bool(e["user_data"].get("hashed_maids")),
    "ip_address": lambda e: bool(e["user_data"].get("client_ip_address")),
    "user_agent": lambda e: bool(e["user_data"].get("client_user_agent")),
    "click_id_epik": lambda e: bool(e["user_data"].get("click_id")),
    "advertiser_external_id": lambda e: bool(e["user_data"].get("external_id")),
    "external_event_id": lambda e: bool(e.get("event_id")),
    "order_id": lambda e: bool(_custom(e).get("order_id")),
    "order_value": lambda e: bool(_custom(e).get("value")),
    "product_id": lambda e: bool(_custom(e).get("content_ids")
                                 or any(c.get("id") for c in _custom(e).get("contents", []))),
    "source_url": lambda e: bool(e.get("event_source_url")),
}
# What low coverage of a matching signal means, in the words of an issue.
MATCHING = {"hashed_email": "a hashed email", "ip_address": "the IP address", "user_agent": "the User-Agent",
            "click_id_epik": "a Pinterest click id (epik)", "advertiser_external_id": "an external id"}


def conversion_eqs(events: list[tuple[float, dict[str, Any]]], tag_event_ids: set[str], lookback: str,
                   source_platform: str | None, now: float) -> list[dict[str, Any]]:
    """One ad account's score from its `events`, (received at, event) pairs, over `lookback`."""
    since = now - LOOKBACK_SECONDS[lookback]
    by_platform: dict[str, list[dict]] = defaultdict(list)
    for at, event in events:
        if at >= since:
            by_platform[PLATFORMS.get(event.get("action_source", ""), "WEB")].append(event)
    answer = []
    for platform, found in sorted(by_platform.items()):
        wanted = source_platform in (None, platform) or (source_platform == "MOBILE" and platform.startswith("MOBILE"))
        if not wanted:
            continue
        answer.append({
            "overall_status": _overall(found),
            "quality_components": _components(found, tag_event_ids),
            "ingestion_source": "CONVERSIONS_API",
            "source_platform": platform,
            "lookback_period": lookback,
        })
    return answer


def _percent(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0


def _components(events: list[dict], tag_event_ids: set[str]) -> dict[str, dict[str, dict]]:
    by_name: dict[str, list[dict]] = defaultdict(list)
    for event in events:
        by_name[event["event_name"]].append(event)
    components: dict[str, dict[str, dict]] = {}
    for signal, carried in SIGNALS.items():
        per_event = {}
        for name, group in sorted(by_name.items()):
            coverage = _percent(sum(1 for e in group if carried(e)), len(group))
            details: dict[str, Any] = {"coverage": coverage, "issues": _issues(signal, name, group, coverage)}
            if signal == "external_event_id":
                details["overlap"] = _percent(sum(1 for e in group if e.get("event_id") in tag_event_ids), len(group))
            per_event[name] = details
        components[signal] = per_event
    return components


def _issues(signal: str, name: str, group: list[dict], coverage: float) -> list[dict[str, str]]:
    issues = []
    if signal in MATCHING and coverage < LOW:
        issues.append({"id": f"LOW_COVERAGE_{signal.upper()}", "name": "Low coverage",
                       "reason": f"Only {coverage:g}% of {name} events carry {MATCHING[signal]}."})
    if signal == "ip_address" and len(group) >= 5:
        address, count = Counter(e["user_data"].get("client_ip_address") for e in group).most_common(1)[0]
        if address and count > len(group) / 2:
            issues.append({"id": "SHARED_IP_ADDRESS", "name": "One IP address for many people",
                           "reason": f"{_percent(count, len(group)):g}% of {name} events carry the same IP address: "
                                     "a server's own address sent as its visitors' cannot be matched."})
    return issues


def _overall(events: list[dict]) -> str:
    """Weighted coverage of the signals people are matched on: GOOD from 70%, FAIR from 40%."""
    n = len(events)

    def share(test) -> float:
        return sum(1 for e in events if test(e)) / n

    person = share(lambda e: SIGNALS["hashed_email"](e) or SIGNALS["hashed_maid"](e))
    browser = share(lambda e: SIGNALS["ip_address"](e) and SIGNALS["user_agent"](e))
    score = 0.5 * person + 0.2 * browser + 0.15 * share(SIGNALS["click_id_epik"]) + \
        0.15 * share(SIGNALS["advertiser_external_id"])
    return "GOOD" if score >= 0.7 else "FAIR" if score >= 0.4 else "NEEDS_IMPROVEMENT"
