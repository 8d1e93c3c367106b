"""The proxy's calls to the cache storage where a failure costs a miss, never the pull.

A cache that cannot answer (S3 down, a disk error) must not stop pulls: a
failed lookup is a miss, a failed write leaves the object uncached, and
either is logged (the instrumented storage below has already counted it in
``mirror_storage_errors_total``). The proxy's stores make these calls
through :class:`CacheIO`, so that rule is kept once.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from mirror.storage.base import ObjectInfo, Storage, StorageError

log = logging.getLogger(__name__)


class CacheIO:
    """Storage calls that log failures (the instrumented storage counts them) instead of raising."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    async def stat(self, key: str) -> ObjectInfo | None:
        """Size and time of ``key``; None when it is missing or the cache cannot say."""
        try:
            return await self._storage.stat(key)
        except StorageError as exc:
            self._failed("stat", exc)
            return None

    async def touch(self, key: str) -> None:
        """Record a hit (LRU recency); a failure only loses that."""
        try:
            await self._storage.touch(key)
        except StorageError as exc:
            log.debug("touch failed: %s", exc)

    async def get(self, key: str) -> bytes | None:
        """A small object; None when it is missing or unreadable."""
        try:
            return await self._storage.get(key)
        except StorageError as exc:
            self._failed("get", exc)
            return None

    async def put(self, key: str, data: bytes) -> None:
        """Store a small object, or leave it uncached."""
        try:
            await self._storage.put(key, data)
        except StorageError as exc:
            self._failed("put", exc)

    async def delete(self, key: str) -> None:
        """Remove an object (a damaged one); a failure leaves it to be found again."""
        try:
            await self._storage.delete(key)
        except StorageError as exc:
            self._failed("delete", exc)

    async def walk(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """The objects under ``prefix``; ends early (as if there were no more) on a failure."""
        try:
            async for info in self._storage.walk(prefix):
                yield info
        except StorageError as exc:
            self._failed("walk", exc)

    def _failed(self, action: str, exc: StorageError) -> None:
        log.warning("storage %s failed: %s", action, exc)
