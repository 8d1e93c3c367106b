"""The ``gc`` and ``verify`` commands: the cache worked on without a server.

Both open the configured backend directly and cover every object in it,
whatever upstreams the configuration names; they report the upstreams it
does not name, so an operator sees that a cache was filled under another
configuration. They may run while a mirror
serves from the same cache: deletions only turn later hits into misses.
The running mirror's index then still counts what was removed until its own
eviction reaches those entries (deleting a missing key is not an error), so
its size gauge may read high until then.
"""

from __future__ import annotations

from dataclasses import dataclass

from mirror.cache.eviction import EvictionReport
from mirror.cache.index import Usage, unconfigured
from mirror.cache.manager import CacheManager, track
from mirror.cache.verify import VerifyReport, verify
from mirror.config import Config
from mirror.metrics import Metrics
from mirror.storage.factory import open_storage


@dataclass(frozen=True, slots=True)
class GcResult:
    """What ``gc`` did."""

    eviction: EvictionReport
    partials: int
    max_size: int
    entries: int
    #: what the cache held, before the pass, of upstreams the configuration does not name
    unconfigured: dict[str, Usage]


async def run_gc(config: Config) -> GcResult:
    """Remove crash leftovers, then evict down to the low watermark."""
    metrics = Metrics()
    backend = await open_storage(config, metrics)
    try:
        partials = await backend.sweep_partials()
        storage = await track(backend, config, metrics)
        others = unconfigured(storage.index, [u.name for u in config.upstreams])
        report = await CacheManager(storage, config, metrics).gc()
        return GcResult(report, partials, config.cache.max_size, len(storage.index), others)
    finally:
        await backend.close()


async def run_verify(config: Config, *, quarantine: bool) -> VerifyReport:
    """Re-hash every blob and manifest in the cache, of every upstream."""
    backend = await open_storage(config, Metrics())
    try:
        return await verify(backend, [u.name for u in config.upstreams], quarantine=quarantine)
    finally:
        await backend.close()
