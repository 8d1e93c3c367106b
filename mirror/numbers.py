"""Turning text from the network or a config file into numbers, safely.

``int()`` and ``str.isdigit()`` are the wrong tools for text a client or an
upstream wrote: ``"²".isdigit()`` is true but ``int("²")`` fails, ``int()``
also takes other scripts' digits, ``_`` separators and spaces, and a
5,000-digit number makes it raise (Python's integer digit limit) after
spending time on it. Every number the mirror reads goes through here: ASCII
digits only, and a bounded length.
"""

from __future__ import annotations

import re

# 19 digits always fit in a signed 64-bit integer (the largest is 9.2e18).
MAX_DIGITS = 19
# Larger than any size or offset the mirror can meet: what a longer number means.
BEYOND: int = 10**MAX_DIGITS

_DIGITS_RE = re.compile(r"[0-9]+")
_DECIMAL_RE = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")


def parse_count(text: str, max_digits: int = MAX_DIGITS) -> int | None:
    """A non-negative integer in ASCII digits, at most ``max_digits`` long; else None."""
    if len(text) > max_digits or _DIGITS_RE.fullmatch(text) is None:
        return None
    return int(text)


def digits_value(digits: str) -> int:
    """The value of a string of ASCII digits (already matched as such), of any length.

    Leading zeros are dropped, and a value of more than :data:`MAX_DIGITS`
    digits is :data:`BEYOND`, which compares like the real number against
    any object's size or offset, without ever converting a long string.
    """
    significant = digits.lstrip("0")
    if len(significant) > MAX_DIGITS:
        return BEYOND
    return int(significant or "0")


def parse_decimal(text: str) -> float | None:
    """A non-negative decimal such as ``"2.5"`` (12 integer, 9 fraction digits at most)."""
    if _DECIMAL_RE.fullmatch(text) is None:
        return None
    return float(text)
