"""A blob GET from an upstream, from any offset: size, resume, and how bytes are read.

A download resumed at ``offset`` asks for ``Range: bytes=<offset>-``. The
answer is a 206 whose ``Content-Range`` gives the whole size, or a 200 from an
upstream that ignores ``Range``: then its first ``offset`` bytes, already
received, are read and dropped here. Either way the caller gets the bytes
from ``offset`` on and the blob's whole size.

A broken or silent connection becomes :class:`UpstreamUnavailable`, so the
proxy's resume rules never see aiohttp's exception classes.

:meth:`BlobResponse.detach` hands a plain-HTTP connection's socket to the
caller, who then reads the rest of the body itself (the download splices it
into its spool, :mod:`mirror.storage.splice`): with a ``Content-Length``, no
content coding and no TLS, the body is just the next bytes on the socket.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp

from mirror.errors import UpstreamUnavailable
from mirror.numbers import parse_count
from mirror.upstream.base import DetachedBody
from mirror.upstream.failures import Timeouts, describe_failure

_SKIP_CHUNK = 256 * 1024


class BlobResponse:
    """An upstream's answer to a blob GET from ``offset`` on (see the module doc)."""

    def __init__(
        self, resp: aiohttp.ClientResponse, offset: int, read_size: int, idle_timeout: float
    ) -> None:
        self._resp = resp
        self._idle_timeout = idle_timeout
        # The upstream ignored Range and sends the whole blob again.
        self._skip = offset if resp.status == 200 else 0
        self.total_size = _total_size(resp)
        self._prefix: list[bytes] = []  # read by a detach() that then declined
        _set_read_size(resp, read_size)

    def detach(self, minimum: int) -> DetachedBody | None:
        """The connection's socket, when the rest of the body is at least ``minimum`` raw bytes.

        None when the body cannot be read off the socket directly (TLS, no
        ``Content-Length``, a content coding, bytes to skip) or is shorter:
        then read it with :meth:`chunks`. The socket is the connection's: the
        caller reads exactly :attr:`DetachedBody.remaining` bytes from it and
        must not close it; the connection is closed, never reused, when the
        request ends.
        """
        resp, content = self._resp, self._resp.content
        connection = resp.connection
        length = resp.content_length
        if self._skip or length is None or connection is None or content.exception() is not None:
            return None
        if resp.headers.get("Content-Encoding", "identity").lower() != "identity":
            return None
        if "Transfer-Encoding" in resp.headers:
            return None  # framed by the encoding, not by Content-Length
        transport, protocol = connection.transport, connection.protocol
        if transport is None or protocol is None or transport.get_extra_info("sslcontext"):
            return None
        sock = transport.get_extra_info("socket")
        if sock is None or length - content.total_bytes < minimum:
            return None
        # Whatever aiohttp has read already: each read below may let its parser
        # feed more (what it held back while its buffer was full) and resume
        # the transport, so read until nothing comes, then stop the transport.
        # All of this runs without yielding to the event loop, so the socket
        # is read by nobody else in between.
        while data := content.read_nowait():
            self._prefix.append(data)
        if content.is_eof() or content.exception() is not None:
            return None  # the body was all here already (or broke): chunks() has it
        protocol.pause_reading()  # also stops aiohttp's read timeout
        buffered, self._prefix = self._prefix, []
        protocol.force_close()  # the connection's parser was bypassed: never reuse it
        return DetachedBody(sock.fileno(), buffered, length - content.total_bytes)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The bytes from the offset asked for, as the socket delivered them."""
        content = self._resp.content
        prefix, self._prefix = self._prefix, []
        for chunk in prefix:
            yield chunk
        try:
            while self._skip > 0:
                dropped = await content.read(min(self._skip, _SKIP_CHUNK))
                if not dropped:
                    raise UpstreamUnavailable("upstream download broke off while skipping")
                self._skip -= len(dropped)
            # Whole pieces as the socket delivered them, one at a time: re-cutting
            # them to a fixed size, or joining those that queued up meanwhile
            # (what iter_any does), would copy every byte once more.
            async for chunk, _ in content.iter_chunks():
                if chunk:  # empty at the end of each piece of a chunked answer
                    yield chunk
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as exc:
            timeouts = Timeouts(connect=0, read=self._idle_timeout)
            what = describe_failure(exc, str(self._resp.url), timeouts)
            raise UpstreamUnavailable(f"upstream download broke off: {what}") from exc


def _total_size(resp: aiohttp.ClientResponse) -> int | None:
    """The blob's whole size from a 200 or a 206 answer."""
    if resp.status == 206:
        content_range = resp.headers.get("Content-Range", "")
        return parse_count(content_range.rpartition("/")[2])
    return resp.content_length


def _set_read_size(resp: aiohttp.ClientResponse, size: int) -> None:
    """Let the upstream socket deliver up to ``size`` bytes per read.

    asyncio's selector transport reads 256 KiB at a time; every read becomes
    one chunk through the parser, the download and each follower, so bigger
    reads mean fewer trips through that Python code (TLS transports keep theirs).
    """
    transport = resp.connection.transport if resp.connection is not None else None
    if transport is not None and isinstance(getattr(transport, "max_size", None), int):
        transport.max_size = size  # type: ignore[attr-defined]
