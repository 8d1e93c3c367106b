"""The size-bounded cache as one object: tracked storage, index, eviction, purge.

:func:`track` wraps a backend and rebuilds the index from it; then
:class:`CacheManager` adds the eviction policy once the fills that it must
leave alone exist. The app, the admin API and the ``gc`` command all go
through it.
"""

from __future__ import annotations

import logging
from typing import Any

from mirror.cache.eviction import Busy, EvictionReport, Evictor
from mirror.cache.index import rebuild_index, unconfigured
from mirror.cache.inventory import PurgeReport, describe, purge
from mirror.cache.pins import parse_pins
from mirror.cache.tracked import TrackedStorage
from mirror.config import Config
from mirror.metrics import Metrics
from mirror.oci import Digest
from mirror.storage.base import Storage

log = logging.getLogger(__name__)


async def track(storage: Storage, config: Config, metrics: Metrics) -> TrackedStorage:
    """``storage`` wrapped so the index follows it, with the index rebuilt from it."""
    index = await rebuild_index(storage, config.cache.max_size, metrics)
    log.info("cache holds %d objects, %d bytes", len(index), index.size)
    for upstream, usage in unconfigured(index, [u.name for u in config.upstreams]).items():
        log.info(
            "cache holds %d objects (%d bytes) of upstream %s, which the configuration does "
            "not name: they count toward the budget and are evicted as they age",
            usage.objects, usage.bytes, upstream,
        )  # fmt: skip
    return TrackedStorage(storage, index)


class CacheManager:
    """Budget enforcement, listing and purging for one tracked storage."""

    def __init__(
        self, storage: TrackedStorage, config: Config, metrics: Metrics, busy: Busy | None = None
    ) -> None:
        self.storage = storage
        self.upstreams = [u.name for u in config.upstreams]
        self.evictor = Evictor(
            storage, metrics,
            high_watermark=config.cache.high_watermark,
            low_watermark=config.cache.low_watermark,
            pins=parse_pins(config), busy=busy,
        )  # fmt: skip
        storage.on_stored(self.evictor.check)

    def start(self) -> None:
        """Enforce the budget at once if the cache starts over it."""
        self.evictor.check()

    async def gc(self) -> EvictionReport:
        """Evict down to the low watermark now, if the cache is above it."""
        return await self.evictor.enforce(force=True)

    async def describe(self, upstream: str | None, repository: str | None) -> dict[str, Any]:
        """The admin listing, for one upstream or all."""
        upstreams = [upstream] if upstream is not None else self.upstreams
        return await describe(self.storage, upstreams, repository)

    async def purge(
        self,
        upstream: str,
        repository: str | None,
        tag: str | None,
        digest: Digest | None,
    ) -> PurgeReport:
        """Remove a tag, repository or digest; never at the same time as an eviction pass."""
        async with self.evictor.lock:
            return await purge(self.storage, upstream, repository, tag, digest)

    async def close(self) -> None:
        """Stop a running eviction pass."""
        await self.evictor.close()
