"""When to try an upstream request again, and how long to wait first.

* Connection errors, timeouts and 502/503/504 without ``Retry-After``:
  exponential backoff with full jitter, up to the upstream's ``retries``.
* 503 and 429 with ``Retry-After`` (seconds or an HTTP date): the upstream
  said when it can take the request again, so the mirror waits that long
  (plus up to 10 % jitter, so the mirror's waiting requests do not return in
  one burst), provided the wait is within ``retry_after_max`` and ends before
  the request's deadline. Otherwise the mirror does not retry and passes
  ``Retry-After`` on to its client, which fails fast and knows when to come back.
* 429 without ``Retry-After``: never retried (Docker Hub's pull quota; asking
  again only burns more of it).
"""

from __future__ import annotations

import random
import re
import time
from datetime import UTC
from email.utils import parsedate_to_datetime

_BACKOFF_BASE = 0.2
_BACKOFF_CAP = 5.0
_RETRY_AFTER_JITTER = 0.1
_DELTA_SECONDS_RE = re.compile(r"\s*([0-9]{1,9})\s*")
BACKOFF_STATUSES = frozenset({502, 503, 504})
RETRY_AFTER_STATUSES = frozenset({429, 503})


def backoff(attempt: int) -> float:
    """Exponential backoff with full jitter."""
    return random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value; ``None`` if absent or unreadable.

    ``now`` is the current Unix time (for HTTP dates; default: the clock). A
    date in the past means "now" (0 seconds).
    """
    if value is None:
        return None
    match = _DELTA_SECONDS_RE.fullmatch(value)
    if match is not None:
        return float(match.group(1))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": the sender's zone is unknown; HTTP dates are GMT
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def retry_delay(
    status: int,
    retry_after: str | None,
    *,
    attempt: int,
    retries: int,
    cap: float,
    time_left: float,
) -> float | None:
    """Seconds to wait before trying again after ``status``; ``None``: do not retry.

    ``attempt`` counts the retries already made; ``time_left`` is what remains
    of the request's deadline.
    """
    if attempt >= retries:
        return None
    asked = parse_retry_after(retry_after) if status in RETRY_AFTER_STATUSES else None
    if asked is not None:
        wait = asked * (1 + random.uniform(0, _RETRY_AFTER_JITTER))
        return wait if asked <= cap and wait < time_left else None
    if status in BACKOFF_STATUSES:
        return backoff(attempt + 1)
    return None
