"""The one wrapper that checks keys, times and counts every backend operation.

Modelled on CNCF distribution's storage driver ``base.go``: it sits directly
on the backend, under every other layer::

    TrackedStorage   (cache/tracked.py)     the LRU index follows every write, delete, hit
      MemoStorage    (storage/memo.py)      small objects answered from memory
        InstrumentedStorage (this module)   key checks, latency, errors
          DiskStorage | S3Storage           the backend

so what it records is the backend's own latency: a manifest answered from
the memo adds no observation. Nobody above it times or counts storage calls.

For every operation it observes ``mirror_storage_operation_duration_seconds``
and, when the backend raises, increments ``mirror_storage_errors_total``, both
labelled with the backend and one of :data:`ACTIONS`. A key that is not there
(:class:`ObjectNotFound`: a read that lost a race with an eviction) is an
answer, not a failure, and is not counted. A streamed read is timed as the
time spent waiting for the backend's chunks, one observation per stream, so a
slow client does not show up as a slow disk. Keys are checked before the
backend sees them (:func:`mirror.storage.base.check_key`); a refused key is a
bug in the caller, not a backend failure, and is not counted either.

The wrapper knows nothing of Prometheus: it reports to a :class:`StorageObserver`
(:class:`mirror.metrics.Metrics` is one).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, TypeVar

from mirror.storage.base import (
    BlobWriter,
    ObjectInfo,
    ObjectNotFound,
    Storage,
    StorageWrapper,
    WriterWrapper,
    check_key,
    check_prefix,
)

T = TypeVar("T")

#: The ``action`` label values, one per operation of the storage protocol.
ACTIONS = (
    "stat", "read", "get", "put", "create", "write", "commit", "abort",
    "delete", "walk", "touch", "redirect", "sweep",
)  # fmt: skip


class StorageObserver(Protocol):
    """Where the wrapper reports (:class:`mirror.metrics.Metrics`)."""

    def storage_operation(self, backend: str, action: str, seconds: float) -> None:
        """One operation took ``seconds``."""
        ...

    def storage_error(self, backend: str, action: str) -> None:
        """One operation failed."""
        ...


class _Recorder:
    """Times and counts the operations of one backend."""

    def __init__(self, backend: str, observer: StorageObserver) -> None:
        self.backend = backend
        self.observer = observer

    @contextmanager
    def failures(self, action: str) -> Iterator[None]:
        """Count an exception of the block as a failed ``action``.

        Neither a missing key nor the end of a stream is a failure.
        """
        try:
            yield
        except (ObjectNotFound, StopAsyncIteration):
            raise
        except Exception:
            self.observer.storage_error(self.backend, action)
            raise

    async def call(self, action: str, operation: Awaitable[T]) -> T:
        """Await ``operation``, recording its latency and any failure under ``action``."""
        started = time.monotonic()
        try:
            with self.failures(action):
                return await operation
        finally:
            self.observer.storage_operation(self.backend, action, time.monotonic() - started)

    async def stream(self, action: str, items: AsyncIterator[T]) -> AsyncIterator[T]:
        """``items``, recording the time spent waiting for them as one operation."""
        waited = 0.0
        try:
            while True:
                started = time.monotonic()
                try:
                    with self.failures(action):
                        item = await anext(items)
                except StopAsyncIteration:
                    return
                finally:
                    waited += time.monotonic() - started
                yield item
        finally:
            self.observer.storage_operation(self.backend, action, waited)
            if isinstance(items, AsyncGenerator):
                await items.aclose()  # a client that hung up: release the file or connection now


class InstrumentedWriter(WriterWrapper):
    """A writer whose write, commit and abort are timed and counted."""

    def __init__(self, inner: BlobWriter, recorder: _Recorder) -> None:
        super().__init__(inner)
        self._recorder = recorder

    async def write(self, *chunks: bytes) -> None:
        await self._recorder.call("write", self.inner.write(*chunks))

    async def extend(self, count: int) -> None:
        await self._recorder.call("write", self.inner.extend(count))

    async def commit(self) -> None:
        await self._recorder.call("commit", self.inner.commit())

    async def abort(self) -> None:
        await self._recorder.call("abort", self.inner.abort())


class InstrumentedStorage(StorageWrapper):
    """Checks every key, then times and counts the backend's answer."""

    def __init__(self, inner: Storage, observer: StorageObserver) -> None:
        super().__init__(inner)
        self._recorder = _Recorder(inner.backend, observer)

    async def stat(self, key: str) -> ObjectInfo | None:
        return await self._recorder.call("stat", self.inner.stat(check_key(key)))

    def local_path(self, key: str) -> Path | None:
        return self.inner.local_path(check_key(key))

    def read(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        return self._recorder.stream("read", self.inner.read(check_key(key), offset, length))

    async def get(self, key: str) -> bytes | None:
        return await self._recorder.call("get", self.inner.get(check_key(key)))

    async def put(self, key: str, data: bytes) -> None:
        await self._recorder.call("put", self.inner.put(check_key(key), data))

    async def writer(self, key: str) -> BlobWriter:
        inner = await self._recorder.call("create", self.inner.writer(check_key(key)))
        return InstrumentedWriter(inner, self._recorder)

    async def delete(self, key: str) -> None:
        await self._recorder.call("delete", self.inner.delete(check_key(key)))

    def walk(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        return self._recorder.stream("walk", self.inner.walk(check_prefix(prefix)))

    async def redirect_url(self, key: str) -> str | None:
        return await self._recorder.call("redirect", self.inner.redirect_url(check_key(key)))

    async def touch(self, key: str) -> None:
        await self._recorder.call("touch", self.inner.touch(check_key(key)))

    async def sweep_partials(self) -> int:
        return await self._recorder.call("sweep", self.inner.sweep_partials())
