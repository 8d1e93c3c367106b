"""The image graph of an export: from each root manifest, everything a pull needs.

For each selected image: the root manifest; for an index every platform
manifest; each manifest's config and layers; and, unless turned off, the
referrers (signatures, SBOMs, attestations) of every one of those manifests,
recursively (a signature of an attestation), each exported as an entry of
its own that names its subject.

A pull-through cache often holds only some platforms of an index (a client
pulled only its own). Such a platform manifest, or one whose blobs are not
all cached, is left out and named in :attr:`PlannedImage.absent`: the layout
then serves exactly what the cache could serve. An image whose root, or
every platform, is missing is skipped with a reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from mirror.airgap.content import ContentSource, SourceImage
from mirror.airgap.descriptors import Descriptor, Links, manifest_links
from mirror.airgap.errors import LayoutError
from mirror.airgap.names import ImageName, annotations_for, referrer_annotations
from mirror.errors import ManifestRejected
from mirror.manifest_check import check_manifest
from mirror.oci import Digest
from mirror.stored import StoredManifest


@dataclass
class PlannedImage:
    """One ``index.json`` entry and the content it needs."""

    image: SourceImage
    entry: Descriptor
    subject: Digest | None = None
    manifests: list[Digest] = field(default_factory=list)
    blobs: list[Digest] = field(default_factory=list)
    #: platform manifests left out, with the reason, e.g. "sha256:… (linux/arm64): not cached"
    absent: list[str] = field(default_factory=list)


@dataclass
class ExportPlan:
    """Everything an export writes, with where each blob is read from."""

    images: list[PlannedImage] = field(default_factory=list)
    manifests: dict[Digest, StoredManifest] = field(default_factory=dict)
    #: digest -> (size, upstream to read it from)
    blobs: dict[Digest, tuple[int, str]] = field(default_factory=dict)
    skipped: list[tuple[SourceImage, str]] = field(default_factory=list)


class _Incomplete(Exception):
    """A manifest or blob of the graph is not cached (or not readable as one)."""


async def plan_export(
    source: ContentSource, images: list[SourceImage], *, referrers: bool = True
) -> ExportPlan:
    """Walk every image's graph through ``source``."""
    plan = ExportPlan()
    seen_referrers: set[tuple[str, Digest]] = set()
    for image in images:
        planned = await _plan_image(source, plan, image, None)
        if planned is None:
            continue
        if referrers:
            await _plan_referrers(source, plan, planned, seen_referrers)
    plan.images.sort(key=_entry_order)
    return plan


async def _plan_image(
    source: ContentSource, plan: ExportPlan, image: SourceImage, subject: Digest | None
) -> PlannedImage | None:
    try:
        root = await _manifest(source, image.upstream, image.digest)
        walk = _Walk(source, image.upstream)
        await walk.root(image.digest, root)
    except _Incomplete as exc:
        plan.skipped.append((image, str(exc)))
        return None
    plan.manifests.update(walk.manifests)
    plan.blobs.update(walk.blobs)
    if subject is None:
        name = ImageName(image.upstream, image.repository, image.tag)
        annotations = annotations_for(name, image.digest, image.confirmed)
    else:
        annotations = referrer_annotations(image.upstream, image.repository, subject)
    entry = Descriptor(
        root.media_type, image.digest, len(root.body), annotations, None, walk.artifact_type
    )
    planned = PlannedImage(image, entry, subject, list(walk.manifests), list(walk.blobs))
    planned.absent = walk.absent
    plan.images.append(planned)
    return planned


async def _plan_referrers(
    source: ContentSource,
    plan: ExportPlan,
    planned: PlannedImage,
    seen: set[tuple[str, Digest]],
) -> None:
    """Referrers of every manifest of ``planned``, and theirs in turn."""
    pending = [planned]
    while pending:
        current = pending.pop()
        image = current.image
        for digest in current.manifests:
            for found in await source.referrers(image.upstream, image.repository, digest):
                if (image.upstream, found.digest) in seen:
                    continue
                seen.add((image.upstream, found.digest))
                referrer = SourceImage(image.upstream, image.repository, None, found.digest)
                child = await _plan_image(source, plan, referrer, digest)
                if child is not None:
                    pending.append(child)


class _Walk:
    """The manifests and blobs under one root, within one upstream."""

    def __init__(self, source: ContentSource, upstream: str) -> None:
        self.source = source
        self.upstream = upstream
        self.manifests: dict[Digest, StoredManifest] = {}
        self.blobs: dict[Digest, tuple[int, str]] = {}
        self.absent: list[str] = []
        self.artifact_type: str | None = None

    async def root(self, digest: Digest, root: StoredManifest) -> None:
        links = _links(root, digest)
        self.manifests[digest] = root
        self.artifact_type = _artifact_type(root)
        if not links.manifests:
            self.blobs.update(await self._blobs(links))
            return
        for child in links.manifests:
            try:
                await self._child(child)
            except _Incomplete as exc:
                self.absent.append(f"{child.digest} ({child.platform or 'no platform'}): {exc}")
        if len(self.absent) == len(links.manifests):
            raise _Incomplete(f"none of its {len(links.manifests)} manifests is cached")

    async def _child(self, child: Descriptor) -> None:
        manifest = await _manifest(self.source, self.upstream, child.digest)
        links = _links(manifest, child.digest)
        if links.manifests:
            raise _Incomplete("an index inside an index is not exported")
        blobs = await self._blobs(links)
        self.manifests[child.digest] = manifest
        self.blobs.update(blobs)

    async def _blobs(self, links: Links) -> dict[Digest, tuple[int, str]]:
        found = {}
        for blob in links.blobs:
            size = await self.source.blob_size(self.upstream, blob.digest)
            if size is None:
                raise _Incomplete(f"blob {blob.digest} is not cached")
            found[blob.digest] = (size, self.upstream)
        return found


async def _manifest(source: ContentSource, upstream: str, digest: Digest) -> StoredManifest:
    manifest = await source.manifest(upstream, digest)
    if manifest is None:
        raise _Incomplete(f"manifest {digest} is not cached")
    if not digest.matches(manifest.body):
        raise _Incomplete(f"manifest {digest} does not match its digest in the cache")
    return manifest


def _links(manifest: StoredManifest, digest: Digest) -> Links:
    try:
        check_manifest(manifest.body, manifest.media_type)
        return manifest_links(manifest.body, f"manifest {digest}")
    except (ManifestRejected, LayoutError) as exc:
        raise _Incomplete(f"manifest {digest}: {exc}") from None


def _artifact_type(manifest: StoredManifest) -> str | None:
    """An artifact manifest's ``artifactType``, for its ``index.json`` entry."""
    value = json.loads(manifest.body).get("artifactType")
    return value if isinstance(value, str) else None


def _entry_order(planned: PlannedImage) -> tuple[str, str, int, str, str]:
    """Deterministic ``index.json`` order: by upstream and repository, images before referrers."""
    image = planned.image
    return (image.upstream, image.repository, planned.subject is not None, image.tag or "",
            str(image.digest))  # fmt: skip
