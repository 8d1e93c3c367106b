"""Sending blob bytes: sendfile for cached files, streams for S3 and running downloads.

Every path sets ``Content-Length``, ``Docker-Content-Digest``, ``ETag`` and
``Accept-Ranges`` and answers ``Range`` with 206. When bytes stop coming
(the upstream failed, the digest did not match) after the status line has
gone out, the connection is aborted: the client sees a broken transfer,
never a clean end of a wrong body.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from mirror.errors import MirrorError
from mirror.metrics import Metrics
from mirror.oci import DIGEST_HEADER, ByteRange, parse_range
from mirror.proxy.service import BlobAnswer
from mirror.routes.keys import BODY_BYTES
from mirror.storage.base import Storage, StorageError

log = logging.getLogger(__name__)

_FALLBACK_CHUNK = 256 * 1024


def blob_headers(answer: BlobAnswer) -> dict[str, str]:
    """Headers every blob answer carries."""
    return {
        DIGEST_HEADER: answer.digest,
        "ETag": f'"{answer.digest}"',
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
        "Cache-Control": "max-age=31536000",
    }


def _start(
    request: web.Request, answer: BlobAnswer, byte_range: ByteRange | None
) -> web.StreamResponse:
    response = web.StreamResponse(status=206 if byte_range else 200, headers=blob_headers(answer))
    if byte_range is not None and answer.size is not None:
        response.headers["Content-Range"] = byte_range.content_range(answer.size)
        response.content_length = byte_range.length
    elif answer.size is not None:
        response.content_length = answer.size
    return response


def _abort(request: web.Request, reason: object) -> None:
    """Cut the connection so the client cannot take a short body as complete."""
    transport = request.transport
    if transport is None or transport.is_closing():
        return  # cut already
    log.warning("aborting %s %s: %s", request.method, request.path, reason)
    transport.abort()


async def send_file(
    request: web.Request, answer: BlobAnswer, handle: int, metrics: Metrics
) -> web.StreamResponse:
    """Send a cached local file (already opened as ``handle``) with sendfile."""
    assert answer.size is not None
    byte_range = parse_range(request.headers.get("Range"), answer.size)
    response = _start(request, answer, byte_range)
    offset = byte_range.start if byte_range else 0
    count = byte_range.length if byte_range else answer.size
    await response.prepare(request)
    transport = request.transport
    if transport is None or count == 0:
        return response
    with os.fdopen(handle, "rb", closefd=False) as file:
        try:
            await asyncio.get_running_loop().sendfile(transport, file, offset, count)
        except NotImplementedError:
            await _copy_chunks(response, file, offset, count)
        except (ConnectionError, RuntimeError) as exc:
            # The client hung up mid-transfer; nothing to tell it.
            log.debug("client left during sendfile: %r", exc)
            return response
    metrics.served("cache", count)
    request[BODY_BYTES] = count
    await response.write_eof()
    return response


async def _copy_chunks(response: web.StreamResponse, file: object, offset: int, count: int) -> None:
    fd = file.fileno()  # type: ignore[attr-defined]
    while count > 0:
        chunk = await asyncio.to_thread(os.pread, fd, min(_FALLBACK_CHUNK, count), offset)
        if not chunk:
            raise StorageError("cached file shrank while being sent")
        await response.write(chunk)
        offset += len(chunk)
        count -= len(chunk)


async def send_stored(
    request: web.Request, answer: BlobAnswer, storage: Storage, metrics: Metrics
) -> web.StreamResponse:
    """Stream a cached object from a backend without local files (S3)."""
    assert answer.size is not None
    assert answer.key is not None
    byte_range = parse_range(request.headers.get("Range"), answer.size)
    offset = byte_range.start if byte_range else 0
    count = byte_range.length if byte_range else answer.size
    chunks = storage.read(answer.key, offset, count)
    return await _send_stream(request, answer, byte_range, chunks, count, "cache", metrics)


async def send_fill(
    request: web.Request, answer: BlobAnswer, metrics: Metrics
) -> web.StreamResponse:
    """Stream a download in progress to one more client, from wherever it has got to."""
    assert answer.fill is not None
    byte_range = None
    if answer.size is not None:
        byte_range = parse_range(request.headers.get("Range"), answer.size)
    start = byte_range.start if byte_range else 0
    end = byte_range.end if byte_range else None
    count = byte_range.length if byte_range else answer.size
    # Cut at once when the download fails, even while a write to a slow client waits.
    chunks = answer.fill.follow(start, end, on_cut=lambda reason: _abort(request, reason))
    return await _send_stream(request, answer, byte_range, chunks, count, "upstream", metrics)


async def _send_stream(
    request: web.Request,
    answer: BlobAnswer,
    byte_range: ByteRange | None,
    chunks: AsyncIterator[bytes],
    count: int | None,
    source: str,
    metrics: Metrics,
) -> web.StreamResponse:
    response = _start(request, answer, byte_range)
    sent = 0
    try:
        await response.prepare(request)
        async for chunk in chunks:
            await response.write(chunk)
            sent += len(chunk)
    except (MirrorError, StorageError) as exc:
        # At once: the fill has failed (or bytes went missing), nothing more may go out.
        _abort(request, exc)
        return response
    except (ConnectionError, RuntimeError) as exc:
        log.debug("client left mid-blob: %r", exc)
        return response
    finally:
        metrics.served(source, sent)
        request[BODY_BYTES] = sent
        # Always, even if the client left before the first byte: a follower
        # holds the fill's memory and spool until it is closed.
        await chunks.aclose()  # type: ignore[attr-defined]
    if count is not None and sent != count:
        _abort(request, f"sent {sent} of {count} bytes")
        return response
    await response.write_eof()
    return response


def open_cached(path: Path) -> int | None:
    """Open a cached file for sending; None if it was evicted since the lookup."""
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
