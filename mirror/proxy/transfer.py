"""One download's transfer: from the upstream to its followers, its spool and the cache.

Each chunk received is handed to the :class:`Download` at once (followers
that keep up take it from memory). The chunks are then hashed and written in
batches of at least :data:`_MIN_BATCH` bytes, in worker threads side by side
(``hashlib`` and ``os.pwritev`` release the GIL), to the spool followers fall
back on and to the storage backend's partial object (on disk the partial file
is the spool; for S3 the transfer keeps a spool, and the backend uploads its
parts from it, see :meth:`BlobWriter.share_spool`): whatever arrived while the
previous batch was being hashed and written goes in the next one. So the event
loop only receives and sends, and a cold pull takes about as long as its
slowest stage rather than the sum of them. Batches are hashed one after the
other, in order; the digest is compared once the last one is done.

From a plain-HTTP upstream, once the headers are in, the rest of a body of
at least :data:`_SPLICE_MIN` bytes skips Python: the transfer takes the
connection's socket (:meth:`BlobBody.detach`) and moves the bytes into the
spool with ``splice(2)`` in a thread, hashed from the spool in a second one
(:mod:`mirror.storage.splice`); the loop only hears how far the spool has
got, and the backend's partial object is told of the bytes put in its local
copy (:meth:`BlobWriter.extend`). A splice that breaks is resumed like any
stream; one whose spool refuses a write goes on from memory as below, the
rest fetched through aiohttp.

Time bounds: a read that waits ``fill.idle_timeout`` for a byte breaks the
stream and the download is resumed with ``Range`` (the upstream side of that
is :mod:`mirror.upstream.blobs`). The transfer fails when no byte has arrived
for ``fill.stall_timeout`` (resumes do not restart that clock; waiting for
slow followers does not count) and after ``fill.max_resumes`` resumes in a
row that brought no byte.

Storage failures never fail a transfer that the upstream still delivers:
when the backend refuses a write, the blob is served through uncached; when
the spool refuses one as well (a full disk), the download keeps going from
memory at the pace of its slowest follower (:meth:`Download.make_room`) and
takes no new followers (``on_spool_lost``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from mirror.config import FillConfig
from mirror.errors import CacheUnavailable, DigestMismatch, UpstreamTimeout, UpstreamUnavailable
from mirror.metrics import Metrics
from mirror.proxy.download import Download, FollowersGone
from mirror.storage import splice
from mirror.storage.base import BlobWriter, StorageError
from mirror.storage.vectored import write_all
from mirror.upstream.base import DetachedBody, Upstream

log = logging.getLogger(__name__)

# Reading from the upstream waits for the disk only once this much is pending
# (8 MiB raised the peak RSS of a download into S3 by 37 MiB and saved no CPU).
_MAX_PENDING = 2 * 1024 * 1024
# A batch costs the event loop two thread hops: smaller ones (single 256 KiB
# chunks) spent more loop time on hops than hashing in the loop saved.
_MIN_BATCH = 1024 * 1024
# Shorter bodies are read through aiohttp: two threads and a connection that is
# not reused cost more than splicing saves.
_SPLICE_MIN = 1024 * 1024
# Downloads splicing at once (two threads each); more read through aiohttp.
_MAX_SPLICING = 16


class Transfer:
    """Moves one blob's bytes from the upstream into a :class:`Download`, its spool and the cache.

    ``writer`` is the backend's partial object (None when the backend refused
    to open one); it becomes None when the backend refuses a write.
    ``on_spool_lost`` is called when the spool refuses a write.
    """

    splicing = 0  # transfers splicing now, across the process (see _MAX_SPLICING)

    def __init__(
        self,
        download: Download,
        upstream: Upstream,
        repository: str,
        writer: BlobWriter | None,
        config: FillConfig,
        metrics: Metrics,
        *,
        backend: str,
        on_spool_lost: Callable[[], None],
    ) -> None:
        self.download = download
        self.writer = writer
        self._upstream = upstream
        self._repository = repository
        self._config = config
        self._metrics = metrics
        self._backend = backend  # the storage backend's name, for metrics
        self._on_spool_lost = on_spool_lost
        # Backends without a readable local partial (S3) need a spool of our own.
        self._own_spool = writer is None or writer.local_path is None
        self._hasher = download.digest.hasher()
        self._pending: list[bytes] = []  # received, not yet handed to a batch
        self._pending_size = 0
        self._inflight: asyncio.Future[None] | None = None  # the batch being written
        # Moved on by every byte received, never by a resume: a stalled upstream
        # cannot hold a client longer than stall_timeout past its last byte.
        self._stall = asyncio.timeout(None)
        # False once the kernel refused to splice into this spool (some file systems).
        self._may_splice = config.splice and splice.available()

    # ------------------------------------------------------------------ spool

    def open_spool(self, spool_dir: Path) -> None:
        """Give the download the file its followers read from (the download owns it)."""
        try:
            fd = self._spool_fd(spool_dir)
        except OSError as exc:
            self._metrics.storage_error("disk", "spool")
            self._spool_failed(exc)
            return
        self.download.attach_spool(fd)
        if self._own_spool and self.writer is not None:
            # The backend (S3) uploads its parts from our spool rather than
            # writing a copy of its own: see _write_batch for the order this needs.
            self.writer.share_spool(fd)

    def _spool_fd(self, spool_dir: Path) -> int:
        if not self._own_spool and self.writer is not None and self.writer.local_path is not None:
            # Writable: a spliced body goes straight into it (_splice_body).
            return os.open(self.writer.local_path, os.O_RDWR)
        spool_dir.mkdir(parents=True, exist_ok=True)
        # Unlinked at once: a crash leaves nothing behind.
        fd, path = tempfile.mkstemp(dir=spool_dir, prefix="spool-")
        os.unlink(path)
        return fd

    def _spool_failed(self, exc: BaseException) -> None:
        """Go on from memory; new clients start a download of their own (see the module doc)."""
        if self.download.spooling:
            log.warning("spool of %s failed (%s); following from memory", self.download.key, exc)
            self.download.stop_spooling()
        self._on_spool_lost()

    # --------------------------------------------------------------- transfer

    async def run(self) -> None:
        """Transfer the whole blob and check its size and digest (raises on any failure)."""
        download = self.download
        try:
            async with self._stall:
                self._progressed()  # the first byte, too, must come within stall_timeout
                await self._stream_with_resumes()
        except TimeoutError as exc:
            if not self._stall.expired():
                raise  # fill.total_timeout, handled by the caller
            stall = self._config.stall_timeout
            raise UpstreamTimeout(f"no byte from the upstream for {stall:g}s") from exc
        await self._drain()
        if download.size is not None and download.written != download.size:
            self._metrics.digest_mismatch("blob")
            raise DigestMismatch(
                f"upstream sent {download.written} bytes, announced {download.size}"
            )
        if self._hasher.hexdigest() != download.digest.hex:
            self._metrics.digest_mismatch("blob")
            raise DigestMismatch(f"upstream bytes do not match {download.digest}")

    def _progressed(self) -> None:
        """A byte arrived: the upstream has ``stall_timeout`` seconds for the next one."""
        loop = asyncio.get_running_loop()
        self._stall.reschedule(loop.time() + self._config.stall_timeout)

    async def _stream_with_resumes(self) -> None:
        """Stream the blob, resuming with ``Range`` as long as resumes bring bytes."""
        download = self.download
        fruitless = 0  # resumes in a row that brought no byte
        while True:
            before = download.written
            try:
                await self._stream_once()
            except (UpstreamTimeout, UpstreamUnavailable) as exc:
                if download.written > before:
                    fruitless = 0
                if (
                    isinstance(exc, DigestMismatch | FollowersGone)
                    or download.size is None
                    or fruitless >= self._config.max_resumes
                ):
                    raise
                fruitless += 1
                self._metrics.resumed(self._upstream.name)
                log.info("resuming %s at byte %d after %r", download.digest, download.written, exc)
                continue
            if download.size is None or download.written >= download.size:
                return

    async def _stream_once(self) -> None:
        download = self.download
        async with self._upstream.open_blob(
            self._repository, str(download.digest), download.written,
            idle_timeout=self._config.idle_timeout, read_size=self._config.chunk_size,
        ) as body:  # fmt: skip
            if not download.started.done():
                download.set_size(body.total_size)
            elif body.total_size is not None and body.total_size != download.size:
                raise DigestMismatch("upstream changed the blob's size between requests")
            detached = body.detach(_SPLICE_MIN) if self._splice_possible() else None
            if detached is not None:
                await self._splice_body(detached)
                return
            async for chunk in body.chunks():
                await self._receive(chunk)

    async def _receive(self, chunk: bytes) -> None:
        download = self.download
        if download.size is not None and download.written + len(chunk) > download.size:
            self._metrics.digest_mismatch("blob")
            raise DigestMismatch("upstream sent more bytes than it announced")
        self._progressed()
        download.receive(chunk)  # followers that keep up take it from here
        self._pending.append(chunk)
        self._pending_size += len(chunk)
        await self._spool()
        if not download.spooling:
            await self._make_room()

    # ----------------------------------------------------------------- splice

    def _splice_possible(self) -> bool:
        download = self.download
        return (
            self._may_splice
            and download.spooling
            and download.spool_fd is not None
            and Transfer.splicing < _MAX_SPLICING
        )

    async def _splice_body(self, body: DetachedBody) -> None:
        """The rest of the body off the socket, straight into the spool (``storage.splice``).

        Bytes the upstream's connection had already buffered go the usual way
        first, and are written and hashed before the splice starts at the
        spool's end. When the splice stops early, the bytes it took from the
        socket but could not write go the usual way too, and the next stream
        (a resume) reads through aiohttp if the spool failed.
        """
        for chunk in body.buffered:
            await self._receive(chunk)
        await self._drain()  # every byte so far is in the spool and hashed
        download = self.download
        fd = download.spool_fd
        if not download.spooling or fd is None:
            return  # the spool failed meanwhile; the caller resumes without splicing
        log.debug("splicing %d bytes of %s into the spool", body.remaining, download.digest)
        Transfer.splicing += 1
        try:
            pump = splice.SplicePump(body.fd, fd, download.written, body.remaining,
                                     self._hasher, self._config.idle_timeout)  # fmt: skip
            try:
                pump.start()
                async for count in pump.progress():
                    await self._spooled(count)
            finally:
                await pump.close()
        except splice.HashFailed as exc:
            # The digest can no longer be known: this download cannot be verified.
            raise CacheUnavailable(str(exc)) from exc
        except splice.PeerBroke as exc:
            await self._receive_leftover(exc.leftover)
            raise UpstreamUnavailable(f"upstream download broke off: {exc}") from exc
        except splice.FileRefused as exc:
            await self._spool_refused(exc.cause)
            await self._receive_leftover(exc.leftover)
        except splice.SpliceUnsupported as exc:
            log.warning("cannot splice into the spool (%s); copying instead", exc)
            self._may_splice = False
            await self._receive_leftover(exc.leftover)
        finally:
            Transfer.splicing -= 1

    async def _spooled(self, count: int) -> None:
        """``count`` more bytes are in the spool, hashed."""
        self._progressed()
        self.download.receive_spooled(count)
        self._metrics.fetched(self._upstream.name, count)
        if self.writer is None:
            return
        try:
            await self.writer.extend(count)
        except StorageError as exc:
            # The spool itself still takes the bytes: the download goes on uncached.
            await self._drop_writer(self.writer, exc)

    async def _spool_refused(self, exc: OSError) -> None:
        """The spool refused a write: go on from memory, without caching on local disk."""
        # The local disk refused: our spool, or the disk backend's partial file.
        self._metrics.storage_error("disk", "spool" if self._own_spool else "write")
        if self.writer is not None:
            if self._own_spool:
                self.writer.share_spool(None)  # parts so far are read from the spool
            else:
                # The spool was the backend's partial file: it cannot be completed.
                await abort_quietly(self.writer)
                self.writer = None
        self._spool_failed(exc)

    async def _receive_leftover(self, leftover: bytes) -> None:
        if leftover:
            await self._receive(leftover)

    async def _make_room(self) -> None:
        """Without a spool, read on only as followers free memory (waiting is no stall)."""
        self._stall.reschedule(None)
        await self.download.make_room(self._config.memory_limit, self._config.idle_timeout)
        self._progressed()

    # ---------------------------------------------------------------- batches

    async def _spool(self, final: bool = False) -> None:
        """Start writing the pending bytes once the batch before them is done.

        Waits for that batch only when it is still running and too much is
        pending (or at the end, ``final``); otherwise returns at once. Short of
        :data:`_MIN_BATCH`, the bytes wait for more (followers read them from
        memory meanwhile).
        """
        if self._inflight is not None:
            if not (final or self._inflight.done() or self._pending_size >= _MAX_PENDING):
                return
            task, self._inflight = self._inflight, None
            await task
        if self._pending and (final or self._pending_size >= _MIN_BATCH):
            batch, self._pending, self._pending_size = self._pending, [], 0
            self._inflight = asyncio.ensure_future(self._write_batch(batch))

    async def _drain(self) -> None:
        """Write everything received (two rounds at most)."""
        while self._inflight is not None or self._pending:
            await self._spool(final=True)

    async def settle(self) -> None:
        """Wait for the batch in flight, if any, whatever its outcome."""
        if self._inflight is not None:
            await asyncio.wait([self._inflight])
            if not self._inflight.cancelled():
                self._inflight.exception()  # seen: the failure was already handled
            self._inflight = None

    async def _write_batch(self, batch: list[bytes]) -> None:
        """Hash one batch while it is written to the spool and to the backend.

        The backend's write runs beside the hashing too, except when the
        backend reads our spool (S3): then it follows the spool's write. The
        chunks go to the threads as received, never joined: the kernel
        gathers them (``writev``), and joining cost the loop a copy of every byte.
        """
        size = sum(map(len, batch))
        download = self.download
        self._metrics.fetched(self._upstream.name, size)
        # Batches run one at a time (_spool), so the hasher sees them in order.
        jobs = [asyncio.to_thread(_hash, self._hasher, batch)]
        if self._own_spool and download.spooling and download.spool_fd is not None:
            # The backend reads what we give it from the spool: spool first.
            jobs.append(self._spool_then_store(download.spool_fd, batch, download.persisted))
        else:
            jobs.append(self._store(batch))
        # Wait for every job, even after one failed: no thread may outlive the batch.
        for outcome in await asyncio.gather(*jobs, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome
        if download.spooling:
            download.persist(size)

    async def _spool_then_store(self, fd: int, batch: list[bytes], offset: int) -> None:
        try:
            await asyncio.to_thread(write_all, fd, batch, offset)
        except OSError as exc:
            await self._spool_refused(exc)  # this batch is not (all) in the spool
        await self._store(batch)

    async def _store(self, batch: list[bytes]) -> None:
        if self.writer is None:
            return
        try:
            await self.writer.write(*batch)
        except StorageError as exc:
            await self._drop_writer(self.writer, exc)
            if not self._own_spool:
                self._spool_failed(exc)  # the partial object was the spool

    async def _drop_writer(self, writer: BlobWriter, exc: StorageError) -> None:
        """The backend refused a write: the blob is served through, uncached."""
        log.warning("cache write of %s failed (%s); serving it through", self.download.key, exc)
        self.writer = None
        await abort_quietly(writer)


async def abort_quietly(writer: BlobWriter) -> None:
    """Discard a partial object; a backend that refuses costs nothing more than a leftover."""
    with contextlib.suppress(StorageError):
        await writer.abort()


def _hash(hasher: hashlib._Hash, batch: list[bytes]) -> None:
    """Add ``batch`` to the digest (a worker thread's job: hashlib releases the GIL)."""
    for chunk in batch:
        hasher.update(chunk)
