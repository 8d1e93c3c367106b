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
from mirror.cache.index import Reconciled, rebuild_index, reconcile_index, unconfigured
from mirror.cache.inventory import PurgeReport, describe, purge
from mirror.cache.pins import Pin, parse_pins
from mirror.cache.runtime_pins import RuntimePins
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
        self.configured_pins = parse_pins(config)
        self.runtime_pins = RuntimePins(storage.inner)  # "_pins/": the index never sees it
        self.evictor = Evictor(
            storage, metrics,
            high_watermark=config.cache.high_watermark,
            low_watermark=config.cache.low_watermark,
            pins=self.configured_pins, busy=busy,
        )  # fmt: skip
        storage.on_stored(self.evictor.check)

    async def load_pins(self) -> None:
        """Read the runtime pins an admin set (before the first eviction pass)."""
        await self.runtime_pins.load()
        self.evictor.set_pins(self.pins())

    async def set_pinned(self, pin: Pin, pinned: bool) -> None:
        """Pin a tag, or unpin it, for good (stored); raises StorageError if not stored."""
        if await self.runtime_pins.set(pin, pinned):
            self.evictor.set_pins(self.pins())

    def pins(self) -> list[Pin]:
        """Every pin eviction honours: configured, then runtime."""
        return [*self.configured_pins, *sorted(self.runtime_pins.pins, key=str)]

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

    async def reindex(self) -> Reconciled:
        """Re-read the cache's listing into the index (after ``gc`` or ``verify`` ran beside us).

        Not during an eviction pass, which works from the index; the budget is
        checked again afterwards, as a commit would.
        """
        async with self.evictor.lock:
            result = await reconcile_index(self.storage, self.storage.index)
        log.info("cache index reconciled with storage: %d entries dropped, %d added",
                 result.removed, result.added)  # fmt: skip
        self.evictor.check()
        return result

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
