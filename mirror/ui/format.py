"""How numbers, times and digests read on the pages (the templates' filters)."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_SPANS = ((86400 * 365, "year"), (86400 * 30, "month"), (86400, "day"), (3600, "hour"),
          (60, "minute"))  # fmt: skip


def size(value: int) -> str:
    """Bytes in binary units with three significant figures: ``1.46 GiB``."""
    amount = float(value)
    for unit in _UNITS:
        if abs(amount) < 1024 or unit == _UNITS[-1]:
            break
        amount /= 1024
    if unit == "B":
        return f"{value} B"
    return f"{amount:.3g} {unit}" if amount < 1000 else f"{amount:.0f} {unit}"


def count(value: int) -> str:
    """An integer with thousands separators: ``12,345``."""
    return f"{value:,}"


def percent(ratio: float | None) -> str:
    """A ratio as a percentage, or a dash when there is none yet."""
    return "\N{EN DASH}" if ratio is None else f"{ratio * 100:.1f} %"


def iso(timestamp: float) -> str:
    """RFC 3339 UTC, for ``<time datetime>`` and tooltips."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def ago(timestamp: float | None, now: float) -> str:
    """How long ago, in the largest whole unit: ``3 hours ago``; ``never`` for None."""
    if timestamp is None:
        return "never"
    elapsed = now - timestamp
    if elapsed < 60:
        return "just now"
    seconds, unit = next((s, u) for s, u in _SPANS if elapsed >= s)  # the minute span matches
    amount = int(elapsed // seconds)
    return f"{amount} {unit}{'s' if amount != 1 else ''} ago"


def short_digest(digest: str) -> str:
    """The algorithm and 12 hex digits: enough to tell digests apart on a page."""
    algorithm, sep, hex_part = digest.partition(":")
    return f"{algorithm}:{hex_part[:12]}" if sep else digest[:19]


def is_web_url(text: str) -> bool:
    """Whether ``text`` is a plain http(s) URL: the only text the pages turn into a link."""
    if any(ch.isspace() or not ch.isprintable() for ch in text):
        return False
    try:
        parts = urlsplit(text)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
