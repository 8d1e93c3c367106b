"""The storage contract: keys and bytes, nothing about OCI.

Every backend (disk, S3) implements :class:`Storage`. Keys are ``/``-separated
relative paths built only by :mod:`mirror.storage.layout`. A write goes
through a :class:`BlobWriter`: bytes stream into a partial object that no
reader can see, and become visible at ``key`` only on :meth:`BlobWriter.commit`,
atomically. :meth:`BlobWriter.abort` leaves nothing behind. The contract test
suite in ``tests/test_storage_contract.py`` runs against every backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class StorageError(Exception):
    """A backend operation failed (I/O error, S3 unreachable, disk full)."""


class ObjectNotFound(StorageError):
    """The key does not exist (or vanished while being read)."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What :meth:`Storage.stat` and :meth:`Storage.walk` report about a key."""

    key: str
    size: int
    modified: float


class BlobWriter(Protocol):
    """A partial object; visible under its key only after :meth:`commit`."""

    @property
    def key(self) -> str:
        """The key the object will be published under."""
        ...

    @property
    def local_path(self) -> Path | None:
        """A local file holding the bytes written so far, readable while writing.

        The single-flight fill reads followers' bytes from it; a backend
        without one (S3) makes the fill keep its own spool file.
        """
        ...

    def share_spool(self, fd: int | None) -> None:
        """Use the caller's local copy ``fd`` of the bytes instead of one of its own.

        For a backend without :attr:`local_path` (S3): the caller puts every
        byte in ``fd`` at its offset in the object before it hands the same
        bytes to :meth:`write`, and calls this before the first write. ``None``:
        the file refused a write, whose bytes did not all reach it; the
        writer goes on without it. Backends with a local partial ignore this.
        """
        ...

    async def write(self, *chunks: bytes) -> None:
        """Append ``chunks``, in order, to the partial object.

        Several at once spare the caller joining them (see
        :mod:`mirror.storage.vectored`).
        """
        ...

    async def extend(self, count: int) -> None:
        """Append ``count`` bytes that the caller already put in the local copy.

        That is :attr:`local_path` or the spool given to :meth:`share_spool`,
        at the bytes' offsets in the object (a download splices a body
        straight into it, :mod:`mirror.storage.splice`). A writer with
        neither raises :class:`StorageError`.
        """
        ...

    async def commit(self) -> None:
        """Publish the object atomically under :attr:`key`."""
        ...

    async def abort(self) -> None:
        """Discard the partial object; safe to call more than once and after commit."""
        ...


class Storage(Protocol):
    """A small async key/bytes store."""

    @property
    def backend(self) -> str:
        """Backend name for metrics and logs: ``disk`` or ``s3``."""
        ...

    async def stat(self, key: str) -> ObjectInfo | None:
        """Size and modification time of a key, or None when it does not exist."""
        ...

    def local_path(self, key: str) -> Path | None:
        """A local file for ``key`` that may be sent with sendfile, if the backend has one."""
        ...

    def read(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Stream ``length`` bytes (all when None) of ``key`` from ``offset``."""
        ...

    async def get(self, key: str) -> bytes | None:
        """The whole (small) object, or None when it does not exist."""
        ...

    async def put(self, key: str, data: bytes) -> None:
        """Store a small object atomically."""
        ...

    async def writer(self, key: str) -> BlobWriter:
        """Start a streaming write to ``key``."""
        ...

    async def delete(self, key: str) -> None:
        """Remove a key; a missing key is not an error."""
        ...

    def walk(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every committed object whose key starts with ``prefix``."""
        ...

    async def redirect_url(self, key: str) -> str | None:
        """A URL a client may fetch ``key`` from directly, when configured."""
        ...

    async def touch(self, key: str) -> None:
        """Record an access to ``key`` where the backend can keep it cheaply."""
        ...

    async def sweep_partials(self) -> int:
        """Remove partial objects left by a crash; return how many were removed."""
        ...

    async def close(self) -> None:
        """Release connections and handles."""
        ...


def check_key(key: str) -> str:
    """``key`` if it is a safe relative key; :class:`StorageError` otherwise.

    Keys come from :mod:`mirror.storage.layout` only, so a refusal here is a
    bug, stopped before it can name a file outside the cache directory (or an
    object outside the prefix: some S3-compatible servers normalise ``..``).
    Hidden names (a leading ``.``) are the backends' own, such as disk partials.
    """
    parts = key.split("/")
    if key.startswith(".") or "\x00" in key or any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"refusing unsafe key {key!r}")
    return key


def check_prefix(prefix: str) -> str:
    """``prefix`` if :meth:`Storage.walk` may list it: empty, or a safe key, maybe ending in /."""
    if prefix:
        check_key(prefix.removesuffix("/"))
    return prefix


class WriterWrapper:
    """A :class:`BlobWriter` that passes everything to another; wrappers override a step."""

    def __init__(self, inner: BlobWriter) -> None:
        self.inner = inner

    @property
    def key(self) -> str:
        return self.inner.key

    @property
    def local_path(self) -> Path | None:
        return self.inner.local_path

    def share_spool(self, fd: int | None) -> None:
        self.inner.share_spool(fd)

    async def write(self, *chunks: bytes) -> None:
        await self.inner.write(*chunks)

    async def extend(self, count: int) -> None:
        await self.inner.extend(count)

    async def commit(self) -> None:
        await self.inner.commit()

    async def abort(self) -> None:
        await self.inner.abort()


class StorageWrapper:
    """A :class:`Storage` that passes every call to ``inner``.

    The layers of the storage stack (the index tracker, the memo, the
    instrumented wrapper) subclass it and override only what they change, so
    a new storage method is one delegation here, not one per layer.
    """

    def __init__(self, inner: Storage) -> None:
        self.inner = inner

    @property
    def backend(self) -> str:
        return self.inner.backend

    async def stat(self, key: str) -> ObjectInfo | None:
        return await self.inner.stat(key)

    def local_path(self, key: str) -> Path | None:
        return self.inner.local_path(key)

    def read(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        return self.inner.read(key, offset, length)

    async def get(self, key: str) -> bytes | None:
        return await self.inner.get(key)

    async def put(self, key: str, data: bytes) -> None:
        await self.inner.put(key, data)

    async def writer(self, key: str) -> BlobWriter:
        return await self.inner.writer(key)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    def walk(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        return self.inner.walk(prefix)

    async def redirect_url(self, key: str) -> str | None:
        return await self.inner.redirect_url(key)

    async def touch(self, key: str) -> None:
        await self.inner.touch(key)

    async def sweep_partials(self) -> int:
        return await self.inner.sweep_partials()

    async def close(self) -> None:
        await self.inner.close()
