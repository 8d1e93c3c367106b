"""A storage wrapper that keeps the cache index current.

The pull path reads and writes through :class:`TrackedStorage`, so the index
sees every commit and put (blobs from fills, manifests and tag records from
:class:`mirror.proxy.manifests.ManifestStore`), every delete, and every hit:
``touch`` (the blob hit path calls it) and ``get`` of a manifest or tag
record. Nothing in the pull path has to remember to tell the index.

It also counts readers of streamed objects. Eviction must not delete an
object a client is receiving. On disk that is safe anyway: a blob is sent
with sendfile from a descriptor opened before sending, and an unlinked file
stays readable through it. A backend without local files (S3) streams with
:meth:`Storage.read`; while such a stream is open the key is marked busy and
eviction passes it over.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable

from mirror.cache.index import CacheIndex
from mirror.storage.base import BlobWriter, Storage, StorageWrapper, WriterWrapper

Listener = Callable[[], None]
KeyListener = Callable[[str], None]


class TrackedWriter(WriterWrapper):
    """A :class:`BlobWriter` that records the committed object in the index."""

    def __init__(self, inner: BlobWriter, storage: TrackedStorage) -> None:
        super().__init__(inner)
        self._storage = storage
        self._written = 0

    async def write(self, *chunks: bytes) -> None:
        await self.inner.write(*chunks)
        self._written += sum(map(len, chunks))

    async def extend(self, count: int) -> None:
        await self.inner.extend(count)
        self._written += count

    async def commit(self) -> None:
        await self.inner.commit()
        self._storage.stored(self.inner.key, self._written)


class TrackedStorage(StorageWrapper):
    """Delegates to ``inner`` and reports writes, deletes and hits to ``index``."""

    def __init__(self, inner: Storage, index: CacheIndex) -> None:
        super().__init__(inner)
        self.index = index
        self._readers: Counter[str] = Counter()
        self._listeners: list[Listener] = []
        self._key_listeners: list[KeyListener] = []

    def on_stored(self, listener: Listener) -> None:
        """Call ``listener`` after every write (eviction checks the budget there)."""
        self._listeners.append(listener)

    def on_change(self, listener: KeyListener) -> None:
        """Call ``listener(key)`` after every write and delete of ``key`` (the UI's catalog)."""
        self._key_listeners.append(listener)

    def stored(self, key: str, size: int) -> None:
        """Record an object committed at ``key``."""
        self.index.add(key, size)
        self._changed(key)
        for listener in self._listeners:
            listener()

    def _changed(self, key: str) -> None:
        for listener in self._key_listeners:
            listener(key)

    def is_reading(self, key: str) -> bool:
        """Whether a client is streaming ``key`` right now."""
        return self._readers[key] > 0

    async def read(
        self, key: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        self._readers[key] += 1
        try:
            async for chunk in self.inner.read(key, offset, length):
                yield chunk
        finally:
            self._readers[key] -= 1
            if self._readers[key] <= 0:
                del self._readers[key]

    async def get(self, key: str) -> bytes | None:
        data = await self.inner.get(key)
        if data is not None and key in self.index:
            await self.touch(key)  # a manifest or tag record hit
        return data

    async def put(self, key: str, data: bytes) -> None:
        await self.inner.put(key, data)
        self.stored(key, len(data))

    async def writer(self, key: str) -> TrackedWriter:
        return TrackedWriter(await self.inner.writer(key), self)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)
        self.index.remove(key)
        self._changed(key)

    async def touch(self, key: str) -> None:
        self.index.touch(key)
        await self.inner.touch(key)
