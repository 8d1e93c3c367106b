"""One blob download in progress, readable by any number of followers as it grows.

(:mod:`mirror.proxy.transfer` moves the bytes in; :mod:`mirror.proxy.downloads`
starts downloads and lets clients join them.)

Bytes reach followers from memory while they are fresh: the transfer hands
each chunk received from the upstream to :meth:`Download.receive` and writes it
to the spool later, in batches (:meth:`Download.persist`). A follower that has
fallen behind what is still held in memory reads the spool instead, where
the bytes sit in the page cache. Either way nothing is copied for a
follower that keeps up, and the disk sees a few large writes instead of
one per chunk.

When the spool refuses writes (a full disk), the transfer calls
:meth:`Download.stop_spooling` and the download goes on in memory: bytes already in
the spool are still read from it, newer ones stay in memory until every
follower has taken them. The transfer then waits before reading more from the
upstream while more than a bound is held (:meth:`Download.make_room`), so the
download goes at the pace of its slowest follower and memory stays bounded.
A follower that takes nothing for a while as the download waits for it is
dropped (its client is cut), so one stuck client cannot stop the others.

A follower whose client can be sent a file (:meth:`Follower.pieces`, a
plain-TCP client) is given spans of the spool for bytes that are no longer
(or never were) held in memory, and the route sends them with ``sendfile``:
neither the bytes nor a Python step per chunk pass through the event loop.
A body spliced into the spool (:mod:`mirror.storage.splice`) is never in
memory, so every follower of such a download takes spans.

Integrity: until the digest has been checked (:meth:`Download.succeed`), no
follower is given the last byte of what it asked for, so a client can never
see a complete body of wrong bytes. When the size is not known in advance
(a chunked upstream answer), the last byte received so far is held back.

Liveness: a follower checks the download's error before every read, never
returns an empty chunk, and waits on an event when it has nothing to read,
so a failed download can never make a follower spin.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from mirror.errors import MirrorError, UpstreamUnavailable
from mirror.oci import Digest

_READ_CHUNK = 256 * 1024
# The last blocks read from the spool are kept for other followers at the same
# place: a herd of clients then costs one read of each block, not one per client.
_BLOCK = _READ_CHUNK
_SHARED_BLOCKS = 16
# The largest span of the spool handed out at once (one sendfile call).
_MAX_SPAN = 1024 * 1024
_FELL_BEHIND = "client fell too far behind an uncached download"

OnCut = Callable[[MirrorError], None]


@dataclass(frozen=True, slots=True)
class SpoolSpan:
    """``count`` bytes of the spool file ``fd`` from ``offset``, for the route to send itself.

    ``fd`` stays open while the follower that got the span is open.
    """

    fd: int
    offset: int
    count: int


class Download:
    """One blob download in progress, readable by followers as it grows."""

    def __init__(self, key: str, digest: Digest, repository: str = "") -> None:
        self.key = key
        self.digest = digest
        self.repository = repository  # of the request that started it (the web UI shows it)
        self.started_at = time.time()
        self.size: int | None = None
        self.written = 0  # bytes received so far: readable by followers
        self.persisted = 0  # bytes of those already in the spool
        self.spooling = True  # False once the spool refused a write
        self.verified = False
        self.error: MirrorError | None = None
        self.committed = False
        self.started: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._changed = asyncio.Event()  # new bytes, verified or failed: followers look again
        self._freed = asyncio.Event()  # memory freed or a follower left: the transfer looks again
        self._fd: int | None = None
        self._cursors: set[_Cursor] = set()
        self._running = True
        # Chunks covering (at least) the bytes not in the spool, and the offset each starts at.
        self._tail: list[bytes] = []
        self._tail_starts: list[int] = []
        self._blocks: OrderedDict[int, bytes] = OrderedDict()  # spool blocks, by index

    @property
    def done(self) -> bool:
        """Whether the download has ended, verified or failed."""
        return self.verified or self.error is not None

    @property
    def followers(self) -> int:
        """Clients following the download now."""
        return len(self._cursors)

    @property
    def held(self) -> int:
        """Bytes held in memory for followers."""
        return self.written - self._tail_starts[0] if self._tail else 0

    # ---------------------------------------------------------------- transfer side

    def attach_spool(self, fd: int) -> None:
        """The file descriptor followers read from (the download owns it)."""
        self._fd = fd

    @property
    def spool_fd(self) -> int | None:
        """The spool's descriptor while the download or a follower still needs it."""
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

    def receive_spooled(self, count: int) -> None:
        """``count`` more bytes arrived straight into the spool (nothing held in memory)."""
        self.written += count
        self.persisted += count
        self._notify()

    def persist(self, count: int) -> None:
        """The oldest ``count`` bytes held in memory are now in the spool."""
        self.persisted += count
        self._trim(self.persisted)

    def stop_spooling(self) -> None:
        """The spool refused a write: from now on, bytes past :attr:`persisted` stay in memory."""
        self.spooling = False
        self._trim(self._low_water())

    async def make_room(self, limit: int, patience: float) -> None:
        """Without a spool, wait until the slowest follower is at most ``limit`` bytes behind.

        Memory then holds ``limit`` bytes plus the chunk that follower is in.
        Followers free memory as they read. When none does for ``patience``
        seconds, the slowest are dropped; with no follower left the download
        has nobody to serve and nowhere to go, so this raises.
        """
        while not self.spooling and self.written - self._low_water() > limit:
            self._freed.clear()
            try:
                async with asyncio.timeout(patience):
                    await self._freed.wait()
            except TimeoutError as exc:
                if not self._drop_slowest():
                    raise FollowersGone("no client reads this uncached download") from exc

    def succeed(self) -> None:
        """The digest matched: followers may read the last bytes."""
        self.verified = True
        self._notify()

    def fail(self, error: MirrorError) -> None:
        """Abort the download and every follower (no-op once the bytes were verified)."""
        if self.verified:
            return  # every byte is proven good: followers may finish
        self.error = error
        if not self.started.done():
            self.started.set_exception(error)
            self.started.exception()  # nobody may be waiting: mark it seen
        self._notify()
        for cursor in list(self._cursors):
            cursor.cut(error)

    def finish(self) -> None:
        """The transfer is done; the spool and verified bytes in memory go with the last reader."""
        self._running = False
        if not self.verified:
            self._tail.clear()
            self._tail_starts.clear()
        self._release()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _release(self) -> None:
        if self._running or self._cursors:
            return
        self._tail.clear()
        self._tail_starts.clear()
        self._blocks.clear()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _low_water(self) -> int:
        """The first byte some follower may still need from memory."""
        if self.spooling:
            return self.persisted
        # The spool still serves the bytes before `persisted`. Without followers
        # keep everything after them: a client that was handed this download may
        # not have started reading yet.
        positions = [c.position for c in self._cursors if not c.dropped]
        return max(self.persisted, min(positions)) if positions else self.persisted

    def _trim(self, low: int) -> None:
        """Drop the chunks that end at or before ``low``."""
        keep = bisect.bisect_right(self._tail_starts, low) - 1
        if keep >= 0 and self._tail_starts[keep] + len(self._tail[keep]) <= low:
            keep += 1
        if keep > 0:
            del self._tail[:keep], self._tail_starts[:keep]
            self._freed.set()

    def _drop_slowest(self) -> bool:
        """Drop the followers furthest behind; False when there is none."""
        live = [c for c in self._cursors if not c.dropped]
        if not live:
            return False
        slowest = min(c.position for c in live)
        for cursor in live:
            if cursor.position == slowest:
                cursor.dropped = True
                cursor.cut(UpstreamUnavailable(_FELL_BEHIND))
        self._trim(self._low_water())
        self._notify()
        return True

    # ---------------------------------------------------------------- follower side

    def follow(self, start: int, end: int | None, on_cut: OnCut | None = None) -> Follower:
        """Bytes ``start``..``end`` (inclusive; None: to the end) as they arrive.

        The follower is registered at once (memory it needs is kept from now
        on); close it with :meth:`Follower.aclose` if you stop before the end.
        ``on_cut`` is called at once when the download fails or drops this
        follower, so its client can be cut even while a write to it waits.
        """
        cursor = _Cursor(start, on_cut)
        self._cursors.add(cursor)
        return Follower(self, cursor, end)

    def _leave(self, cursor: _Cursor) -> None:
        self._cursors.discard(cursor)
        if not self.spooling:
            self._trim(self._low_water())
        self._freed.set()
        self._release()

    def _advance(self, cursor: _Cursor, count: int) -> None:
        cursor.position += count
        if not self.spooling:
            self._trim(self._low_water())
            self._freed.set()  # the transfer waits for positions, not for whole chunks

    def _readable(self, end: int | None) -> int:
        """How far a follower asking for bytes up to ``end`` may read now."""
        stop = self.written if end is None else min(self.written, end + 1)
        if self.verified:
            return stop
        # Hold back the final byte of the request until the digest is known;
        # with no size announced, any byte may be the last one.
        if end is not None:
            last = end
        elif self.size is not None:
            last = self.size - 1
        else:
            last = self.written - 1
        return min(stop, last)

    def _read(self, offset: int, limit: int) -> bytes:
        """Bytes from ``offset`` (before ``limit``): from memory, else from the spool.

        Never empty: bytes that can be read from neither raise.
        """
        if self._tail and offset >= self._tail_starts[0]:
            index = bisect.bisect_right(self._tail_starts, offset) - 1
            chunk, begins = self._tail[index], self._tail_starts[index]
            if offset == begins and begins + len(chunk) <= limit:
                return chunk  # the common case: a whole chunk, no copy
            return chunk[offset - begins : limit - begins]
        length = min(limit, self.persisted) - offset
        if self._fd is None or length <= 0:
            raise UpstreamUnavailable(f"bytes from {offset} on are no longer held")
        block = self._block(offset // _BLOCK)
        if block is not None:
            begins = offset - offset % _BLOCK
            if offset == begins and begins + _BLOCK <= limit:
                return block  # the common case for a follower that keeps up: no copy
            return block[offset - begins : min(limit, begins + _BLOCK) - begins]
        try:
            # The bytes were written moments ago and sit in the page cache: a
            # pread here costs microseconds, less than a thread hop.
            data = os.pread(self._fd, min(length, _READ_CHUNK), offset)
        except OSError as exc:
            raise UpstreamUnavailable(f"download spool unreadable: {exc.strerror}") from exc
        if not data:
            raise UpstreamUnavailable(f"download spool ends before byte {offset}")
        return data

    def _span(self, offset: int, limit: int) -> SpoolSpan | None:
        """The bytes from ``offset`` (before ``limit``) that only the spool holds, if any.

        Bytes still held in memory are sent from there: for a follower that
        keeps up with a download read through aiohttp, they cost nothing more.
        """
        if self._fd is None or (self._tail and offset >= self._tail_starts[0]):
            return None
        count = min(limit, self.persisted, offset + _MAX_SPAN) - offset
        return SpoolSpan(self._fd, offset, count) if count > 0 else None

    def _block(self, index: int) -> bytes | None:
        """Spool block ``index``, shared by followers; None until it is whole in the spool."""
        block = self._blocks.get(index)
        if block is not None or (index + 1) * _BLOCK > self.persisted or self._fd is None:
            return block
        try:
            block = os.pread(self._fd, _BLOCK, index * _BLOCK)
        except OSError as exc:
            raise UpstreamUnavailable(f"download spool unreadable: {exc.strerror}") from exc
        if len(block) != _BLOCK:
            raise UpstreamUnavailable(f"download spool ends before byte {(index + 1) * _BLOCK}")
        self._blocks[index] = block
        if len(self._blocks) > _SHARED_BLOCKS:
            self._blocks.popitem(last=False)
        return block


class FollowersGone(UpstreamUnavailable):
    """A download held in memory has no follower left to take its bytes: it ends."""


class _Cursor:
    """Where one follower has got to."""

    __slots__ = ("dropped", "on_cut", "position")

    def __init__(self, position: int, on_cut: OnCut | None) -> None:
        self.position = position
        self.dropped = False
        self.on_cut = on_cut

    def cut(self, reason: MirrorError) -> None:
        """Tell the follower's owner, once, that it will get no more bytes."""
        if self.on_cut is not None:
            on_cut, self.on_cut = self.on_cut, None
            on_cut(reason)


class Follower:
    """An async iterator over one follower's bytes; see :meth:`Download.follow`."""

    def __init__(self, download: Download, cursor: _Cursor, end: int | None) -> None:
        self._download = download
        self._cursor = cursor
        self._end = end
        self._open = True

    def __aiter__(self) -> Follower:
        return self

    async def __anext__(self) -> bytes:
        try:
            limit = await self._limit()
            if limit is None:
                raise StopAsyncIteration
            return self._take(limit)
        except BaseException:
            await self.aclose()
            raise

    async def pieces(self) -> AsyncGenerator[bytes | SpoolSpan, None]:
        """Like iterating the follower, but with spans of the spool for bytes only it holds.

        For a client that can be sent a file. Closes the follower when it
        ends, however it ends.
        """
        download, cursor = self._download, self._cursor
        try:
            while (limit := await self._limit()) is not None:
                span = download._span(cursor.position, limit)
                if span is None:
                    yield self._take(limit)
                    continue
                download._advance(cursor, span.count)
                yield span
        finally:
            await self.aclose()

    async def _limit(self) -> int | None:
        """How far this follower may read, once there is something to read; None: done."""
        download, cursor = self._download, self._cursor
        while self._open:
            # Checked before every read: after a failure nothing more goes out.
            if download.error is not None:
                raise download.error
            if cursor.dropped:
                raise UpstreamUnavailable(_FELL_BEHIND)
            limit = download._readable(self._end)
            if cursor.position < limit:
                return limit
            if download.verified:
                break
            await download._changed.wait()
        return None

    def _take(self, limit: int) -> bytes:
        """The next bytes before ``limit``, from memory or the spool."""
        data = self._download._read(self._cursor.position, limit)
        self._download._advance(self._cursor, len(data))
        return data

    async def aclose(self) -> None:
        """Stop following: the download no longer keeps bytes for this follower."""
        if self._open:
            self._open = False
            self._download._leave(self._cursor)
