"""Export images from a content source (the cache) to an OCI image layout.

Order of the layout's files, which is also the order in a tar stream (so an
import can stream it): ``oci-layout``, ``index.json``, the summary,
``SHA256SUMS``, the manifests by digest, then the other blobs by digest.
Every blob is hashed as it is read from the source and the export stops,
naming it, when the cache's bytes do not match (``registry-mirror verify``
finds and removes such objects).

**Incremental** (``since``): the new layout leaves out every blob, other than
manifests, that the far side holds after importing the previous export
(:meth:`~mirror.airgap.summary.ExportSummary.known_blobs`). It stays a valid
layout on its own terms: ``index.json`` still lists every exported image and
every manifest is present, so the whole graph can be walked and checked;
the image-layout spec allows a layout to miss referenced blobs ("the
missing blobs SHOULD be fulfilled by an external blob store"), here the
cache that imported the base; and the summary's ``base`` names that export
and lists the blobs expected to be there, which the import checks before it
writes anything.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mirror import __version__
from mirror.airgap.content import ContentSource, SourceImage
from mirror.airgap.descriptors import LAYOUT_VERSION, index_document
from mirror.airgap.errors import ExportError, LayoutError
from mirror.airgap.graph import ExportPlan, PlannedImage, plan_export
from mirror.airgap.names import format_time
from mirror.airgap.reader import open_layout
from mirror.airgap.streams import Hashed
from mirror.airgap.summary import (
    SUMMARY_FILE,
    SUMS_FILE,
    Base,
    ExportSummary,
    blob_path,
    parse_summary,
    sums_file,
)
from mirror.airgap.writer import open_target
from mirror.oci import Digest, sha256_digest
from mirror.progress import Reporter


@dataclass
class ExportResult:
    """What an export wrote."""

    summary: ExportSummary
    objects_written: int = 0
    bytes_written: int = 0
    #: sha256 of a tar stream as written (None for a directory)
    stream_sha256: str | None = None
    beside: list[Path] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The machine-readable summary (``--json``)."""
        return {
            "layout": self.summary.layout,
            "created": self.summary.created,
            "images": self.summary.images,
            "skipped": self.summary.skipped,
            "totals": self.summary.totals(),
            "objects_written": self.objects_written,
            "bytes_written": self.bytes_written,
            "stream_sha256": self.stream_sha256,
            "beside": [str(path) for path in self.beside],
        }


async def export_layout(
    source: ContentSource,
    images: list[SourceImage],
    dest: str,
    reporter: Reporter,
    *,
    since: str | None = None,
    referrers: bool = True,
    form: str | None = None,
    created: datetime | None = None,
) -> ExportResult:
    """Write ``images`` (their graphs and referrers) as a layout at ``dest``."""
    base = await load_summary(since) if since is not None else None
    plan = await plan_export(source, images, referrers=referrers)
    moment = created or datetime.now(UTC)
    known = base.known_blobs() if base is not None else {}
    carried = {d: plan.blobs[d] for d in sorted(plan.blobs, key=str) if d not in known}
    index = index_document([planned.entry for planned in plan.images])
    summary = _summary(plan, index, carried, moment, base)
    summary_bytes = summary.to_json()
    files = {"oci-layout": LAYOUT_VERSION, "index.json": index, SUMMARY_FILE: summary_bytes}
    hashes = {path: hashlib.sha256(data).hexdigest() for path, data in files.items()}
    hashes.update({blob_path(d): d.hex for d in summary.blobs if d.algorithm == "sha256"})
    files[SUMS_FILE] = sums_file(hashes)
    result = ExportResult(summary)
    target = open_target(dest, mtime=int(moment.timestamp()), form=form)
    try:
        for path, data in files.items():
            await target.add_file(path, data)
        reporter.start("export", total_bytes=sum(summary.blobs.values()),
                       total_items=len(summary.blobs))  # fmt: skip
        for digest in sorted(plan.manifests, key=str):
            body = plan.manifests[digest].body
            await target.add_file(blob_path(digest), body)
            reporter.advance(len(body))
        for digest, (size, upstream) in carried.items():
            chunks = source.read_blob(upstream, digest)
            await target.add_blob(
                blob_path(digest), size, _verified(chunks, digest, size, reporter)
            )
            result.bytes_written += size
        result.beside = await target.finish(summary_bytes)
    except BaseException:
        await target.abort()
        raise
    result.objects_written = len(summary.blobs)
    result.bytes_written += sum(len(m.body) for m in plan.manifests.values())
    result.stream_sha256 = target.stream_sha256
    for planned in plan.images:
        reporter.item(str(planned.image), "exported", _absent_note(planned))
    for image, reason in plan.skipped:
        reporter.item(str(image), "skipped", reason)
    return result


def _summary(
    plan: ExportPlan,
    index: bytes,
    carried: dict[Digest, tuple[int, str]],
    created: datetime,
    base: ExportSummary | None,
) -> ExportSummary:
    blobs = {digest: len(manifest.body) for digest, manifest in plan.manifests.items()}
    blobs.update({digest: size for digest, (size, _) in carried.items()})
    return ExportSummary(
        tool=f"registry-mirror {__version__}",
        created=format_time(created),
        layout=str(sha256_digest(index)),
        images=[_image_record(planned, plan) for planned in plan.images],
        skipped=[{"image": str(image), "reason": reason} for image, reason in plan.skipped],
        blobs=blobs,
        base=Base(base.layout, base.created, base.known_blobs()) if base is not None else None,
    )


def _image_record(planned: PlannedImage, plan: ExportPlan) -> dict[str, Any]:
    image = planned.image
    record: dict[str, Any] = {
        "upstream": image.upstream,
        "repository": image.repository,
        "tag": image.tag,
        "digest": str(image.digest),
        "mediaType": planned.entry.media_type,
        "bytes": sum(len(plan.manifests[d].body) for d in planned.manifests)
        + sum(plan.blobs[d][0] for d in planned.blobs),
    }
    if planned.subject is not None:
        record["subject"] = str(planned.subject)
    if planned.absent:
        record["absent"] = planned.absent
    return record


def _absent_note(planned: PlannedImage) -> str:
    return f"{len(planned.absent)} platform(s) not cached, left out" if planned.absent else ""


async def _verified(
    chunks: AsyncIterator[bytes], digest: Digest, size: int, reporter: Reporter
) -> AsyncIterator[bytes]:
    """The source's chunks, stopped with :class:`ExportError` when they are not the blob."""
    hashed = Hashed(digest, reporter.advance)
    async for chunk in hashed.chunks(chunks):
        if hashed.count > size:
            raise ExportError(f"blob {digest}: the cache holds more than its {size} bytes")
        yield chunk
    if hashed.count != size or not hashed.matches:
        raise ExportError(
            f"blob {digest}: the cache's copy does not match its digest "
            "(run registry-mirror verify, then export again)"
        )


async def load_summary(path: str) -> ExportSummary:
    """The summary of a previous export: its file, its layout directory or its tar."""
    place = Path(path)
    found = await asyncio.to_thread(_summary_file, place)
    if found is not None:
        return parse_summary(await asyncio.to_thread(found.read_bytes), str(found))
    if not await asyncio.to_thread(place.exists):
        raise LayoutError(f"--since {path}: no such file or directory")
    layout = open_layout(path)
    try:
        head = await layout.head()
    finally:
        await layout.close()
    if head.summary is None:
        raise LayoutError(f"--since {path}: not made by registry-mirror export (no {SUMMARY_FILE})")
    return head.summary


def _summary_file(place: Path) -> Path | None:
    """The summary file itself, or the one beside a tar; None to read it from the layout."""
    if place.is_file() and place.suffix == ".json":
        return place
    beside = place.with_name(place.name + ".summary.json")
    return beside if place.is_file() and beside.is_file() else None
