"""Sending a blob from wherever :class:`mirror.proxy.blobs.BlobStore` found it.

Every answer sets ``Content-Length``, ``Docker-Content-Digest``, ``ETag`` and
``Accept-Ranges`` and answers ``Range`` with 206. When bytes stop coming
(the upstream failed, the digest did not match) after the status line has
gone out, the connection is aborted: the client sees a broken transfer,
never a clean end of a wrong body.

A download in progress goes to a plain-TCP client with ``sendfile`` from its
spool wherever only the spool holds the bytes (:meth:`Follower.pieces`): a
herd of clients following one download then costs the event loop a system
call per span and client, not a copy of every byte.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from typing import assert_never

from aiohttp import web

from mirror.errors import MirrorError
from mirror.metrics import Metrics
from mirror.oci import DIGEST_HEADER, ByteRange, parse_range
from mirror.proxy.blobs import BlobSource, CachedFile, Following, Redirect, StoredBlob
from mirror.proxy.download import SpoolSpan
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
        case CachedFile() if _encrypted(request):
            with source:
                return await _send_read(request, source, metrics)
        case CachedFile():
            with source:
                return await _send_file(request, source, metrics)
        case StoredBlob():
            return await _send_read(request, source, metrics)
        case Redirect():
            raise web.HTTPTemporaryRedirect(source.url, headers=blob_headers(source.digest))
        case Following():
            return await _send_following(request, source, metrics)
    assert_never(source)


def _encrypted(request: web.Request) -> bool:
    """A TLS connection: sendfile cannot encrypt, and asyncio's fallback for it reads 16 KiB
    per worker-thread hop (a cached blob went out at 12 MiB/s); read 256 KiB instead."""
    transport = request.transport
    return transport is not None and transport.get_extra_info("sslcontext") is not None


async def _send_read(
    request: web.Request, source: CachedFile | StoredBlob, metrics: Metrics
) -> web.StreamResponse:
    """Stream a cached blob read in chunks, answering ``Range``."""
    byte_range = parse_range(request.headers.get("Range"), source.size)
    offset, count = _span(byte_range, source.size)
    chunks = source.chunks(offset, count)
    return await _send_stream(request, source, byte_range, chunks, count, "cache", metrics,
                              _SpanSender(request))  # fmt: skip


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
    except (ConnectionError, RuntimeError) as exc:
        # The client hung up mid-transfer; nothing to tell it.
        log.debug("client left during sendfile: %r", exc)
        return response
    metrics.served("cache", count)
    request[BODY_BYTES] = count
    await response.write_eof()
    return response


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
    sender = _SpanSender(request)
    # Cut at once when the download fails, even while a write to a slow client waits.
    follower = source.follow(start, end, on_cut=sender.cut)
    pieces: AsyncIterator[bytes | SpoolSpan] = follower
    if count is not None and not _encrypted(request):
        # Spool spans go out with sendfile: the length is known, so the body
        # needs no chunked framing around them.
        pieces = follower.pieces()
    return await _send_stream(request, source, byte_range, pieces, count, "upstream", metrics,
                              sender)  # fmt: skip


class _SpanSender:
    """Sends spool spans with sendfile; a cut ends the connection and the span in progress."""

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self._sending: asyncio.Future[int] | None = None
        self._cut: MirrorError | None = None

    def cut(self, reason: MirrorError) -> None:
        """The download failed: cut the client now, even in the middle of a span."""
        self._cut = reason
        if self._sending is not None and self._sending.cancel():
            return  # send() aborts the connection once sendfile has let go of it
        _abort(self._request, reason)

    async def send(self, span: SpoolSpan) -> None:
        """Send ``span``; raises ConnectionError when the client left or was cut."""
        transport = self._request.transport
        if self._cut is not None or transport is None or transport.is_closing():
            raise ConnectionResetError("client connection closed")
        loop = asyncio.get_running_loop()
        with os.fdopen(span.fd, "rb", closefd=False) as file:
            # With asyncio's fallback: a spool on a file system without
            # sendfile(2) is read and written instead of failing the client.
            self._sending = asyncio.ensure_future(
                loop.sendfile(transport, file, span.offset, span.count)
            )
            try:
                await self._sending
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if self._cut is not None and (current is None or not current.cancelling()):
                    # Only now: aborting the transport while asyncio's sendfile
                    # held it left the socket registered with the selector after
                    # its close, and the next connection on that descriptor hung.
                    _abort(self._request, self._cut)
                    raise ConnectionAbortedError("cut while sending") from None
                raise  # the handler itself is being cancelled
            finally:
                if not self._sending.done():
                    self._sending.cancel()  # the handler itself was cancelled
                self._sending = None


async def _send_stream(
    request: web.Request,
    source: CachedFile | StoredBlob | Following,
    byte_range: ByteRange | None,
    chunks: AsyncIterator[bytes | SpoolSpan],
    count: int | None,
    where: str,
    metrics: Metrics,
    sender: _SpanSender,
) -> web.StreamResponse:
    """Send ``chunks``: bytes, and spans of a download's spool through ``sender``."""
    response = _start(source.digest, source.size, byte_range)
    sent = 0
    try:
        await response.prepare(request)
        async for piece in chunks:
            if isinstance(piece, SpoolSpan):
                await sender.send(piece)
                sent += piece.count
            else:
                await response.write(piece)
                sent += len(piece)
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
