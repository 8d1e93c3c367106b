"""The proxy's calls to the cache storage where a failure costs a miss, never the pull.

A cache that cannot answer (S3 down, a disk error) must not stop pulls: a
failed lookup is a miss, a failed write leaves the object uncached, and
either is logged and counted (``mirror_storage_errors_total``). The proxy's
stores make these calls through :class:`CacheIO`, so that rule is kept once.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from mirror.metrics import Metrics
from mirror.storage.base import ObjectInfo, Storage, StorageError

log = logging.getLogger(__name__)


class CacheIO:
    """Storage calls that log and count failures instead of raising them."""

    def __init__(self, storage: Storage, metrics: Metrics) -> None:
        self._storage = storage
        self._metrics = metrics

    async def stat(self, key: str) -> ObjectInfo | None:
        """Size and time of ``key``; None when it is missing or the cache cannot say."""
        try:
            with self._metrics.storage_timer(self._storage.backend, "stat"):
                return await self._storage.stat(key)
        except StorageError as exc:
            self._failed("stat", exc)
            return None

    async def touch(self, key: str) -> None:
        """Record a hit (LRU recency); a failure only loses that."""
        try:
            with self._metrics.storage_timer(self._storage.backend, "touch"):
                await self._storage.touch(key)
        except StorageError as exc:
            log.debug("touch failed: %s", exc)

    async def get(self, key: str) -> bytes | None:
        """A small object; None when it is missing or unreadable."""
        try:
            with self._metrics.storage_timer(self._storage.backend, "get"):
                return await self._storage.get(key)
        except StorageError as exc:
            self._failed("get", exc)
            return None

    async def put(self, key: str, data: bytes) -> None:
        """Store a small object, or leave it uncached."""
        try:
            with self._metrics.storage_timer(self._storage.backend, "put"):
                await self._storage.put(key, data)
        except StorageError as exc:
            self._failed("put", exc)

    async def delete(self, key: str) -> None:
        """Remove an object (a damaged one); a failure leaves it to be found again."""
        try:
            with self._metrics.storage_timer(self._storage.backend, "delete"):
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
        self._metrics.storage_error(self._storage.backend, action)
