"""The cache as the air gap's :class:`ContentSource` and :class:`ImportSink`.

Everything goes through the storage protocol and the cache's own formats
(:mod:`mirror.storage.layout`, :mod:`mirror.stored`), so it works on disk and
on S3, and beside a running mirror:

- **Export** reads committed objects only (nothing is visible before
  commit), so a mirror serving from the same cache need not stop. The tag
  of an image is its ``any`` record, the one docker, containerd, podman and
  skopeo use (else the newest of the others), and ``confirmed`` is that
  record's ``checked`` time.
- **Referrers** are found through the tag schema cosign and oras use in a
  registry without the referrers API: the tags ``sha256-<hex>.sig``,
  ``.att`` and ``.sbom`` of the subject's repository. They travel as
  referrer entries that keep their tag, so the far side finds them the same
  way; they are not listed as images of their own. The referrers the
  mirror's referrers endpoint keeps for the subject
  (:mod:`mirror.stored_referrers`: from the upstream's referrers API, e.g.
  sigstore bundles) travel too, those whose manifest is cached.
- **Import** writes blobs through the storage writer, whose partial object
  becomes the blob only on the importer's commit, after size and digest
  were checked; manifests and tag records with one atomic ``put`` each. A
  tag record is written for every ``Accept`` variant the manifest's media
  type answers (an index: ``any``; an image manifest: ``any`` and
  ``manifest``; schema 1: all three), with ``checked`` set to the export's
  confirmation time, so ``tag_ttl``, ``max_stale`` and offline rules count
  from when the connected cache last asked its upstream. A manifest that
  names a ``subject`` is added to that subject's referrers index, so the
  far side's referrers endpoint lists it, offline too.

Given a :class:`~mirror.cache.tracked.TrackedStorage`, every write updates
the cache index (the budget, eviction, the size metrics).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

from mirror.accept import VARIANT_TYPES
from mirror.airgap.content import SourceImage, TagEntry
from mirror.airgap.descriptors import Descriptor
from mirror.airgap.names import CONFIRMED, TAG, format_time
from mirror.oci import OCI_INDEX, Digest, parse_digest, sha256_digest
from mirror.storage import layout
from mirror.storage.base import BlobWriter, Storage
from mirror.stored import StoredManifest, TagRecord, decode_manifest, decode_record
from mirror.stored_referrers import (
    REFERRERS_VARIANT,
    descriptors_of,
    fallback_tag,
    index_body,
    json_object,
    referrer_descriptor,
    subject_of,
)

#: the tag schema's suffixes: cosign signatures and attestations, SBOMs
REFERRER_SUFFIXES = ("sig", "att", "sbom")
_REFERRER_TAG = re.compile(r"[a-z0-9]+-[0-9a-f]{32,}\.(?:" + "|".join(REFERRER_SUFFIXES) + ")")
# The variant a record is preferred from: the one every common client uses.
_PREFERRED = "any"


def record_variants(media_type: str) -> list[str]:
    """The ``Accept`` variants whose clients are answered a manifest of ``media_type``."""
    return [variant for variant, types in VARIANT_TYPES.items() if media_type in types]


class CacheContent:
    """Reads (export) and writes (import) the cache's objects of any upstream."""

    def __init__(self, storage: Storage, upstreams: Sequence[str]) -> None:
        self.storage = storage
        self.upstreams = list(upstreams)

    # -- ContentSource

    async def images(self) -> AsyncIterator[SourceImage]:
        """Every tag of the configured upstreams with a readable record, in key order."""
        for upstream in self.upstreams:
            tags: dict[tuple[str, str], dict[str, TagRecord]] = {}
            async for info in self.storage.walk(f"{upstream}/{layout.TAGS}/"):
                parsed = layout.parse_tag_key(info.key)
                if parsed is None or _REFERRER_TAG.fullmatch(parsed[2]):
                    continue
                variant = info.key.rpartition("/")[2]
                if variant == REFERRERS_VARIANT:
                    continue  # a subject's referrers index: exported with the subject
                record = await self._record(info.key)
                if record is not None:
                    tags.setdefault((parsed[1], parsed[2]), {})[variant] = record
            for (repository, tag), records in sorted(tags.items()):
                chosen = _choose(records)
                yield SourceImage(upstream, repository, tag, parse_digest(chosen.digest),
                                  _moment(chosen.checked))  # fmt: skip

    async def manifest(self, upstream: str, digest: Digest) -> StoredManifest | None:
        """The stored manifest (checked against its digest by the export's walk)."""
        raw = await self.storage.get(layout.manifest_key(upstream, digest))
        return decode_manifest(raw) if raw is not None else None

    async def blob_size(self, upstream: str, digest: Digest) -> int | None:
        """The committed blob's size."""
        info = await self.storage.stat(layout.blob_key(upstream, digest))
        return info.size if info is not None else None

    def read_blob(self, upstream: str, digest: Digest) -> AsyncIterator[bytes]:
        """The blob's bytes, streamed by the backend."""
        return self.storage.read(layout.blob_key(upstream, digest))

    async def referrers(self, upstream: str, repository: str, digest: Digest) -> list[Descriptor]:
        """The manifests tagged ``<alg>-<hex>.sig|.att|.sbom`` in ``repository``."""
        found = []
        for suffix in REFERRER_SUFFIXES:
            tag = f"{digest.algorithm}-{digest.hex}.{suffix}"
            record = await self._tag_record(upstream, repository, tag)
            if record is None:
                continue
            annotations = {TAG: tag, CONFIRMED: format_time(_moment(record.checked))}
            found.append(Descriptor(record.media_type, parse_digest(record.digest), record.size,
                                    annotations))  # fmt: skip
        tagged = {descriptor.digest for descriptor in found}
        for descriptor in await self._indexed_referrers(upstream, repository, digest):
            if descriptor.digest not in tagged:
                found.append(descriptor)
        return found

    async def _indexed_referrers(
        self, upstream: str, repository: str, digest: Digest
    ) -> list[Descriptor]:
        """The subject's referrers index as the mirror keeps it, its cached manifests only."""
        key = layout.tag_key(upstream, repository, fallback_tag(str(digest)), REFERRERS_VARIANT)
        record = await self._record(key)
        index = await self.manifest(upstream, parse_digest(record.digest)) if record else None
        if record is None or index is None:
            return []
        annotations = {CONFIRMED: format_time(_moment(record.checked))}
        found = []
        for entry in descriptors_of(index.body):
            referrer = parse_digest(entry["digest"])
            if await self.storage.stat(layout.manifest_key(upstream, referrer)) is None:
                continue  # listed upstream, never fetched through this mirror
            artifact = entry.get("artifactType")
            found.append(Descriptor(entry["mediaType"], referrer, entry["size"],
                                    dict(annotations), None, artifact))  # fmt: skip
        return found

    # -- ImportSink

    async def has_blob(self, upstream: str, digest: Digest) -> bool:
        """Whether the blob is committed."""
        return await self.storage.stat(layout.blob_key(upstream, digest)) is not None

    async def blob_writer(self, upstream: str, digest: Digest) -> BlobWriter:
        """The storage writer of the blob's key: nothing visible before commit."""
        return await self.storage.writer(layout.blob_key(upstream, digest))

    async def has_manifest(self, upstream: str, digest: Digest) -> bool:
        """Whether the manifest is stored."""
        return await self.storage.stat(layout.manifest_key(upstream, digest)) is not None

    async def put_manifest(
        self, upstream: str, repository: str, digest: Digest, manifest: StoredManifest
    ) -> None:
        """Store a manifest the importer checked, in the cache's format.

        A manifest with a ``subject`` joins the subject's referrers index in
        ``repository`` first: an import stopped between the two writes it
        again on the next run, as the manifest is still missing then.
        """
        doc = json_object(manifest.body)
        subject = subject_of(doc) if doc is not None else None
        if doc is not None and subject is not None:
            entry = referrer_descriptor(str(digest), manifest.media_type, manifest.body, doc)
            await self._add_referrer(upstream, repository, parse_digest(subject), entry)
        await self.storage.put(layout.manifest_key(upstream, digest), manifest.encode())

    async def _add_referrer(
        self, upstream: str, repository: str, subject: Digest, entry: dict[str, object]
    ) -> None:
        key = layout.tag_key(upstream, repository, fallback_tag(str(subject)), REFERRERS_VARIANT)
        record = await self._record(key)
        index = await self.manifest(upstream, parse_digest(record.digest)) if record else None
        entries = list(descriptors_of(index.body)) if index is not None else []
        if any(known["digest"] == entry["digest"] for known in entries):
            return
        body = index_body([*entries, entry])
        index_digest = sha256_digest(body)
        await self.storage.put(
            layout.manifest_key(upstream, index_digest), StoredManifest(OCI_INDEX, body).encode()
        )
        # Confirmed long ago: the far side's referrers endpoint asks its upstream
        # (if it has one) the first time, and answers this list when it cannot.
        stored = TagRecord(str(index_digest), OCI_INDEX, len(body), 0.0)
        await self.storage.put(key, stored.encode())

    async def tag(self, upstream: str, repository: str, tag: str) -> TagEntry | None:
        """The tag as an import last left it; None when a record an import writes is missing.

        That is the ``any`` record, or the oldest of the records its media
        type has, so a second import of the same tag writes nothing, and one
        interrupted between two records writes the missing one.
        """
        first = await self._record(layout.tag_key(upstream, repository, tag, _PREFERRED))
        if first is None:
            return None
        oldest = first
        for variant in record_variants(first.media_type):
            record = await self._record(layout.tag_key(upstream, repository, tag, variant))
            if record is None:
                return None
            oldest = min(oldest, record, key=lambda r: r.checked)
        return _entry(upstream, repository, tag, oldest)

    async def put_tag(self, record: TagEntry) -> None:
        """One record per ``Accept`` variant the media type answers, ``checked`` at export time.

        A variant's record confirmed later than the export (this site pulled
        the tag since) is kept.
        """
        checked = record.confirmed.timestamp()
        stored = TagRecord(str(record.digest), record.media_type, record.size, checked)
        for variant in record_variants(record.media_type):
            key = layout.tag_key(record.upstream, record.repository, record.tag, variant)
            current = await self._record(key)
            if current is None or current.checked < checked:
                await self.storage.put(key, stored.encode())

    async def _tag_record(self, upstream: str, repository: str, tag: str) -> TagRecord | None:
        records = {}
        for variant in VARIANT_TYPES:
            record = await self._record(layout.tag_key(upstream, repository, tag, variant))
            if record is not None:
                records[variant] = record
        return _choose(records) if records else None

    async def _record(self, key: str) -> TagRecord | None:
        raw = await self.storage.get(key)
        return decode_record(raw) if raw is not None else None


def _choose(records: dict[str, TagRecord]) -> TagRecord:
    """The ``any`` record, else the most recently confirmed one."""
    return records.get(_PREFERRED) or max(records.values(), key=lambda r: r.checked)


def _moment(checked: float) -> datetime:
    # Whole seconds: the layout carries RFC 3339 times to the second, and a
    # second import must compare equal to what the first one wrote.
    return datetime.fromtimestamp(int(checked), UTC)


def _entry(upstream: str, repository: str, tag: str, record: TagRecord) -> TagEntry:
    return TagEntry(upstream, repository, tag, parse_digest(record.digest), record.media_type,
                    record.size, _moment(record.checked))  # fmt: skip
