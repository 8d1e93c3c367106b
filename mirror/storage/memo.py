"""An in-memory copy of small objects (manifests, tag records) in front of a backend.

Every manifest request reads two small objects: the tag record and the
manifest. From S3 that is two round trips per request; from disk, two opens.
:class:`MemoStorage` keeps the small objects it has read or written in a
byte-bounded LRU (cachetools), and forgets a key whenever it is written or
deleted through it. Blobs are never held: they are read as streams or sent
with sendfile, not with :meth:`get`.

Caveat: another process writing the same storage (mirrors sharing a bucket)
does not invalidate this copy. That is safe here: manifests are immutable by
digest, and a tag record is revalidated against the upstream after its TTL
whichever copy is read.
"""

from __future__ import annotations

from cachetools import LRUCache

from mirror.storage.base import BlobWriter, Storage, StorageWrapper, WriterWrapper

# Larger objects are passed through uncached; manifests are at most 4 MiB.
MAX_OBJECT = 4 * 1024 * 1024


class _ForgetOnCommit(WriterWrapper):
    """A writer that drops the memo's copy of its key once the new object is in place."""

    def __init__(self, inner: BlobWriter, memo: LRUCache[str, bytes]) -> None:
        super().__init__(inner)
        self._memo = memo

    async def commit(self) -> None:
        await self.inner.commit()
        self._memo.pop(self.inner.key, None)


class MemoStorage(StorageWrapper):
    """Delegates to ``inner``; answers :meth:`get` from memory when it can."""

    def __init__(self, inner: Storage, max_bytes: int) -> None:
        super().__init__(inner)
        self._memo: LRUCache[str, bytes] = LRUCache(maxsize=max(max_bytes, 1), getsizeof=len)
        self._max_object = min(MAX_OBJECT, max_bytes)

    async def get(self, key: str) -> bytes | None:
        data = self._memo.get(key)
        if data is not None:
            return data
        data = await self.inner.get(key)
        if data is not None:
            self._remember(key, data)
        return data

    async def put(self, key: str, data: bytes) -> None:
        self._memo.pop(key, None)
        await self.inner.put(key, data)
        self._remember(key, data)

    async def delete(self, key: str) -> None:
        self._memo.pop(key, None)
        await self.inner.delete(key)

    async def writer(self, key: str) -> BlobWriter:
        return _ForgetOnCommit(await self.inner.writer(key), self._memo)

    def _remember(self, key: str, data: bytes) -> None:
        if len(data) <= self._max_object:
            self._memo[key] = data

    async def close(self) -> None:
        self._memo.clear()
        await self.inner.close()
