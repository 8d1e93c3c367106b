"""Moving a blob's chunks: the next chunk is read (and hashed) while the last one is written.

Reading, hashing and writing one after the other leaves a core idle: file
writes and zstd run in worker threads and ``hashlib`` releases the GIL, so
overlapping them nearly halves a large blob's time on two cores. At most
two chunks are in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from mirror.oci import Digest


async def write_overlapped(
    chunks: AsyncIterator[bytes], write: Callable[[bytes], Awaitable[None]]
) -> None:
    """``write`` every chunk, each while the next is produced; errors of either side propagate."""
    pending: asyncio.Future[None] | None = None
    try:
        async for chunk in chunks:
            if pending is not None:
                await pending
            pending = asyncio.ensure_future(write(chunk))
        if pending is not None:
            await pending
            pending = None
    finally:
        if pending is not None:
            # The producer failed: let the write in flight end before the caller cleans up.
            with contextlib.suppress(Exception):
                await pending


class Hashed:
    """Counts and hashes the chunks that pass through :meth:`chunks`."""

    def __init__(self, digest: Digest, on_bytes: Callable[[int], None]) -> None:
        self.digest = digest
        self.count = 0
        self._hasher = digest.hasher()
        self._on_bytes = on_bytes

    async def chunks(self, source: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """``source``'s chunks, each counted, hashed and reported before it is passed on."""
        async for chunk in source:
            self._hasher.update(chunk)
            self.count += len(chunk)
            self._on_bytes(len(chunk))
            yield chunk

    @property
    def matches(self) -> bool:
        """Whether everything that passed hashes to the digest."""
        return self._hasher.hexdigest() == self.digest.hex
