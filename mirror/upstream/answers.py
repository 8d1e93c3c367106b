"""What an upstream's status and headers mean to the mirror.

Every answer that is not a success becomes an exception from
:mod:`mirror.errors`: 404 the "unknown" error of what was asked for, 403 DENIED, 429
TOOMANYREQUESTS and a 503 that said when to come back (both with that
``Retry-After``, in seconds), any other status UNAVAILABLE.
"""

from __future__ import annotations

import math
import re

import aiohttp

from mirror.errors import (
    ClientError,
    UpstreamBusy,
    UpstreamDenied,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from mirror.numbers import parse_count
from mirror.upstream.retry import parse_retry_after

_RATELIMIT_RE = re.compile(r"[ \t]*([0-9]+)")


def raise_for_status(
    resp: aiohttp.ClientResponse, upstream: str, unknown: type[ClientError]
) -> None:
    """Return on a 2xx; raise the error that stands for any other status.

    ``unknown`` is what a 404 means for the resource asked for.
    """
    status = resp.status
    if 200 <= status < 300:
        return
    if status == 404:
        raise unknown(f"not found at upstream {upstream}")
    if status == 403:
        raise UpstreamDenied(f"upstream {upstream} denied access")
    retry_after = _retry_after_seconds(resp)
    if status == 429:
        raise UpstreamRateLimited(f"upstream {upstream} is rate limiting the mirror", retry_after)
    if status == 503 and retry_after is not None:
        raise UpstreamBusy(f"upstream {upstream} answered 503", retry_after)
    raise UpstreamUnavailable(f"upstream {upstream} answered {status}")


def ratelimit(resp: aiohttp.ClientResponse) -> tuple[int | None, int | None]:
    """Docker Hub's ``ratelimit-limit`` and ``ratelimit-remaining`` (``100;w=21600``)."""
    return (
        _ratelimit_value(resp.headers.get("ratelimit-limit")),
        _ratelimit_value(resp.headers.get("ratelimit-remaining")),
    )


def _ratelimit_value(header: str | None) -> int | None:
    if not header:
        return None
    # "100;w=21600": the count comes first; a number too long to be one is ignored.
    match = _RATELIMIT_RE.match(header)
    return parse_count(match.group(1)) if match else None


def _retry_after_seconds(resp: aiohttp.ClientResponse) -> str | None:
    """The upstream's ``Retry-After`` as whole seconds from now (dates made relative)."""
    seconds = parse_retry_after(resp.headers.get("Retry-After"))
    return None if seconds is None else str(math.ceil(seconds))
