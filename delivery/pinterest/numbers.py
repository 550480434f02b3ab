"""Numbers sent by strangers, parsed with bounded work.

Every numeric field of an event comes from a public endpoint. `Decimal("1e999999999")` is
finite and cheap to build, but printing it in plain notation, or turning it into an int,
writes a billion digits. So text is parsed only up to `MAX_TEXT` characters, and a value's
magnitude is checked (from its exponent, in constant time) before anything expands it.

Ranges follow what Pinterest accepts: `quantity` and `num_items` are int64 in its schema;
money (`value`, `item_price`) is a decimal string, kept below 10^15 and to 12 places.
A value outside them raises `ValueError` with a reason that never repeats the value.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

MAX_TEXT = 64  # characters of a number written as text
MONEY_DIGITS = 15  # |amount| < 10^15
MONEY_PLACES = 12  # decimal places kept (more are rounded)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_MONEY_LIMIT = 10.0**MONEY_DIGITS
_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)
# Already a plain, non-negative decimal within range: passed through as it is.
_CANONICAL = re.compile(rf"(0|[1-9]\d{{0,{MONEY_DIGITS - 1}}})(\.\d{{1,{MONEY_PLACES}}})?")


def _decimal(value: Any) -> Decimal:
    """A finite Decimal from an int, float or numeric text; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise ValueError("not a number")
    if type(value) is int:
        return Decimal(value)  # exact; the caller checks the range
    text = value if type(value) is str else str(value)
    if len(text) > MAX_TEXT:
        raise ValueError(f"not a number of at most {MAX_TEXT} characters")
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError("not a number") from None
    if not number.is_finite():
        raise ValueError("not a finite number")
    return number


def money(value: Any) -> str:
    """A plain decimal string ("129.99", "0") below 10^15, rounded to 12 places."""
    kind = type(value)
    if kind is float:
        return _float_money(value)
    if kind is str and _CANONICAL.fullmatch(value):
        return value
    if kind is int and -_MONEY_LIMIT < value < _MONEY_LIMIT:
        return str(value)
    return money_of(_decimal(value))


def money_of(number: Decimal) -> str:
    """`number` as money text; its size is checked from the exponent before it is printed."""
    if number.is_zero():
        return "0"
    if number.adjusted() >= MONEY_DIGITS:
        raise ValueError(f"out of range (at most {MONEY_DIGITS} digits before the decimal point)")
    if number.adjusted() < -MONEY_PLACES - 1:
        return "0"  # below a trillionth: nothing a currency can hold
    exponent = number.as_tuple().exponent  # an int: only NaN and Infinity have a letter here
    if isinstance(exponent, int) and exponent < -MONEY_PLACES:
        number = number.quantize(_QUANTUM)  # at most 27 digits: within Decimal's default precision
    text = format(number, "f")
    return "0" if text in ("-0", "0", "-0.0") else text


@lru_cache(maxsize=4096)
def _float_money(value: float) -> str:
    """Prices repeat (the same products sell all day): each is formatted once."""
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    if not -_MONEY_LIMIT < value < _MONEY_LIMIT:
        raise ValueError(f"out of range (at most {MONEY_DIGITS} digits before the decimal point)")
    if value == 0:
        return "0"
    text = repr(value)  # the shortest string that reads back as this float
    return text if "e" not in text else money_of(Decimal(text))


def int64(value: Any) -> int:
    """A whole number within int64 (Pinterest's `quantity`, `num_items`)."""
    if type(value) is int:
        return in_int64(value)
    number = _decimal(value)
    if number.adjusted() > 18:  # 10^19 > 2^63: out of range before it is expanded
        raise ValueError("out of range (int64)")
    if number != number.to_integral_value():
        raise ValueError("not a whole number")
    return in_int64(int(number))


def in_int64(number: int) -> int:
    if not INT64_MIN <= number <= INT64_MAX:
        raise ValueError("out of range (int64)")
    return number
