"""What an upstream's status and headers mean to the mirror.

Every answer that is not a success becomes an exception from
:mod:`mirror.errors`: 404 the caller's own "unknown" error, 403 DENIED, 429
TOOMANYREQUESTS (with the upstream's ``Retry-After``), any other status
UNAVAILABLE.
"""

from __future__ import annotations

import re

import aiohttp

from mirror.errors import (
    MirrorError,
    UpstreamDenied,
    UpstreamRateLimited,
    UpstreamUnavailable,
)

_RATELIMIT_RE = re.compile(r"\s*(\d+)")


def raise_for_status(
    resp: aiohttp.ClientResponse, upstream: str, not_found: type[MirrorError]
) -> None:
    """Return on a 2xx; raise the error that stands for any other status."""
    status = resp.status
    if 200 <= status < 300:
        return
    if status == 404:
        raise not_found(f"not found at upstream {upstream}")
    if status == 403:
        raise UpstreamDenied(f"upstream {upstream} denied access")
    if status == 429:
        retry_after = resp.headers.get("Retry-After")
        raise UpstreamRateLimited(f"upstream {upstream} is rate limiting the mirror", retry_after)
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
    match = _RATELIMIT_RE.match(header)
    return int(match.group(1)) if match else None
