"""Blobs: from the cache, else from the one download of each blob.

:meth:`BlobStore.get` answers with a :data:`BlobSource`, a closed union of
where the bytes come from, so a route sends them without ever seeing a
storage key or a file descriptor:

* :class:`CachedFile`: a cached blob in a local file, already open;
* :class:`StoredBlob`: a cached blob in a backend without local files (S3),
  streamed;
* :class:`Redirect`: a cached blob the client fetches from the backend
  itself (S3 presigned URLs, when configured);
* :class:`Following`: a blob being downloaded, followed from any offset.

:meth:`BlobStore.head` answers a ``HEAD`` with a :class:`BlobHead`.

A cache hit touches the key (LRU recency). On disk the file is opened before
anything is sent: an eviction after that costs nothing (an unlinked file stays
readable through its descriptor), and one between the lookup and the open
makes the request a miss like any other.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType

from mirror.errors import CacheUnreadable
from mirror.oci import Digest
from mirror.proxy.cache_io import CacheIO
from mirror.proxy.download import Download, Follower, OnCut
from mirror.proxy.downloads import Downloads
from mirror.routing import Target
from mirror.storage import layout
from mirror.storage.base import Storage, StorageError

_READ_CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class BlobHead:
    """What a ``HEAD`` answers: the size, when known."""

    digest: str
    size: int | None
    result: str  # hit or miss


class CachedFile:
    """A cached blob in a local file, opened before anything could evict it; close it after."""

    result = "hit"

    def __init__(self, digest: str, size: int, fd: int) -> None:
        self.digest = digest
        self.size = size
        self._fd = fd

    def __enter__(self) -> CachedFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        os.close(self._fd)

    async def sendfile(self, transport: asyncio.WriteTransport, offset: int, count: int) -> None:
        """Send ``count`` bytes from ``offset`` with sendfile.

        Raises NotImplementedError where the transport cannot (then use :meth:`chunks`).
        """
        with os.fdopen(self._fd, "rb", closefd=False) as file:
            await asyncio.get_running_loop().sendfile(transport, file, offset, count)

    async def chunks(self, offset: int, count: int) -> AsyncIterator[bytes]:
        """``count`` bytes from ``offset``, read in worker threads."""
        while count > 0:
            chunk = await asyncio.to_thread(os.pread, self._fd, min(_READ_CHUNK, count), offset)
            if not chunk:
                raise CacheUnreadable("cached file shrank while being sent")
            yield chunk
            offset += len(chunk)
            count -= len(chunk)


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """A cached blob in a backend without local files: stream it with :meth:`chunks`."""

    digest: str
    size: int
    read: Callable[[int, int], AsyncIterator[bytes]]  # (offset, count) -> bytes
    result: str = "hit"

    async def chunks(self, offset: int, count: int) -> AsyncIterator[bytes]:
        """``count`` bytes from ``offset``."""
        try:
            async for chunk in self.read(offset, count):
                yield chunk
        except StorageError as exc:
            raise CacheUnreadable(f"cached blob unreadable: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Redirect:
    """A cached blob the client fetches from ``url`` itself."""

    digest: str
    size: int
    url: str
    result: str = "hit"


@dataclass(frozen=True, slots=True)
class Following:
    """A blob being downloaded: every byte is checked before the last one goes out."""

    digest: str
    size: int | None  # None: the upstream announced no size
    download: Download
    result: str = "miss"

    def follow(self, start: int, end: int | None, on_cut: OnCut) -> Follower:
        """Bytes ``start``..``end`` (inclusive; None: to the end) as they arrive.

        ``on_cut`` is called at once if the download fails; close the follower
        when done (see :meth:`Download.follow`).
        """
        return self.download.follow(start, end, on_cut)


BlobSource = CachedFile | StoredBlob | Redirect | Following


class BlobStore:
    """Finds blobs in the cache, or starts (or joins) their download."""

    def __init__(self, storage: Storage, downloads: Downloads, *, redirect: bool) -> None:
        self._storage = storage
        self._cache = CacheIO(storage)
        self._downloads = downloads
        self._redirect = redirect

    async def head(self, target: Target, digest: Digest) -> BlobHead:
        """The blob's size: cached, from its running download, or from an upstream HEAD."""
        key = layout.blob_key(target.upstream.name, digest)
        info = await self._cache.stat(key)
        if info is not None:
            await self._cache.touch(key)
            return BlobHead(str(digest), info.size, "hit")
        download = self._downloads.running(key)
        if download is not None:
            return BlobHead(str(digest), await asyncio.shield(download.started), "miss")
        size = await target.upstream.head_blob(target.repository, str(digest))
        return BlobHead(str(digest), size, "miss")

    async def get(self, target: Target, digest: Digest) -> BlobSource:
        """Where to send the blob from; a miss starts or joins its download."""
        key = layout.blob_key(target.upstream.name, digest)
        info = await self._cache.stat(key)
        if info is not None:
            await self._cache.touch(key)
            cached = await self._cached(str(digest), key, info.size)
            if cached is not None:
                return cached
            # Evicted between the lookup and the open: a miss like any other.
        download = self._downloads.join(key) or self._downloads.start(
            target.upstream, target.repository, digest, key
        )
        # Shielded: a client that leaves must not cancel what every follower waits for.
        return Following(str(digest), await asyncio.shield(download.started), download)

    async def _cached(self, digest: str, key: str, size: int) -> BlobSource | None:
        path = self._storage.local_path(key)
        if path is not None:
            try:
                return CachedFile(digest, size, os.open(path, os.O_RDONLY))
            except FileNotFoundError:
                return None
        if self._redirect:
            url = await self._storage.redirect_url(key)
            if url is not None:
                return Redirect(digest, size, url)
        return StoredBlob(
            digest, size, lambda offset, count: self._storage.read(key, offset, count)
        )
