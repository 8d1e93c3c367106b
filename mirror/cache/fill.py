"""One blob download in progress, readable by any number of followers as it grows.

Bytes reach followers from memory while they are fresh: the runner hands
each chunk received from the upstream to :meth:`Fill.receive` and writes it
to the spool later, in batches (:meth:`Fill.persist`). A follower that has
fallen behind what is still held in memory reads the spool instead, where
the bytes sit in the page cache. Either way nothing is copied for a
follower that keeps up, and the disk sees a few large writes instead of
one per chunk.

Integrity: until the digest has been checked (:meth:`Fill.succeed`), no
follower is given the last byte of what it asked for, so a client can never
see a complete body of wrong bytes.
"""

from __future__ import annotations

import asyncio
import bisect
import os
from collections.abc import AsyncIterator

from mirror.errors import MirrorError, UpstreamUnavailable
from mirror.oci import Digest

_READ_CHUNK = 256 * 1024


class Fill:
    """One blob download in progress, readable by followers as it grows."""

    def __init__(self, key: str, digest: Digest) -> None:
        self.key = key
        self.digest = digest
        self.size: int | None = None
        self.written = 0  # bytes received so far: readable by followers
        self.persisted = 0  # bytes of those already in the spool
        self.verified = False
        self.error: MirrorError | None = None
        self.committed = False
        self.started: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._changed = asyncio.Event()
        self._fd: int | None = None
        self._readers = 0
        self._running = True
        # Chunks covering bytes persisted..written, and the offset each starts at.
        self._tail: list[bytes] = []
        self._tail_starts: list[int] = []

    @property
    def done(self) -> bool:
        """Whether the download has ended, verified or failed."""
        return self.verified or self.error is not None

    # ---------------------------------------------------------------- runner side

    def attach_spool(self, fd: int) -> None:
        """The file descriptor followers read from (the fill owns it)."""
        self._fd = fd

    @property
    def spool_fd(self) -> int | None:
        """The spool's descriptor while the fill or a follower still needs it."""
        return self._fd

    def set_size(self, size: int | None) -> None:
        """The size announced by the upstream, once its headers arrived."""
        self.size = size
        if not self.started.done():
            self.started.set_result(size)

    def receive(self, chunk: bytes) -> None:
        """``chunk`` arrived: followers may read it from memory until it is persisted."""
        self._tail.append(chunk)
        self._tail_starts.append(self.written)
        self.written += len(chunk)
        self._notify()

    def persist(self, count: int) -> None:
        """The oldest ``count`` bytes held in memory are now in the spool."""
        self.persisted += count
        # The chunk holding the first byte not yet persisted stays; older ones go.
        keep = bisect.bisect_right(self._tail_starts, self.persisted) - 1
        if keep >= 0 and self._tail_starts[keep] + len(self._tail[keep]) <= self.persisted:
            keep += 1
        if keep > 0:
            del self._tail[:keep], self._tail_starts[:keep]

    def succeed(self) -> None:
        """The digest matched: followers may read the last bytes."""
        self.verified = True
        self._notify()

    def fail(self, error: MirrorError) -> None:
        """Abort the download and every follower."""
        self.error = error
        if not self.started.done():
            self.started.set_exception(error)
            self.started.exception()  # nobody may be waiting: mark it seen
        self._notify()

    def finish(self) -> None:
        """The runner is done with the spool; close it when the last reader leaves."""
        self._running = False
        self._tail.clear()
        self._tail_starts.clear()
        self._release()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _release(self) -> None:
        if not self._running and self._readers == 0 and self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # ---------------------------------------------------------------- follower side

    async def follow(self, start: int, end: int | None) -> AsyncIterator[bytes]:
        """Bytes ``start``..``end`` (inclusive; None: to the end) as they arrive.

        Raises the fill's error if the download fails before the range is
        complete; the last byte of the range waits for the digest check.
        """
        self._readers += 1
        try:
            position = start
            while True:
                limit = self._readable(end)
                if position < limit:
                    data = self._read(position, limit)
                    position += len(data)
                    yield data
                    continue
                if self.error is not None:
                    raise self.error
                if self.verified:
                    return
                await self._changed.wait()
        finally:
            self._readers -= 1
            self._release()

    def _readable(self, end: int | None) -> int:
        """How far a follower asking for bytes up to ``end`` may read now."""
        stop = self.written if end is None else min(self.written, end + 1)
        if self.verified:
            return stop
        # Hold back the final byte of the request until the digest is known.
        last = end if end is not None else (self.size - 1 if self.size is not None else None)
        return stop if last is None else min(stop, last)

    def _read(self, offset: int, limit: int) -> bytes:
        """Bytes from ``offset`` (before ``limit``): from memory, else from the spool."""
        if offset >= self.persisted and self._tail:
            index = bisect.bisect_right(self._tail_starts, offset) - 1
            chunk, begins = self._tail[index], self._tail_starts[index]
            if offset == begins and begins + len(chunk) <= limit:
                return chunk  # the common case: a whole chunk, no copy
            return chunk[offset - begins : limit - begins]
        if self._fd is None:
            raise UpstreamUnavailable("download spool is gone")
        length = min(limit, self.persisted) - offset
        # The bytes were written moments ago and sit in the page cache: a
        # pread here costs microseconds, less than a thread hop.
        return os.pread(self._fd, min(length, _READ_CHUNK), offset)
