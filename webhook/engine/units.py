"""Kubernetes quantities and Go durations, compared by value rather than by text."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

MAX_TEXT = 64  # no real quantity or duration is longer; longer input is refused before any regex
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}
_QUANTITY = re.compile(
    r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)$"
)


def parse_quantity(value: object) -> Decimal:
    """Return the numeric value of a Kubernetes quantity (`2Gi`, `1.5Gi`, `500M`, `2147483648`).

    Raises ValueError with the offending text when it is not a quantity.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, int | float):
        return Decimal(str(value))
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise ValueError(f"not a quantity: {str(value)[:MAX_TEXT]!r}")
    match = _QUANTITY.match(value.strip())
    if not match:
        raise ValueError(f"not a quantity: {value!r}")
    number, exponent, suffix = match.groups()
    try:
        amount = Decimal(number)
    except InvalidOperation as error:  # pragma: no cover - the regex admits only numbers
        raise ValueError(f"not a quantity: {value!r}") from error
    if exponent:
        return amount * (Decimal(10) ** int(exponent[1:]))
    if suffix in _BINARY:
        return amount * _BINARY[suffix]
    return amount * _DECIMAL[suffix or ""]


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": Decimal("1e-9"),
    "us": Decimal("1e-6"),
    "µs": Decimal("1e-6"),
    "ms": Decimal("1e-3"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
}


def parse_duration(value: object) -> Decimal:
    """Return the seconds in a Go duration string (`30s`, `1m30s`, `1h`, `500ms`)."""
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise ValueError(f"not a duration: {str(value)[:MAX_TEXT]!r}")
    text = value.strip()
    if text == "0":
        return Decimal(0)
    position = 0
    total = Decimal(0)
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            raise ValueError(f"not a duration: {value!r}")
        total += Decimal(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if position != len(text) or position == 0:
        raise ValueError(f"not a duration: {value!r}")
    return total
