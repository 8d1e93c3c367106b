"""Streaming writes into S3: a multipart upload published only on commit.

Bytes collect in a buffer of one part (``part_size``); each full part is
uploaded by a background task, at most :data:`MAX_IN_FLIGHT` at a time, so
the fill that writes is held up only when S3 is slower than the upstream and
memory stays near ``(MAX_IN_FLIGHT + 1) * part_size`` whatever the blob's
size. Every part but the last has exactly ``part_size`` bytes (R2 requires
equal parts). An object smaller than one part never starts a multipart
upload: commit sends it with one PutObject.

Nothing is visible under the key before ``CompleteMultipartUpload`` (or the
PutObject) succeeds, and every failure path aborts the upload, so a failed
fill leaves no object and no orphan upload behind. Only a crash can strand an
upload; :meth:`mirror.storage.s3.S3Storage.sweep_partials` removes those.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections import deque
from pathlib import Path
from typing import Any

from mirror.storage.base import StorageError
from mirror.storage.s3_errors import mapped_errors

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 2


class S3Writer:
    """A partial S3 object; see the module docstring."""

    def __init__(self, client: Any, bucket: str, object_key: str, key: str, part_size: int) -> None:
        self._client = client
        self._bucket = bucket
        self._object_key = object_key
        self._key = key
        self._part_size = part_size
        self._chunks: list[bytes] = []  # the part being collected
        self._buffered = 0
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._pending: deque[asyncio.Task[None]] = deque()
        self._next_part = 1
        self._state = "open"  # open -> committed | aborted

    @property
    def key(self) -> str:
        return self._key

    @property
    def local_path(self) -> Path | None:
        return None  # S3 has no readable local partial; the fill keeps its own spool

    async def write(self, data: bytes) -> None:
        """Buffer ``data``; hand every full part to a background upload."""
        if self._state != "open":
            raise StorageError(f"write to closed writer for {self._key!r}")
        self._chunks.append(data)
        self._buffered += len(data)
        while self._buffered >= self._part_size:
            # Wait for a free upload slot before joining the part: never more
            # than MAX_IN_FLIGHT parts plus the one being collected in memory.
            await self._reap(MAX_IN_FLIGHT - 1)
            await self._send_part(self._take(self._part_size))

    def _take(self, size: int) -> bytes:
        """The first ``size`` buffered bytes as one object, copied once."""
        taken: list[bytes] = []
        need = size
        while need:
            chunk = self._chunks.pop(0)
            if len(chunk) > need:
                chunk, rest = chunk[:need], chunk[need:]
                self._chunks.insert(0, rest)
            taken.append(chunk)
            need -= len(chunk)
        self._buffered -= size
        return b"".join(taken)

    async def commit(self) -> None:
        """Complete the upload (or PutObject a small object); abort on any failure."""
        if self._state != "open":
            raise StorageError(f"commit of closed writer for {self._key!r}")
        try:
            if self._upload_id is None:
                body = self._take(self._buffered)
                with mapped_errors("put", self._key):
                    await self._client.put_object(
                        Bucket=self._bucket, Key=self._object_key, Body=body
                    )
            else:
                if self._buffered:
                    await self._send_part(self._take(self._buffered))
                await self._reap(0)
                await self._complete()
        except BaseException:
            await self.abort()
            raise
        self._state = "committed"

    async def abort(self) -> None:
        """Stop part uploads and abort the multipart upload; a no-op after commit."""
        if self._state != "open":
            return
        self._state = "aborted"
        self._chunks, self._buffered = [], 0
        for task in self._pending:
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        self._pending.clear()
        if self._upload_id is None:
            return
        try:
            with mapped_errors("abort", self._key):
                await self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=self._object_key, UploadId=self._upload_id
                )
        except StorageError as exc:
            # Nothing a caller could do: the start-up sweep removes it later.
            log.warning("could not abort upload %s of %s: %s", self._upload_id, self._key, exc)

    async def _send_part(self, part: bytes) -> None:
        await self._reap(MAX_IN_FLIGHT - 1)
        if self._upload_id is None:
            with mapped_errors("create upload", self._key):
                created = await self._client.create_multipart_upload(
                    Bucket=self._bucket, Key=self._object_key
                )
            self._upload_id = str(created["UploadId"])
        number, self._next_part = self._next_part, self._next_part + 1
        self._pending.append(asyncio.create_task(self._upload_part(number, part)))

    async def _upload_part(self, number: int, part: bytes) -> None:
        with mapped_errors("upload part", self._key):
            answer = await self._client.upload_part(
                Bucket=self._bucket,
                Key=self._object_key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=PartBody(part),
            )
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    async def _reap(self, limit: int) -> None:
        """Wait until at most ``limit`` parts are in flight; raise the first failure."""
        while self._pending and (len(self._pending) > limit or self._pending[0].done()):
            await self._pending.popleft()

    async def _complete(self) -> None:
        parts = sorted(self._parts, key=lambda p: int(p["PartNumber"]))
        with mapped_errors("complete upload", self._key):
            await self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._object_key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": parts},
            )


class PartBody(io.RawIOBase):
    """A read-only, seekable file over one part's bytes that never copies them whole.

    Given bytes, aiohttp hands them to the transport, which copies what the
    socket does not take at once; given a BytesIO, it copies it for a buffer
    view. A plain file object is read and sent in small pieces instead, so a
    part in flight costs its own size only.
    """

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data = data
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._data)}
        self._position = max(0, base[whence] + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        with memoryview(self._data) as view, memoryview(buffer) as target:
            count = max(0, min(len(target), len(self._data) - self._position))
            target[:count] = view[self._position : self._position + count]
        self._position += count
        return count
