"""Split a batch body into its events without recursion.

msgspec decodes (and even skips, for `Raw`) nested JSON recursively and gives up past about
a thousand levels with a RecursionError, so one such event would sink the whole batch. This
scanner runs only then: it finds the `batch` array's elements by counting brackets outside
strings, so each event can be decoded, and refused, on its own.
"""

from __future__ import annotations

_OPEN, _CLOSE = frozenset(b"[{"), frozenset(b"]}")
_QUOTE, _BACKSLASH, _COMMA = ord('"'), ord("\\"), ord(",")


def _string_end(body: bytes, start: int) -> int:
    """Index just past the string that opens at `start`."""
    i = start + 1
    while True:
        i = body.index(b'"', i)
        backslashes = 0
        while body[i - 1 - backslashes] == _BACKSLASH:
            backslashes += 1
        i += 1
        if backslashes % 2 == 0:
            return i


def split_batch(body: bytes) -> tuple[bytes, list[bytes]] | None:
    """(the body with `batch` emptied, each element of `batch` as raw JSON), or None when the
    body is not an object with a `batch` array (the caller reports the decoding error)."""
    try:
        return _split(body)
    except (ValueError, IndexError):
        return None


def _split(body: bytes) -> tuple[bytes, list[bytes]] | None:
    depth, i, n = 0, 0, len(body)
    key = None  # the last key read at depth 1
    array_start = None
    elements: list[bytes] = []
    element_start = None
    while i < n:
        c = body[i]
        if c == _QUOTE:
            end = _string_end(body, i)
            if depth == 1 and array_start is None:
                key = body[i + 1:end - 1]
            elif depth == 2 and array_start is not None and element_start is None:
                element_start = i
            i = end
            continue
        if c in _OPEN:
            depth += 1
            if depth == 2 and key == b"batch" and c == ord("[") and array_start is None:
                array_start = i
            elif depth == 3 and array_start is not None and element_start is None:
                element_start = i
        elif c in _CLOSE:
            if depth == 2 and array_start is not None:  # the batch array ends
                if element_start is not None:
                    elements.append(body[element_start:i].strip())
                return body[:array_start] + b"[]" + body[i + 1:], elements
            depth -= 1
        elif c == _COMMA and depth == 2 and array_start is not None:
            elements.append(body[element_start:i].strip() if element_start is not None else b"")
            element_start = None
        elif depth == 2 and array_start is not None and element_start is None and c not in b" \t\r\n":
            element_start = i  # a number, true, false or null
        i += 1
    return None
