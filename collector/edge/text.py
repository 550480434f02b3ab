"""Text every backend can store, settled once at the edge, before anything is queued.

Two kinds of code point cannot be kept as they arrive:

- A lone UTF-16 surrogate (`"\\ud83d"`, what JavaScript's JSON.stringify writes for an emoji cut in
  half, as a title trimmed to 100 characters can be) is not Unicode: msgspec refuses the whole
  event. Its escape is replaced by U+FFFD in the body before decoding, so the event is kept.
- NUL (`"\\u0000"`) decodes, but PostgreSQL refuses it in text columns (dead letters, the debugger
  log, identities), where SQLite keeps it: stored, it jammed delivery on one backend only. In an
  identifier (messageId, userId, anonymousId, groupId, the event's name, properties.event_id)
  the value cannot be kept without changing what it names: the event gets a 400 naming the
  field. Anywhere else NUL becomes U+FFFD.

Both are looked for only when the body holds such an escape (a byte search in C); the usual
body is not walked at all.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from collector.edge.wire import IncomingEvent

REPLACEMENT = "\ufffd"
_SURROGATE_ESCAPE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?:\\u[dD][c-fC-F][0-9a-fA-F]{2})?|\\u[dD][c-fC-F][0-9a-fA-F]{2}")
_PAIR = 12  # len(b"\\ud83d\\ude00")
_BACKSLASH = 0x5C
# Fields whose value names something: NUL there is refused, not replaced.
IDENTIFIERS = ("messageId", "userId", "anonymousId", "groupId", "event", "name")


class Unstorable(ValueError):
    def __init__(self, field: str) -> None:
        super().__init__("holds a NUL character (\\u0000), which cannot be stored; remove it")
        self.field = field


def may_hold_surrogates(body: bytes) -> bool:
    return b"\\ud" in body or b"\\uD" in body


def may_hold_nul(body: bytes) -> bool:
    return b"\\u0000" in body


def repair_surrogates(body: bytes) -> bytes:
    """`body` with the escape of every lone surrogate replaced by that of U+FFFD (pairs kept)."""
    def fix(match: re.Match) -> bytes:
        start, escapes = match.start(), 0
        while start - 1 - escapes >= 0 and body[start - 1 - escapes] == _BACKSLASH:
            escapes += 1
        if escapes % 2 or len(match.group(0)) == _PAIR:  # an escaped backslash's text, or a pair
            return match.group(0)
        return b"\\ufffd"

    return _SURROGATE_ESCAPE.sub(fix, body)


def settle_nul(event: IncomingEvent) -> None:
    """Replace NUL by U+FFFD everywhere in a decoded event, in place; raise Unstorable naming
    the first identifier that holds one. The walk uses a stack, not recursion: the event is
    as deep as msgspec let it be."""
    for name in IDENTIFIERS:
        value = getattr(event, name)
        if type(value) is str and "\x00" in value:
            raise Unstorable(name)
    properties = event.properties
    if properties and type(properties.get("event_id")) is str and "\x00" in properties["event_id"]:
        raise Unstorable("properties.event_id")
    stack: list[Any] = [event]
    while stack:
        node = stack.pop()
        if isinstance(node, msgspec.Struct):
            for name in node.__struct_fields__:
                value = getattr(node, name)
                if type(value) is str:
                    if "\x00" in value:
                        setattr(node, name, value.replace("\x00", REPLACEMENT))
                elif value is not None:
                    stack.append(value)
        elif type(node) is dict:
            for key in [k for k in node if "\x00" in k]:
                node[key.replace("\x00", REPLACEMENT)] = node.pop(key)
            for key, value in node.items():
                if type(value) is str:
                    if "\x00" in value:
                        node[key] = value.replace("\x00", REPLACEMENT)
                elif type(value) in (dict, list):
                    stack.append(value)
        elif type(node) is list:
            for i, value in enumerate(node):
                if type(value) is str:
                    if "\x00" in value:
                        node[i] = value.replace("\x00", REPLACEMENT)
                elif type(value) in (dict, list):
                    stack.append(value)
