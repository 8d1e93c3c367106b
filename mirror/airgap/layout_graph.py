"""What each ``index.json`` entry of a layout needs, with every manifest checked.

Before any byte is written to the cache, the importer knows, for each entry:
its name in the cache, every manifest (hashed against its digest, its size
against the descriptor, and accepted by the mirror's manifest check) and
every blob with its expected size. A problem is kept on the entry, naming
the object, so one bad image never stops the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from mirror.airgap.descriptors import Descriptor, Links, manifest_links
from mirror.airgap.errors import LayoutError
from mirror.airgap.names import (
    Defaults,
    ImageName,
    NamingError,
    confirmed_at,
    name_entry,
    subject_of,
)
from mirror.airgap.reader import Layout
from mirror.config import Config
from mirror.errors import ManifestRejected
from mirror.manifest_check import check_manifest
from mirror.oci import Digest
from mirror.stored import StoredManifest

# As the upstream client and distribution allow: a manifest is at most 4 MiB.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


@dataclass
class Root:
    """One ``index.json`` entry and everything it needs."""

    entry: Descriptor
    name: ImageName | None = None
    subject: Digest | None = None
    confirmed: datetime | None = None
    #: manifests in publishing order: children before the index that lists them
    manifests: list[Digest] = field(default_factory=list)
    #: blob -> size from its descriptor (None for schema 1)
    blobs: dict[Digest, int | None] = field(default_factory=dict)
    #: platform manifests the export left out on purpose
    absent: list[Digest] = field(default_factory=list)
    problem: str | None = None

    @property
    def label(self) -> str:
        """How the entry is named in reports."""
        if self.name is None:
            return f"index.json entry {self.entry.digest}"
        if self.subject is not None:
            return f"{self.name.upstream}/{self.name.repository}@{self.entry.digest} " \
                   f"(referrer of {self.subject})"  # fmt: skip
        return self.name.reference(self.entry.digest)


class LayoutGraph:
    """Reads and checks the manifests of a layout, each once."""

    def __init__(self, layout: Layout, absent: set[Digest]) -> None:
        self.layout = layout
        self.absent = absent
        self.manifests: dict[Digest, StoredManifest] = {}
        self._failures: dict[Digest, str] = {}

    async def root(self, entry: Descriptor, config: Config, defaults: Defaults) -> Root:
        """The entry, named and walked; a problem is recorded on it, not raised."""
        root = Root(entry, subject=subject_of(entry.annotations))
        root.confirmed = confirmed_at(entry.annotations)
        try:
            root.name = name_entry(entry.annotations, config, defaults)
            await self._walk(root)
        except (NamingError, _Bad) as exc:
            root.problem = str(exc)
        return root

    async def _walk(self, root: Root) -> None:
        links = await self._links(root.entry)
        for child in links.manifests:
            if child.digest in self.absent:
                root.absent.append(child.digest)
                continue
            child_links = await self._links(child)
            if child_links.manifests:
                raise _Bad(f"manifest {child.digest}: an index inside an index is not imported")
            root.manifests.append(child.digest)
            root.blobs.update(_sizes(child_links))
        root.manifests.append(root.entry.digest)
        root.blobs.update(_sizes(links))

    async def _links(self, descriptor: Descriptor) -> Links:
        digest = descriptor.digest
        if digest in self._failures:
            raise _Bad(self._failures[digest])
        try:
            manifest = self.manifests.get(digest) or await self._read(descriptor)
            self.manifests[digest] = manifest
            return manifest_links(manifest.body, f"manifest {digest}")
        except (_Bad, LayoutError) as exc:
            self._failures[digest] = str(exc)
            raise _Bad(str(exc)) from None

    async def _read(self, descriptor: Descriptor) -> StoredManifest:
        digest = descriptor.digest
        body = await self.layout.manifest(digest, MAX_MANIFEST_BYTES)
        if body is None:
            raise _Bad(f"manifest {digest}: missing from the layout")
        if len(body) > MAX_MANIFEST_BYTES:
            raise _Bad(f"manifest {digest}: larger than {MAX_MANIFEST_BYTES} bytes")
        if descriptor.size is not None and len(body) != descriptor.size:
            raise _Bad(
                f"manifest {digest}: {len(body)} bytes, its descriptor says {descriptor.size}"
            )
        if not digest.matches(body):
            raise _Bad(f"manifest {digest}: does not match its digest")
        try:
            media_type = check_manifest(body, descriptor.media_type)
        except ManifestRejected as exc:
            raise _Bad(f"manifest {digest}: {exc.reason}") from None
        return StoredManifest(media_type, body)


class _Bad(Exception):
    """A manifest of the entry cannot be used; the message names it."""


def _sizes(links: Links) -> dict[Digest, int | None]:
    return {blob.digest: blob.size for blob in links.blobs}
