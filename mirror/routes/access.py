"""One access-log line per request, as text or (with the JSON formatter) as fields.

Each record carries ``method``, ``path``, ``status``, ``bytes`` (body bytes
sent), ``duration_ms``, ``kind`` and ``cache_result`` (set by the routes),
``remote``, ``user`` (the caller's user name with ``[auth]``, else ``-``) and
``user_agent`` as ``extra`` fields, so
:class:`mirror.logs.JsonFormatter` writes them as JSON keys. No header that
can carry credentials (``Authorization``, cookies) and no query string is
ever logged; the path is logged percent-encoded, so it cannot break a line.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from mirror.routes.keys import BODY_BYTES, CACHE_RESULT, KIND
from mirror.security.gate import CALLER, printable


def body_bytes(request: web.BaseRequest, response: web.StreamResponse) -> int:
    """Body bytes sent: what the blob senders counted, else the response body's length."""
    counted = request.get(BODY_BYTES)
    if counted is not None:
        return int(counted)  # sendfile bypasses aiohttp's own count
    if request.method == "HEAD":
        return 0
    if isinstance(response, web.Response) and isinstance(response.body, bytes | bytearray):
        return len(response.body)
    # StreamResponse counts the header block too; no better number is known here.
    return response.body_length


def access_fields(
    request: web.BaseRequest, response: web.StreamResponse, seconds: float
) -> dict[str, object]:
    """The fields of one access-log record."""
    return {
        "remote": request.remote or "-",
        "method": request.method,
        "path": request.rel_url.raw_path,
        "status": response.status,
        "bytes": body_bytes(request, response),
        "duration_ms": round(seconds * 1000, 3),
        "kind": request.get(KIND, "-"),
        "cache_result": request.get(CACHE_RESULT, "-"),
        "user_agent": request.headers.get("User-Agent", "-"),
        "user": _user(request),
    }


def _user(request: web.BaseRequest) -> str:
    """Who the client-auth middleware found (never credentials): a user name, or ``-``."""
    caller = request.get(CALLER)
    if caller is None or caller.user is None:
        return "-"
    return printable(caller.user)


class AccessLogger(AbstractAccessLogger):
    """aiohttp access logger writing one record per request to ``self.logger``."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Write the record for one finished request."""
        fields = access_fields(request, response, time)
        self.logger.info(
            '%s %s "%s %s" %d %dB %.1fms %s %s',
            fields["remote"], fields["user"], fields["method"], fields["path"], fields["status"],
            fields["bytes"], fields["duration_ms"], fields["kind"], fields["cache_result"],
            extra=fields,
        )  # fmt: skip

    @property
    def enabled(self) -> bool:
        """Skip building records nobody will see."""
        return self.logger.isEnabledFor(logging.INFO)
