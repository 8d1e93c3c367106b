"""The air-gap protocols implemented for tests: a source over the test images, a disk sink.

- :class:`ImageSetSource` is a :class:`~mirror.airgap.content.ContentSource`
  over :class:`~tests.support.images.ImageSet`: tags, manifests and referrers
  in memory, blobs read from the image set's files (so the 200 MiB layer is
  streamed, never held). Knobs: forget a manifest or a blob (not cached),
  attach referrers, damage a blob's bytes.
- :class:`DiskContent` is an :class:`~mirror.airgap.content.ImportSink` (and a
  source again, for round trips) over the mirror's real
  :class:`~mirror.storage.disk.DiskStorage`: blobs go through its writer,
  whose partial file becomes the blob only on commit, so a ``kill -9``
  leaves nothing under the blob's key. It counts every write it makes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from mirror.airgap.content import ContentSource, ImportSink, SourceImage, TagEntry
from mirror.airgap.descriptors import Descriptor, manifest_links
from mirror.airgap.export import ExportResult, export_layout
from mirror.airgap.importer import ImportOptions, ImportReport, import_layout
from mirror.airgap.names import Defaults
from mirror.airgap.reader import open_layout
from mirror.config import Config, build_config
from mirror.oci import OCI_MANIFEST, Digest, parse_digest
from mirror.progress import make_reporter
from mirror.storage import layout
from mirror.storage.base import BlobWriter, WriterWrapper
from mirror.storage.disk import DiskStorage
from mirror.stored import StoredManifest
from tests.support.images import ImageSet

UPSTREAM = "registry.example.internal"
# Every test image but the 200 MiB one: an OCI and a Docker index, OCI and schema 2 manifests.
SMALL_REFS = [
    "library/medium:latest",
    "library/multi:docker",
    "library/multi:latest",
    "library/tiny:docker",
    "library/tiny:oci",
]
CONFIRMED = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)
EMPTY_CONFIG = b"{}"
EMPTY_CONFIG_TYPE = "application/vnd.oci.empty.v1+json"
CHUNK = 1024 * 1024
TOOL_TIMEOUT = 120  # seconds: skopeo copying the 200 MiB image on a loaded machine


class ImageSetSource:
    """A content source holding the test images under one upstream."""

    def __init__(self, image_set: ImageSet, refs: list[str], upstream: str = UPSTREAM) -> None:
        self.upstream = upstream
        self.tags = {ref: parse_digest(image_set.image(ref).digest) for ref in refs}
        self.manifests = {
            parse_digest(d): StoredManifest(m.media_type, m.data)
            for d, m in image_set.manifests.items()
        }
        self.blobs: dict[Digest, bytes | Path] = {
            parse_digest(d): b.path for d, b in image_set.blobs.items()
        }
        self.referrer_index: dict[Digest, list[Descriptor]] = {}

    async def images(self) -> AsyncIterator[SourceImage]:
        for ref, digest in sorted(self.tags.items()):
            repository, _, tag = ref.rpartition(":")
            yield SourceImage(self.upstream, repository, tag, digest, CONFIRMED)

    async def manifest(self, upstream: str, digest: Digest) -> StoredManifest | None:
        return self.manifests.get(digest) if upstream == self.upstream else None

    async def blob_size(self, upstream: str, digest: Digest) -> int | None:
        blob = self.blobs.get(digest) if upstream == self.upstream else None
        if blob is None:
            return None
        return len(blob) if isinstance(blob, bytes) else blob.stat().st_size

    async def read_blob(self, upstream: str, digest: Digest) -> AsyncIterator[bytes]:
        blob = self.blobs[digest]
        if isinstance(blob, bytes):
            yield blob
            return
        with blob.open("rb") as handle:  # the cache's disk reads run in threads too
            while chunk := await asyncio.to_thread(handle.read, CHUNK):
                yield chunk

    async def referrers(self, upstream: str, repository: str, digest: Digest) -> list[Descriptor]:
        return list(self.referrer_index.get(digest, []))

    def attach(self, subject: Digest, artifact_type: str, payload: bytes) -> Digest:
        """Add a referrer manifest (one layer, ``payload``) whose subject is ``subject``."""
        layer = self.add_blob(payload)
        config = self.add_blob(EMPTY_CONFIG)
        subject_manifest = self.manifests[subject]
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": _descriptor(EMPTY_CONFIG_TYPE, config, EMPTY_CONFIG),
            "layers": [_descriptor(artifact_type, layer, payload)],
            "subject": {
                "mediaType": subject_manifest.media_type,
                "digest": str(subject),
                "size": len(subject_manifest.body),
            },
        }
        body = json.dumps(doc, sort_keys=True).encode()
        digest = _sha256(body)
        self.manifests[digest] = StoredManifest(OCI_MANIFEST, body)
        found = Descriptor(OCI_MANIFEST, digest, len(body), artifact_type=artifact_type)
        self.referrer_index.setdefault(subject, []).append(found)
        return digest

    def add_blob(self, data: bytes) -> Digest:
        """Hold a small blob in memory."""
        digest = _sha256(data)
        self.blobs[digest] = data
        return digest


class DiskContent:
    """An import sink (and a content source) over the mirror's disk storage."""

    def __init__(self, root: Path) -> None:
        self.storage = DiskStorage(root)
        self.writes: Counter[str] = Counter()

    # -- ImportSink

    async def has_blob(self, upstream: str, digest: Digest) -> bool:
        return await self.storage.stat(layout.blob_key(upstream, digest)) is not None

    async def blob_writer(self, upstream: str, digest: Digest) -> BlobWriter:
        return _CountingWriter(await self.storage.writer(layout.blob_key(upstream, digest)), self)

    async def has_manifest(self, upstream: str, digest: Digest) -> bool:
        return await self.storage.stat(layout.manifest_key(upstream, digest)) is not None

    async def put_manifest(
        self, upstream: str, repository: str, digest: Digest, manifest: StoredManifest
    ) -> None:
        stored = manifest.media_type.encode() + b"\n" + manifest.body
        await self.storage.put(layout.manifest_key(upstream, digest), stored)
        self.writes["manifest"] += 1
        subject = manifest_links(manifest.body, str(digest)).subject
        if subject is not None:
            entry = {"repository": repository, "mediaType": manifest.media_type}
            key = f"{upstream}/referrers/{subject.hex}/{digest.hex}"
            await self.storage.put(key, json.dumps(entry).encode())

    async def tag(self, upstream: str, repository: str, tag: str) -> TagEntry | None:
        raw = await self.storage.get(layout.tag_key(upstream, repository, tag, "airgap"))
        if raw is None:
            return None
        doc = json.loads(raw)
        return TagEntry(
            upstream, repository, tag, parse_digest(doc["digest"]), doc["mediaType"],
            doc["size"], datetime.fromisoformat(doc["confirmed"]),
        )  # fmt: skip

    async def put_tag(self, record: TagEntry) -> None:
        doc = {
            "digest": str(record.digest),
            "mediaType": record.media_type,
            "size": record.size,
            "confirmed": record.confirmed.isoformat(),
        }
        key = layout.tag_key(record.upstream, record.repository, record.tag, "airgap")
        await self.storage.put(key, json.dumps(doc).encode())
        self.writes["tag"] += 1

    # -- ContentSource, for exporting what was imported

    async def images(self) -> AsyncIterator[SourceImage]:
        async for info in self.storage.walk():
            parsed = layout.parse_tag_key(info.key)
            if parsed is not None:
                record = await self.tag(*parsed)
                assert record is not None
                yield SourceImage(*parsed, record.digest, record.confirmed)

    async def manifest(self, upstream: str, digest: Digest) -> StoredManifest | None:
        raw = await self.storage.get(layout.manifest_key(upstream, digest))
        if raw is None:
            return None
        media_type, _, body = raw.partition(b"\n")
        return StoredManifest(media_type.decode(), body)

    async def blob_size(self, upstream: str, digest: Digest) -> int | None:
        info = await self.storage.stat(layout.blob_key(upstream, digest))
        return info.size if info is not None else None

    def read_blob(self, upstream: str, digest: Digest) -> AsyncIterator[bytes]:
        return self.storage.read(layout.blob_key(upstream, digest))

    async def referrers(self, upstream: str, repository: str, digest: Digest) -> list[Descriptor]:
        found = []
        async for info in self.storage.walk(f"{upstream}/referrers/{digest.hex}/"):
            doc = json.loads(await self.storage.get(info.key) or b"{}")
            referrer = Digest("sha256", info.key.rsplit("/", 1)[1])
            if doc.get("repository") == repository:
                found.append(Descriptor(doc["mediaType"], referrer, None))
        return found

    async def blob_digests(self, upstream: str = UPSTREAM) -> set[str]:
        """Every committed blob of ``upstream``, as digest strings."""
        found = set()
        async for info in self.storage.walk(f"{upstream}/{layout.BLOBS}/"):
            parsed = layout.parse_content_key(info.key)
            if parsed is not None:
                found.add(str(parsed[2]))
        return found


class _CountingWriter(WriterWrapper):
    def __init__(self, inner: BlobWriter, content: DiskContent) -> None:
        super().__init__(inner)
        self.content = content

    async def commit(self) -> None:
        await self.inner.commit()
        self.content.writes["blob"] += 1


def _descriptor(media_type: str, digest: Digest, data: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": str(digest), "size": len(data)}


def _sha256(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


def mirror_config(*names: str) -> Config:
    """A configuration with the test upstream (and ``names``); never contacted."""
    upstreams = [{"name": n, "url": "http://127.0.0.1:9"} for n in (UPSTREAM, *names)]
    return build_config({"upstreams": upstreams})


async def export_images(
    source: ContentSource,
    dest: Path | str,
    *,
    since: str | None = None,
    referrers: bool = True,
    form: str | None = None,
) -> ExportResult:
    """Export every tagged image of ``source`` to ``dest``, quietly, at a fixed time."""
    images = [image async for image in source.images()]
    reporter = make_reporter(quiet=True)
    return await export_layout(
        source, images, str(dest), reporter, since=since, referrers=referrers, form=form,
        created=CONFIRMED,
    )  # fmt: skip


async def import_into(
    sink: ImportSink,
    src: Path | str,
    defaults: Defaults | None = None,
    config: Config | None = None,
) -> ImportReport:
    """Import the layout at ``src`` into ``sink``, quietly."""
    options = ImportOptions(config or mirror_config(), defaults or Defaults(), datetime.now(UTC))
    layout = open_layout(str(src))
    try:
        return await import_layout(layout, sink, options, make_reporter(quiet=True))
    finally:
        await layout.close()


async def run_tool(*args: str, cwd: Path | None = None) -> tuple[int, str]:
    """Run a command-line tool (sha256sum, tar, skopeo); its exit status and output."""
    process = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=TOOL_TIMEOUT)
    assert process.returncode is not None
    return process.returncode, output.decode()
