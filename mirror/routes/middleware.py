"""Turns every failure into an OCI error document; never a traceback."""

from __future__ import annotations

import json
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from mirror.errors import MirrorError
from mirror.oci import API_VERSION, API_VERSION_HEADER
from mirror.routes.keys import CACHE_RESULT

log = logging.getLogger(__name__)

# aiohttp's own HTTP errors (unknown path, bad method) in OCI terms.
_HTTP_CODES = {
    400: "UNSUPPORTED",
    404: "NAME_UNKNOWN",
    405: "UNSUPPORTED",
    413: "SIZE_INVALID",
    414: "NAME_INVALID",
}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None,
                   detail: object = None) -> web.Response:  # fmt: skip
    """An OCI error document with the given status."""
    entry: dict[str, object] = {"code": code, "message": message}
    if detail is not None:
        entry["detail"] = detail
    response = web.Response(
        status=status,
        body=json.dumps({"errors": [entry]}).encode(),
        content_type="application/json",
        headers=headers,
    )
    response.headers[API_VERSION_HEADER] = API_VERSION
    return response


@web.middleware
async def oci_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map MirrorError, aiohttp HTTP errors and bugs to OCI error JSON."""
    try:
        return await handler(request)
    except MirrorError as exc:
        request[CACHE_RESULT] = "error"
        if exc.status >= 500:
            log.warning("%s %s -> %d %s: %s", request.method, request.path, exc.status,
                        exc.code, exc.message)  # fmt: skip
        return error_response(exc.status, exc.code, exc.message, exc.headers(), exc.detail)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "UNSUPPORTED")
        return error_response(exc.status, code, exc.reason)
    except ConnectionResetError:
        raise
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, "UNKNOWN", "internal error")
