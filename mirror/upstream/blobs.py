"""A blob GET from an upstream, from any offset: size, resume, and how bytes are read.

A download resumed at ``offset`` asks for ``Range: bytes=<offset>-``. The
answer is a 206 whose ``Content-Range`` gives the whole size, or a 200 from an
upstream that ignores ``Range``: then its first ``offset`` bytes, already
received, are read and dropped here. Either way the caller gets the bytes
from ``offset`` on and the blob's whole size.

A broken or silent connection becomes :class:`UpstreamUnavailable`, so the
proxy's resume rules never see aiohttp's exception classes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp

from mirror.errors import UpstreamUnavailable
from mirror.numbers import parse_count

_SKIP_CHUNK = 256 * 1024


class BlobResponse:
    """An upstream's answer to a blob GET from ``offset`` on (see the module doc)."""

    def __init__(self, resp: aiohttp.ClientResponse, offset: int, read_size: int) -> None:
        self._resp = resp
        # The upstream ignored Range and sends the whole blob again.
        self._skip = offset if resp.status == 200 else 0
        self.total_size = _total_size(resp)
        _set_read_size(resp, read_size)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The bytes from the offset asked for, as the socket delivered them."""
        content = self._resp.content
        try:
            while self._skip > 0:
                dropped = await content.read(min(self._skip, _SKIP_CHUNK))
                if not dropped:
                    raise UpstreamUnavailable("upstream download broke off while skipping")
                self._skip -= len(dropped)
            # Whole pieces as the socket delivered them: re-cutting them to a
            # fixed size would copy every byte once more.
            async for chunk in content.iter_any():
                yield chunk
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise UpstreamUnavailable(f"upstream download broke off: {type(exc).__name__}") from exc


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
