"""Match quality: how many recent events carried each identity signal Pinterest matches on."""

from __future__ import annotations

import msgspec

from collector.admin.schemas import MatchAdvice, MatchQuality, MatchSignal
from delivery.pinterest.catalog import TROUBLESHOOTING
from delivery.store import NO_JSON, DebugRecord

WEAK = 0.5  # a signal fewer than half the events carry is worth advice
SIGNALS = ("click_id", "em", "ph", "external_id", "ip_and_user_agent")
HINTS = {
    "click_id": "Few events carry a Pinterest click id (epik). Make sure Pinterest ads link to pages with the tag, "
    "and that the epik parameter is not stripped by redirects.",
    "em": "Few events carry a hashed email. Call _df.identify(userId, {email}) when a visitor logs in, registers "
    "or submits a form.",
    "ph": "Few events carry a hashed phone number. Pass phone to _df.identify() where you collect it (with the "
    "country code, or set the source's default_country).",
    "external_id": "Few events carry an external id. Call _df.identify(userId) for logged-in visitors, and check "
    "that the _pin_unauth cookie is being set.",
    "ip_and_user_agent": "Some events lack the IP address or User-Agent. If the edge runs behind a proxy, add the "
    "proxy to SIGNAL_TRUSTED_PROXIES. Server-side calls: give the visitor's context.ip and context.userAgent.",
}


class _UserData(msgspec.Struct):
    em: list[str] = []
    ph: list[str] = []
    external_id: list[str] = []
    click_id: str | None = None
    client_ip_address: str | None = None
    client_user_agent: str | None = None


class _Payload(msgspec.Struct):
    user_data: _UserData = msgspec.field(default_factory=_UserData)


_decoder = msgspec.json.Decoder(_Payload)


def match_quality(integration_id: str, records: list[DebugRecord]) -> MatchQuality:
    counts = dict.fromkeys(SIGNALS, 0)
    seen = 0
    for record in records:
        if record.payload == NO_JSON:
            continue
        user = _decoder.decode(record.payload).user_data
        seen += 1
        counts["click_id"] += bool(user.click_id)
        counts["em"] += bool(user.em)
        counts["ph"] += bool(user.ph)
        counts["external_id"] += bool(user.external_id)
        counts["ip_and_user_agent"] += bool(user.client_ip_address and user.client_user_agent)
    signals = [MatchSignal(k, round(v / seen, 4) if seen else 0.0, v) for k, v in counts.items()]
    weak = sorted((x for x in signals if seen and x.share < WEAK), key=lambda x: x.share)
    advice = [MatchAdvice(x.signal, HINTS[x.signal]) for x in weak]
    weakest = weak[0].signal if weak else None
    hint = " ".join(a.hint for a in advice) + " " + TROUBLESHOOTING["low_match_rate"] if advice else None
    return MatchQuality(integration_id, seen, signals, weakest, hint, advice)
