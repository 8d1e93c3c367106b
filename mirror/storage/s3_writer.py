"""Streaming writes into S3: a multipart upload published only on commit.

Each full part (``part_size``) is uploaded by a background task straight from
a local file, at most :data:`MAX_IN_FLIGHT` at a time, read from the page
cache in small pieces: no part is ever held in memory, so a download into S3
costs about as much memory as one onto disk. Every part but the last has
exactly ``part_size`` bytes (R2 requires equal parts). An object smaller than
one part never starts a multipart upload: commit sends it with one PutObject.

Where the parts are read from:

- **The caller's spool** (:meth:`S3Writer.share_spool`): a download already
  keeps every byte in a local spool file for its clients, so the writer reads
  the parts from there and writes nothing itself. Neither :meth:`write` nor
  the download it serves ever waits for S3: uploads trail the download by as
  much as S3 needs, on no more local disk than the spool.
- **A ring of our own** otherwise (an import, a verify): a local file of
  :data:`RING_PARTS` slots of one part each, part N in slot N modulo the
  ring, which bounds the local disk used whatever the object's size; a
  write waits for a free slot when S3 falls that far behind.

When the local disk refuses the spool or the ring (full, or not writable),
the writer collects the parts in memory instead, at most ``MAX_IN_FLIGHT +
1`` of them: a full local disk costs memory, never the cached copy in S3.

Nothing is visible under the key before ``CompleteMultipartUpload`` (or the
PutObject) succeeds, and every failure path aborts the upload, so a failed
fill leaves no object and no orphan upload behind. Only a crash can strand an
upload; :meth:`mirror.storage.s3.S3Storage.sweep_partials` removes those. The
ring file is unlinked from the start, so a crash leaves no local file.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import tempfile
from collections import deque
from pathlib import Path
from typing import Any

from mirror.storage.base import StorageError
from mirror.storage.s3_errors import mapped_errors
from mirror.storage.vectored import write_all

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 2
# Parts the ring holds: how far a writer without a shared spool (an import)
# may run ahead of the uploads (64 MiB of local disk at the default part_size).
RING_PARTS = 8


class S3Writer:
    """A partial S3 object; see the module docstring.

    ``ring_dir`` is where the writer makes its ring file when it needs one
    (None: collect the parts in memory).
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        object_key: str,
        key: str,
        part_size: int,
        ring_dir: Path | None,
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._object_key = object_key
        self._key = key
        self._part_size = part_size
        self._ring_dir = ring_dir  # None once the ring was refused or is not needed
        # The local file parts are read from, which the writer owns: its ring,
        # or its own descriptor of the caller's spool. None: collect in memory.
        self._ring: int | None = None
        self._shared = False  # _ring is the caller's spool: every byte already in place
        self._memory: list[bytes] = []  # the part being collected, without a ring
        self._buffered = 0  # bytes of the part being collected
        self._creating: asyncio.Task[str] | None = None  # CreateMultipartUpload -> its id
        self._parts: list[dict[str, Any]] = []
        self._pending: deque[asyncio.Task[None]] = deque()
        self._uploading = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._next_part = 1
        self._state = "open"  # open -> committed | aborted

    @property
    def key(self) -> str:
        return self._key

    @property
    def local_path(self) -> Path | None:
        return None  # S3 has no readable local partial; the fill keeps its own spool

    def share_spool(self, fd: int | None) -> None:
        """Read the parts from the caller's spool ``fd`` (see the module doc).

        The caller puts every byte in ``fd`` at its offset in the object
        before it hands the same bytes to :meth:`write`; call this before the
        first write. ``None``: the spool refused a write, and the bytes of the
        next :meth:`write` did not all reach it: from the part being collected
        on, parts are collected in memory. The writer reads ``fd`` through a
        descriptor of its own, so the caller may close ``fd`` at any time.
        """
        if fd is None:
            if self._shared and self._ring is not None:
                log.warning("spool of %s refused a write; collecting parts in memory", self._key)
                self._leave_ring()
            return
        if self._state != "open" or self._buffered or self._next_part > 1 or self._shared:
            raise StorageError(f"spool shared too late with the writer for {self._key!r}")
        self._close()
        self._ring, self._shared, self._ring_dir = os.dup(fd), True, None

    async def write(self, *chunks: bytes) -> None:
        """Add ``chunks`` to the part being collected; full parts upload in the background."""
        if self._state != "open":
            raise StorageError(f"write to closed writer for {self._key!r}")
        if self._shared:
            await self.extend(sum(map(len, chunks)))  # the caller put them in the spool
            return
        pieces: list[memoryview] = []  # of the part being collected, not yet in the ring
        room = self._part_size - self._buffered
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                taken = view[:room]
                pieces.append(taken)
                room -= len(taken)
                view = view[len(taken) :]
                if room == 0:
                    await self._collect(pieces)
                    pieces = []
                    # Before the next part's bytes go into the ring: its slot must be free.
                    await self._send_part()
                    room = self._part_size
        if pieces:
            await self._collect(pieces)

    async def extend(self, count: int) -> None:
        """``count`` bytes the caller put in the shared spool: parts upload from there."""
        if self._state != "open":
            raise StorageError(f"write to closed writer for {self._key!r}")
        if not self._shared:
            raise StorageError(f"no spool shared with the writer for {self._key!r}")
        while count:
            taken = min(count, self._part_size - self._buffered)
            self._buffered += taken
            count -= taken
            if self._buffered == self._part_size:
                await self._send_part()

    async def _collect(self, pieces: list[memoryview]) -> None:
        """Add ``pieces`` to the part being collected: in the ring while the disk takes it."""
        size = sum(map(len, pieces))
        if self._ring is None and self._ring_dir is not None:
            await self._open_ring(self._ring_dir)
        if self._ring is not None:
            try:
                await asyncio.to_thread(write_all, self._ring, pieces, self._slot_offset())
            except OSError as exc:
                log.warning("local part file of %s refused a write (%s); collecting parts "
                            "in memory", self._key, exc)  # fmt: skip
                self._leave_ring()
            else:
                self._buffered += size
                return
        self._memory.extend(bytes(piece) for piece in pieces)
        self._buffered += size

    async def _open_ring(self, directory: Path) -> None:
        """Make the ring file, on the first write that needs it; refused: go on in memory."""
        self._ring_dir = None  # one attempt
        try:
            self._ring = await asyncio.to_thread(open_ring, directory)
        except OSError as exc:
            log.warning("no local part file for %s (%s); collecting parts in memory",
                        self._key, exc)  # fmt: skip

    def _leave_ring(self) -> None:
        """From now on collect in memory, starting with what the ring holds of this part."""
        assert self._ring is not None
        start = self._slot_offset() - self._buffered
        self._memory = [os.pread(self._ring, self._buffered, start)] if self._buffered else []
        self._close()

    def _slot_offset(self) -> int:
        """Where in the local file the next byte of the part being collected goes."""
        slot = self._next_part - 1
        if not self._shared:
            slot %= RING_PARTS
        return slot * self._part_size + self._buffered

    def _take(self) -> PartBody:
        """The part collected so far (read from its slot, if in the ring); the next starts empty."""
        if self._ring is None:
            data, self._memory = b"".join(self._memory), []
            body = PartBody(data, 0, len(data))
        else:
            body = PartBody(self._ring, self._slot_offset() - self._buffered, self._buffered)
        self._buffered = 0
        return body

    async def commit(self) -> None:
        """Complete the upload (or PutObject a small object); abort on any failure."""
        if self._state != "open":
            raise StorageError(f"commit of closed writer for {self._key!r}")
        try:
            if self._creating is None:
                with self._take() as body, mapped_errors("put", self._key):
                    await self._client.put_object(
                        Bucket=self._bucket, Key=self._object_key, Body=body
                    )
            else:
                if self._buffered:
                    await self._send_part()
                await self._reap(0)
                await self._complete()
        except BaseException:
            await self.abort()
            raise
        self._state = "committed"
        self._close()

    async def abort(self) -> None:
        """Stop part uploads and abort the multipart upload; a no-op after commit."""
        if self._state != "open":
            return
        self._state = "aborted"
        self._buffered, self._memory = 0, []
        for task in self._pending:
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        self._pending.clear()
        self._close()
        if self._creating is None:
            return
        # Not cancelled: a request S3 may already have taken would strand its upload.
        await asyncio.wait([self._creating])
        if self._creating.cancelled() or self._creating.exception() is not None:
            return  # no upload was started
        upload_id = self._creating.result()
        try:
            with mapped_errors("abort", self._key):
                await self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=self._object_key, UploadId=upload_id
                )
        except StorageError as exc:
            # Nothing a caller could do: the start-up sweep removes it later.
            log.warning("could not abort upload %s of %s: %s", upload_id, self._key, exc)

    def _close(self) -> None:
        # Parts still being read hold descriptors of their own (PartBody).
        if self._ring is not None:
            os.close(self._ring)
            self._ring = None
        self._shared = False

    async def _send_part(self) -> None:
        """Hand the part collected to a background upload; wait only for room to collect the next.

        A part not yet uploaded holds its slot of the ring: the next part goes
        into the slot of the part RING_PARTS - 1 before this one, so at most
        RING_PARTS - 2 parts may still be uploading when this one joins them.
        (One more let a lagging S3 get a part overwritten before it was read.)
        In memory, MAX_IN_FLIGHT - 1 may remain, so at most MAX_IN_FLIGHT + 1
        parts are held with the one collected next. From the caller's spool,
        nothing needs room.
        """
        if self._shared:
            await self._reap(len(self._pending))  # only collects failures
        elif self._ring is not None:
            await self._reap(RING_PARTS - 2)
        else:
            await self._reap(MAX_IN_FLIGHT - 1)
        if self._creating is None:
            self._creating = asyncio.create_task(self._create())
        number = self._next_part
        body = self._take()
        self._next_part += 1
        self._pending.append(asyncio.create_task(self._upload_part(number, body)))

    async def _create(self) -> str:
        with mapped_errors("create upload", self._key):
            created = await self._client.create_multipart_upload(
                Bucket=self._bucket, Key=self._object_key
            )
        return str(created["UploadId"])

    async def _upload_id(self) -> str:
        assert self._creating is not None  # started with the first part
        # Shielded: a part's upload being cancelled must not cancel the creation,
        # which abort() waits for to know which upload to abort.
        return await asyncio.shield(self._creating)

    async def _upload_part(self, number: int, body: PartBody) -> None:
        with body:
            upload_id = await self._upload_id()
            async with self._uploading:
                await self._upload(upload_id, number, body)

    async def _upload(self, upload_id: str, number: int, body: PartBody) -> None:
        with mapped_errors("upload part", self._key):
            answer = await self._client.upload_part(
                Bucket=self._bucket,
                Key=self._object_key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
            )
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    async def _reap(self, limit: int) -> None:
        """Wait until at most ``limit`` parts are in flight; raise the first failure."""
        while self._pending and (len(self._pending) > limit or self._pending[0].done()):
            await self._pending.popleft()

    async def _complete(self) -> None:
        upload_id = await self._upload_id()
        parts = sorted(self._parts, key=lambda p: int(p["PartNumber"]))
        with mapped_errors("complete upload", self._key):
            await self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._object_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )


def open_ring(directory: Path) -> int:
    """A new, already unlinked file in ``directory`` for a writer's ring (a blocking call)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, path = tempfile.mkstemp(dir=directory, prefix="s3-parts-")
    os.unlink(path)
    return fd


class PartBody(io.RawIOBase):
    """A read-only, seekable file over one part: ``length`` bytes of ``source`` from ``offset``.

    ``source`` is a file descriptor (the ring) or the part's bytes. A file is
    read with a descriptor of the body's own (a duplicate, closed with the
    body), so the writer may close the ring while an upload that was
    cancelled still reads. Read in small pieces by the HTTP client, a part in
    the ring costs no memory of its own. (Given bytes, aiohttp hands them to
    the transport, which copies what the socket does not take at once; given
    a BytesIO, it copies it for a buffer view: this wrapper copies neither.)
    """

    def __init__(self, source: int | bytes, offset: int, length: int) -> None:
        super().__init__()
        self._fd = os.dup(source) if isinstance(source, int) else None
        self._data = source if isinstance(source, bytes) else b""
        self._offset = offset
        self._length = length
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}
        self._position = max(0, base[whence] + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        if self.closed:  # the descriptor's number may belong to another file by now
            raise ValueError("read of a closed part")
        start = self._offset + self._position
        with memoryview(buffer) as target:
            wanted = max(0, min(len(target), self._length - self._position))
            if self._fd is None:
                target[:wanted] = memoryview(self._data)[start : start + wanted]
                count = wanted
            else:
                count = os.preadv(self._fd, [target[:wanted]], start)
        self._position += count
        return count

    def close(self) -> None:
        if not self.closed and self._fd is not None:
            os.close(self._fd)
        super().close()
