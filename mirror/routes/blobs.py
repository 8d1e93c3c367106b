"""Sending a blob from wherever :class:`mirror.proxy.blobs.BlobStore` found it.

Every answer sets ``Content-Length``, ``Docker-Content-Digest``, ``ETag`` and
``Accept-Ranges`` and answers ``Range`` with 206. When bytes stop coming
(the upstream failed, the digest did not match) after the status line has
gone out, the connection is aborted: the client sees a broken transfer,
never a clean end of a wrong body.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import assert_never

from aiohttp import web

from mirror.errors import MirrorError
from mirror.metrics import Metrics
from mirror.oci import DIGEST_HEADER, ByteRange, parse_range
from mirror.proxy.blobs import BlobSource, CachedFile, Following, Redirect, StoredBlob
from mirror.routes.keys import BODY_BYTES

log = logging.getLogger(__name__)


def blob_headers(digest: str) -> dict[str, str]:
    """Headers every blob answer carries."""
    return {
        DIGEST_HEADER: digest,
        "ETag": f'"{digest}"',
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
        "Cache-Control": "max-age=31536000",
    }


async def send_blob(
    request: web.Request, source: BlobSource, metrics: Metrics
) -> web.StreamResponse:
    """The response for a blob GET, answering ``Range``."""
    match source:
        case CachedFile():
            with source:
                return await _send_file(request, source, metrics)
        case StoredBlob():
            byte_range = parse_range(request.headers.get("Range"), source.size)
            offset, count = _span(byte_range, source.size)
            chunks = source.chunks(offset, count)
            return await _send_stream(request, source, byte_range, chunks, count, "cache", metrics)
        case Redirect():
            raise web.HTTPTemporaryRedirect(source.url, headers=blob_headers(source.digest))
        case Following():
            return await _send_following(request, source, metrics)
    assert_never(source)


def _span(byte_range: ByteRange | None, size: int) -> tuple[int, int]:
    """Offset and length of what to send."""
    return (byte_range.start, byte_range.length) if byte_range else (0, size)


def _start(digest: str, size: int | None, byte_range: ByteRange | None) -> web.StreamResponse:
    response = web.StreamResponse(status=206 if byte_range else 200, headers=blob_headers(digest))
    if byte_range is not None and size is not None:
        response.headers["Content-Range"] = byte_range.content_range(size)
        response.content_length = byte_range.length
    elif size is not None:
        response.content_length = size
    return response


def _abort(request: web.Request, reason: object) -> None:
    """Cut the connection so the client cannot take a short body as complete."""
    transport = request.transport
    if transport is None or transport.is_closing():
        return  # cut already
    log.warning("aborting %s %s: %s", request.method, request.path, reason)
    transport.abort()


async def _send_file(
    request: web.Request, source: CachedFile, metrics: Metrics
) -> web.StreamResponse:
    """Send a cached local file with sendfile."""
    byte_range = parse_range(request.headers.get("Range"), source.size)
    offset, count = _span(byte_range, source.size)
    response = _start(source.digest, source.size, byte_range)
    await response.prepare(request)
    transport = request.transport
    if transport is None or count == 0:
        return response
    try:
        await source.sendfile(transport, offset, count)
    except NotImplementedError:  # a transport sendfile cannot use (TLS)
        if not await _copy(request, response, source.chunks(offset, count)):
            return response
    except (ConnectionError, RuntimeError) as exc:
        # The client hung up mid-transfer; nothing to tell it.
        log.debug("client left during sendfile: %r", exc)
        return response
    metrics.served("cache", count)
    request[BODY_BYTES] = count
    await response.write_eof()
    return response


async def _copy(
    request: web.Request, response: web.StreamResponse, chunks: AsyncIterator[bytes]
) -> bool:
    """Write ``chunks`` out; False when they broke off and the client was cut."""
    try:
        async for chunk in chunks:
            await response.write(chunk)
    except MirrorError as exc:
        _abort(request, exc)
        return False
    return True


async def _send_following(
    request: web.Request, source: Following, metrics: Metrics
) -> web.StreamResponse:
    """Stream a download in progress to one more client, from wherever it has got to."""
    byte_range = None
    if source.size is not None:
        byte_range = parse_range(request.headers.get("Range"), source.size)
    start = byte_range.start if byte_range else 0
    end = byte_range.end if byte_range else None
    count = byte_range.length if byte_range else source.size
    # Cut at once when the download fails, even while a write to a slow client waits.
    chunks = source.follow(start, end, on_cut=lambda reason: _abort(request, reason))
    return await _send_stream(request, source, byte_range, chunks, count, "upstream", metrics)


async def _send_stream(
    request: web.Request,
    source: StoredBlob | Following,
    byte_range: ByteRange | None,
    chunks: AsyncIterator[bytes],
    count: int | None,
    where: str,
    metrics: Metrics,
) -> web.StreamResponse:
    response = _start(source.digest, source.size, byte_range)
    sent = 0
    try:
        await response.prepare(request)
        async for chunk in chunks:
            await response.write(chunk)
            sent += len(chunk)
    except MirrorError as exc:
        # At once: the download has failed (or bytes went missing), nothing more may go out.
        _abort(request, exc)
        return response
    except (ConnectionError, RuntimeError) as exc:
        log.debug("client left mid-blob: %r", exc)
        return response
    finally:
        metrics.served(where, sent)
        request[BODY_BYTES] = sent
        # Always, even if the client left before the first byte: a follower
        # holds the download's memory and spool until it is closed.
        await chunks.aclose()  # type: ignore[attr-defined]
    if count is not None and sent != count:
        _abort(request, f"sent {sent} of {count} bytes")
        return response
    await response.write_eof()
    return response
