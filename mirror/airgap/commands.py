"""The ``export`` and ``import`` commands over the configured cache (disk or S3).

Both open the backend the way the server and ``gc`` do
(:func:`mirror.storage.factory.open_storage`), so a mirror may keep serving
from the same cache: export reads committed objects only, and import
publishes each object atomically, through the storage writer's commit.

An import first sweeps the partial objects whose writer died (what the
server does at start; an interrupted import's partial goes there), then
rebuilds the cache index so that the budget applies: before anything is
written, :func:`check_budget` refuses an import that does not fit the budget
beside the pinned images, or that would make the cache evict images it
holds unless ``allow_evict``. Evicting (when allowed) is the cache's own
pass, which never takes pinned images, and waits for the import's end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mirror.airgap.cache_content import CacheContent
from mirror.airgap.errors import BudgetExceeded, CacheFailed
from mirror.airgap.export import ExportResult, export_layout
from mirror.airgap.importer import ImportOptions, ImportReport, import_layout
from mirror.airgap.names import Defaults
from mirror.airgap.reader import Layout, open_layout
from mirror.airgap.selection import Selection, select_images
from mirror.cache.manager import CacheManager, track
from mirror.cache.pins import parse_pins, pinned_keys
from mirror.cache.tracked import TrackedStorage
from mirror.config import Config
from mirror.metrics import Metrics
from mirror.progress import Reporter
from mirror.storage.base import StorageError
from mirror.storage.factory import open_storage


@dataclass
class ExportRun:
    """An export, and the named images the cache did not hold."""

    result: ExportResult
    unmatched: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Whether every image asked for was exported."""
        return not self.unmatched and not self.result.summary.skipped


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """What ``registry-mirror export`` was asked."""

    dest: str
    selection: Selection
    since: str | None = None
    referrers: bool = True
    form: str | None = None


async def run_export(config: Config, request: ExportRequest, reporter: Reporter) -> ExportRun:
    """Export the selected images of the configured cache to ``request.dest``."""
    backend = await open_storage(config, Metrics())
    try:
        source = CacheContent(backend, [u.name for u in config.upstreams])
        selected = await select_images(source.images(), request.selection)
        for name in selected.unmatched:
            reporter.item(name, "skipped", "no such tag in the cache")
        result = await export_layout(
            source, selected.images, request.dest, reporter, since=request.since,
            referrers=request.referrers, form=request.form,
        )  # fmt: skip
        return ExportRun(result, selected.unmatched)
    finally:
        await backend.close()


@dataclass(frozen=True, slots=True)
class ImportRequest:
    """What ``registry-mirror import`` was asked."""

    source: str
    defaults: Defaults = field(default_factory=Defaults)
    allow_evict: bool = False
    spool_dir: Path | None = None


async def run_import(config: Config, request: ImportRequest, reporter: Reporter) -> ImportReport:
    """Import the layout at ``request.source`` into the configured cache."""
    metrics = Metrics()
    backend = await open_storage(config, metrics)
    try:
        await backend.sweep_partials()
        storage = await track(backend, config, metrics)
        manager = CacheManager(storage, config, metrics)
        try:
            layout = open_layout(request.source, spool_dir=request.spool_dir)
            report = await import_into_cache(storage, config, layout, request, reporter)
            await manager.evictor.settled()
        finally:
            await manager.close()
        return report
    finally:
        await backend.close()


async def import_into_cache(
    storage: TrackedStorage,
    config: Config,
    layout: Layout,
    request: ImportRequest,
    reporter: Reporter,
) -> ImportReport:
    """Import ``layout`` (closed at the end) into a tracked cache: the command's, or a mirror's."""

    async def admit(incoming: int) -> None:
        await check_budget(storage, config, incoming, allow_evict=request.allow_evict)

    sink = CacheContent(storage, [u.name for u in config.upstreams])
    options = ImportOptions(config, request.defaults, datetime.now(UTC), admit)
    try:
        return await import_layout(layout, sink, options, reporter)
    except StorageError as exc:  # blobs are refused one by one; this is a manifest or a tag
        raise CacheFailed(f"the cache refused a write: {exc}") from None
    finally:
        await layout.close()


async def check_budget(
    storage: TrackedStorage, config: Config, incoming: int, *, allow_evict: bool
) -> None:
    """Refuse, before anything is written, an import the budget cannot take as asked."""
    limit = config.cache.max_size
    if not limit:
        return
    # Past the high watermark an eviction pass starts: that is where an import starts to cost.
    mark = int(config.cache.high_watermark * limit)
    keys = await pinned_keys(storage, parse_pins(config))
    pinned = sum(entry.size for key in keys if (entry := storage.index.get(key)) is not None)
    if pinned + incoming > mark:
        raise BudgetExceeded(
            f"the import needs {incoming} bytes, more than the cache budget takes beside its "
            f"{pinned} pinned bytes (cache.max_size {limit}, eviction from {mark} bytes): "
            "raise cache.max_size or import fewer images"
        )
    held = storage.index.size
    if held + incoming > mark and not allow_evict:
        raise BudgetExceeded(
            f"the import needs {incoming} bytes; the cache holds {held} of its budget "
            f"{limit} and evicts from {mark} bytes, so it would evict about "
            f"{held + incoming - int(config.cache.low_watermark * limit)} bytes of cached "
            "images: pass --allow-evict (pinned images are never evicted), or raise "
            "cache.max_size"
        )
