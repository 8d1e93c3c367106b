"""The two protocols an export reads from and an import writes to.

Phase 2 implements both over the cache (any storage backend, through the
proxy's manifest store and tag records); the tests implement them in memory
and over a directory. Everything is keyed the way the cache is: blobs and
manifests per upstream (one upstream can never read what was pulled from
another), tags per upstream and repository.

:class:`ContentSource` (export side)::

    images()                         every tag the cache knows, with its digest
    manifest(upstream, digest)       media type + exact bytes, None if not cached
    blob_size(upstream, digest)      None if not cached
    read_blob(upstream, digest)      the bytes, streamed
    referrers(upstream, repo, digest)  descriptors of manifests whose subject is digest

:class:`ImportSink` (import side)::

    has_blob / has_manifest          what is already there (nothing is written twice)
    blob_writer(upstream, digest)    a BlobWriter: write, then commit only after the
                                     importer checked size and digest, abort otherwise
    put_manifest(...)                a manifest whose digest and type were checked
    tag(...) / put_tag(entry)        tag records, "confirmed" at export time

Manifests travel as :class:`mirror.stored.StoredManifest` (media type and
exact bytes), the cache's own type.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from mirror.airgap.descriptors import Descriptor
from mirror.oci import Digest
from mirror.storage.base import BlobWriter
from mirror.stored import StoredManifest


@dataclass(frozen=True, slots=True)
class SourceImage:
    """An image the source can export: a tag (or a bare digest) of a repository."""

    upstream: str
    repository: str
    tag: str | None
    digest: Digest
    #: when the cache last confirmed the tag upstream; None for digest-only images
    confirmed: datetime | None = None

    def __str__(self) -> str:
        where = f":{self.tag}" if self.tag is not None else f"@{self.digest}"
        return f"{self.upstream}/{self.repository}{where}"


@dataclass(frozen=True, slots=True)
class TagEntry:
    """A tag pointing at a manifest, as last confirmed upstream at ``confirmed``.

    Phase 2 turns it into the cache's own tag record
    (:class:`mirror.stored.TagRecord`: ``checked`` is ``confirmed``).
    """

    upstream: str
    repository: str
    tag: str
    digest: Digest
    media_type: str
    size: int
    confirmed: datetime


class ContentSource(Protocol):
    """What an export reads: the cache's images, manifests, blobs and referrers."""

    def images(self) -> AsyncIterator[SourceImage]:
        """Every tagged image, each (upstream, repository, tag) once."""
        ...

    async def manifest(self, upstream: str, digest: Digest) -> StoredManifest | None:
        """A cached manifest, None when it is not cached."""
        ...

    async def blob_size(self, upstream: str, digest: Digest) -> int | None:
        """The size of a cached blob, None when it is not cached."""
        ...

    def read_blob(self, upstream: str, digest: Digest) -> AsyncIterator[bytes]:
        """The bytes of a cached blob, in chunks of bounded size."""
        ...

    async def referrers(self, upstream: str, repository: str, digest: Digest) -> list[Descriptor]:
        """Cached manifests whose ``subject`` is ``digest`` (signatures, SBOMs, attestations)."""
        ...


class ImportSink(Protocol):
    """What an import writes to; every write is of content already verified."""

    async def has_blob(self, upstream: str, digest: Digest) -> bool:
        """Whether the blob is committed already."""
        ...

    async def blob_writer(self, upstream: str, digest: Digest) -> BlobWriter:
        """A partial object that becomes the blob only on ``commit``."""
        ...

    async def has_manifest(self, upstream: str, digest: Digest) -> bool:
        """Whether the manifest is stored already."""
        ...

    async def put_manifest(
        self, upstream: str, repository: str, digest: Digest, manifest: StoredManifest
    ) -> None:
        """Store a verified manifest, atomically (the repository is for referrer indexes)."""
        ...

    async def tag(self, upstream: str, repository: str, tag: str) -> TagEntry | None:
        """The tag's current record, None when there is none."""
        ...

    async def put_tag(self, record: TagEntry) -> None:
        """Write a tag record, atomically."""
        ...


def tag_needs_update(current: TagEntry | None, incoming: TagEntry) -> bool:
    """Whether an import should write ``incoming``.

    Only a newer confirmation wins: a record this site confirmed (or
    imported) later than the export is kept, and the same record imported
    twice writes nothing the second time.
    """
    return current is None or incoming.confirmed > current.confirmed
