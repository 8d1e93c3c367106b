"""Import an OCI image layout into the cache, every object checked before it is published.

The order makes a half-done import harmless and a repeated one free:

1. ``index.json`` and every manifest are read and checked
   (:mod:`mirror.airgap.layout_graph`); an entry whose manifests fail, or
   whose name cannot be mapped, is refused by name, the others go on.
2. An incremental layout whose base this cache lacks is refused as a whole,
   before anything is written (:class:`~mirror.airgap.errors.BaseMissing`).
3. Blobs the cache lacks stream from the layout into the sink's writers,
   hashed on the way; a writer is committed only when size and digest
   match, and aborted otherwise. Blobs already there are not read at all
   from a directory (skipped over in a stream).
4. Only then, for each entry whose every object is present and checked:
   its manifests (children first), then its tag record, "confirmed" at
   export time, unless the cache has a newer confirmation.

An interrupted import has published only whole, verified objects; a rerun
finds them and continues with the rest.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mirror.airgap.content import ImportSink, TagEntry, tag_needs_update
from mirror.airgap.descriptors import parse_index
from mirror.airgap.errors import BaseMissing
from mirror.airgap.layout_graph import LayoutGraph, Root
from mirror.airgap.names import Defaults, parse_time
from mirror.airgap.reader import Layout, LayoutBlob
from mirror.airgap.streams import Hashed, write_overlapped
from mirror.airgap.summary import ExportSummary
from mirror.config import Config
from mirror.oci import Digest
from mirror.progress import Reporter
from mirror.storage.base import BlobWriter, StorageError

# How many damaged objects an image's refusal names before "and N more".
_NAMED = 3


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """How entries are named, and the confirmation time of a layout that states none."""

    config: Config
    defaults: Defaults
    #: for tags of a layout made by another tool (no confirmation time in it)
    confirmed: datetime
    #: told the bytes the import will write before it writes any; raises to refuse
    #: (the cache budget, :class:`~mirror.airgap.errors.BudgetExceeded`)
    admit: Callable[[int], Awaitable[None]] | None = None


@dataclass
class ImageOutcome:
    """What the import did with one ``index.json`` entry."""

    reference: str
    digest: str
    #: ``imported``, ``unchanged`` (everything was there) or ``refused``
    status: str
    reason: str = ""


@dataclass
class ImportReport:
    """Everything an import did, for the command's output and ``--json``."""

    layout: str
    images: list[ImageOutcome] = field(default_factory=list)
    blobs_written: int = 0
    bytes_written: int = 0
    blobs_present: int = 0
    manifests_written: int = 0
    tags_written: int = 0
    #: object digest -> what is wrong with it
    damaged: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every entry was imported (or already there) and nothing was damaged."""
        return not self.damaged and all(image.status != "refused" for image in self.images)

    def to_json(self) -> dict[str, Any]:
        """The machine-readable summary."""
        return {
            "layout": self.layout,
            "ok": self.ok,
            "images": [vars(image) for image in self.images],
            "blobs_written": self.blobs_written,
            "bytes_written": self.bytes_written,
            "blobs_present": self.blobs_present,
            "manifests_written": self.manifests_written,
            "tags_written": self.tags_written,
            "damaged": self.damaged,
            "problems": self.problems,
        }


async def import_layout(
    layout: Layout, sink: ImportSink, options: ImportOptions, reporter: Reporter
) -> ImportReport:
    """Import everything of ``layout`` that verifies into ``sink``."""
    head = await layout.head()
    summary = head.summary
    graph = LayoutGraph(layout, summary.absent() if summary is not None else set())
    roots = [
        await graph.root(entry, options.config, options.defaults)
        for entry in parse_index(head.index)
    ]
    good = [root for root in roots if root.problem is None]
    if summary is not None and summary.base is not None:
        await _check_base(sink, good, summary)
    report = ImportReport(layout.name)
    await _copy_blobs(layout, sink, good, report, reporter, options.admit)
    report.problems = list(layout.problems)
    for root in roots:
        outcome = await _publish(sink, graph, root, report, options, summary)
        reporter.item(outcome.reference, outcome.status, outcome.reason)
        report.images.append(outcome)
    return report


async def _check_base(sink: ImportSink, roots: list[Root], summary: ExportSummary) -> None:
    """Refuse a delta whose base is not here, before anything is written."""
    assert summary.base is not None
    lacking: list[Digest] = []
    for root in roots:
        assert root.name is not None
        for digest in root.blobs:
            relied_on = digest not in summary.blobs and digest in summary.base.blobs
            if relied_on and not await sink.has_blob(root.name.upstream, digest):
                lacking.append(digest)
    if lacking:
        raise BaseMissing(
            f"this layout is an incremental export on top of export {summary.base.layout} "
            f"(made {summary.base.created}); {len(lacking)} blob(s) it relies on are not in "
            f"this cache (first: {lacking[0]}): import that export (and its own bases) first"
        )


async def _copy_blobs(
    layout: Layout,
    sink: ImportSink,
    roots: list[Root],
    report: ImportReport,
    reporter: Reporter,
    admit: Callable[[int], Awaitable[None]] | None,
) -> None:
    """Write every blob the roots need and the sink lacks; record damage by digest."""
    upstreams: dict[Digest, set[str]] = defaultdict(set)
    sizes: dict[Digest, int | None] = {}
    for root in roots:
        assert root.name is not None
        for digest, size in root.blobs.items():
            upstreams[digest].add(root.name.upstream)
            sizes[digest] = size
    todo: dict[Digest, list[str]] = {}
    for digest, names in upstreams.items():
        lacking = sorted([name for name in names if not await sink.has_blob(name, digest)])
        report.blobs_present += len(names) - len(lacking)
        if lacking:
            todo[digest] = lacking
    incoming = sum((sizes[d] or 0) * len(names) for d, names in todo.items())
    if admit is not None:
        await admit(incoming)
    reporter.start("import", total_bytes=sum(sizes[d] or 0 for d in todo), total_items=len(todo))
    async for blob in layout.blobs(set(todo)):
        problem = await _copy_blob(sink, blob, todo.pop(blob.digest), sizes[blob.digest], reporter)
        if problem is None:
            report.blobs_written += 1
            report.bytes_written += blob.size
        else:
            report.damaged[str(blob.digest)] = problem
    for digest in todo:
        report.damaged[str(digest)] = "missing from the layout"


async def _copy_blob(
    sink: ImportSink,
    blob: LayoutBlob,
    upstreams: list[str],
    expected: int | None,
    reporter: Reporter,
) -> str | None:
    """Stream one blob to a writer per upstream; commit all on a match. The problem, if any."""
    writers: list[BlobWriter] = []
    try:
        writers = [await sink.blob_writer(name, blob.digest) for name in upstreams]
        hashed = Hashed(blob.digest, reporter.advance)
        await write_overlapped(hashed.chunks(blob.chunks), lambda chunk: _write(writers, chunk))
        problem = _blob_problem(hashed.count, expected, blob.size, hashed.matches)
        if problem is None:
            for writer in writers:
                await writer.commit()
        return problem
    except StorageError as exc:
        return f"cannot be written to the cache: {exc}"
    finally:
        for writer in writers:
            await writer.abort()


async def _write(writers: list[BlobWriter], chunk: bytes) -> None:
    for writer in writers:
        await writer.write(chunk)


def _blob_problem(count: int, expected: int | None, stored: int, matches: bool) -> str | None:
    """Why ``count`` bytes hashing (or not) to the digest are not the blob."""
    size = expected if expected is not None else stored
    if count < size:
        return f"truncated: {count} of {size} bytes"
    if count > size:
        return f"{count} bytes, its descriptor says {size}"
    return None if matches else "does not match its digest"


async def _publish(
    sink: ImportSink,
    graph: LayoutGraph,
    root: Root,
    report: ImportReport,
    options: ImportOptions,
    summary: ExportSummary | None,
) -> ImageOutcome:
    """Publish one entry's manifests and tag, or refuse it naming what is wrong."""
    outcome = ImageOutcome(root.label, str(root.entry.digest), "refused")
    damaged = [
        f"blob {d}: {report.damaged[str(d)]}" for d in root.blobs if str(d) in report.damaged
    ]
    if root.problem is not None or damaged:
        reasons = [root.problem] if root.problem is not None else damaged
        more = f" (and {len(reasons) - _NAMED} more)" if len(reasons) > _NAMED else ""
        outcome.reason = "; ".join(reasons[:_NAMED]) + more
        return outcome
    assert root.name is not None
    written = 0
    for digest in root.manifests:
        if not await sink.has_manifest(root.name.upstream, digest):
            manifest = graph.manifests[digest]
            await sink.put_manifest(root.name.upstream, root.name.repository, digest, manifest)
            written += 1
    report.manifests_written += written
    if root.name.tag is not None and await _put_tag(sink, root, graph, options, summary):
        report.tags_written += 1
        written += 1
    outcome.status = "imported" if written else "unchanged"
    if root.absent:
        outcome.reason = f"{len(root.absent)} platform(s) were not in the exporting cache"
    return outcome


async def _put_tag(
    sink: ImportSink,
    root: Root,
    graph: LayoutGraph,
    options: ImportOptions,
    summary: ExportSummary | None,
) -> bool:
    assert root.name is not None
    assert root.name.tag is not None
    confirmed = root.confirmed or _summary_time(summary) or options.confirmed
    manifest = graph.manifests[root.entry.digest]
    record = TagEntry(
        root.name.upstream, root.name.repository, root.name.tag, root.entry.digest,
        manifest.media_type, len(manifest.body), confirmed,
    )  # fmt: skip
    current = await sink.tag(root.name.upstream, root.name.repository, root.name.tag)
    if not tag_needs_update(current, record):
        return False
    await sink.put_tag(record)
    return True


def _summary_time(summary: ExportSummary | None) -> datetime | None:
    return parse_time(summary.created) if summary is not None else None
