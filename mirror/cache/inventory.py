"""What the cache holds, per repository and tag, and purging parts of it.

A purge removes tag records, then the manifests they (or a digest) named,
with the child manifests of an index, then every blob that no remaining
cached manifest refers to. A blob shared with another cached image stays.
Whatever is removed is simply a miss for the next pull, which fetches it
again. Purges are explicit operator requests, so pins do not stop them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mirror.cache.index import CacheEntry
from mirror.cache.pins import image_keys, record_digest
from mirror.cache.tracked import TrackedStorage
from mirror.oci import Digest
from mirror.storage import layout


@dataclass(frozen=True, slots=True)
class TagRef:
    """One tag record: its key and where it points."""

    key: str
    repository: str
    tag: str
    digest: Digest | None


async def tag_records(
    storage: TrackedStorage, upstream: str, repository: str | None = None
) -> list[TagRef]:
    """Every tag record of an upstream, or of one repository of it."""
    if repository is None:
        prefix = f"{upstream}/{layout.TAGS}/"
    else:
        prefix = layout.tag_prefix(upstream, repository)
    found = []
    async for info in storage.walk(prefix):
        parsed = layout.parse_tag_key(info.key)
        if parsed is None or parsed[0] != upstream:
            continue
        if repository is not None and parsed[1] != repository:
            continue  # a deeper repository sharing the prefix
        digest = await record_digest(storage.inner, info.key)
        found.append(TagRef(info.key, parsed[1], parsed[2], digest))
    return found


def iso(timestamp: float) -> str:
    """Seconds since the epoch as an RFC 3339 UTC time."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _usage(storage: TrackedStorage, keys: set[str]) -> tuple[int, float]:
    entries = [e for e in map(storage.index.get, keys) if e is not None]
    return sum(e.size for e in entries), max((e.accessed for e in entries), default=0.0)


async def describe(
    storage: TrackedStorage, upstreams: list[str], repository: str | None = None
) -> dict[str, Any]:
    """The admin listing: totals, then repositories with their tags, sizes and last access."""
    index = storage.index
    repositories: list[dict[str, Any]] = []
    tagged: set[str] = set()
    for upstream in upstreams:
        by_repo: dict[str, dict[str, set[Digest]]] = defaultdict(lambda: defaultdict(set))
        for ref in await tag_records(storage, upstream, repository):
            digests = by_repo[ref.repository][ref.tag]
            if ref.digest is not None:
                digests.add(ref.digest)
        for repo, tags in sorted(by_repo.items()):
            entry = await _describe_repository(storage, upstream, repo, tags)
            tagged |= entry.pop("_keys")
            repositories.append(entry)
    untagged = [
        e for e in index.entries()
        if e.key not in tagged and e.upstream in upstreams and e.kind != layout.TAGS
    ]  # fmt: skip
    return {
        "size": index.size,
        "max_size": index.max_size,
        "entries": len(index),
        "repositories": repositories,
        "untagged": {"entries": len(untagged), "size": sum(e.size for e in untagged)},
    }


async def _describe_repository(
    storage: TrackedStorage, upstream: str, repository: str, tags: dict[str, set[Digest]]
) -> dict[str, Any]:
    all_keys: set[str] = set()
    listed = []
    for tag, digests in sorted(tags.items()):
        keys = await image_keys(storage.inner, upstream, sorted(digests, key=str))
        keys = {k for k in keys if k in storage.index}
        size, accessed = _usage(storage, keys)
        all_keys |= keys
        listed.append({
            "tag": tag,
            "digests": sorted(str(d) for d in digests),
            "size": size,
            "objects": len(keys),
            "last_access": iso(accessed) if accessed else None,
        })  # fmt: skip
    size, accessed = _usage(storage, all_keys)
    return {
        "upstream": upstream,
        "repository": repository,
        "size": size,
        "last_access": iso(accessed) if accessed else None,
        "tags": listed,
        "_keys": all_keys,
    }


@dataclass
class PurgeReport:
    """What a purge removed."""

    tags: int = 0
    manifests: int = 0
    blobs: int = 0
    bytes: int = 0
    keys: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        """The counts, for the admin API's answer."""
        return {"tags": self.tags, "manifests": self.manifests, "blobs": self.blobs,
                "bytes": self.bytes}  # fmt: skip


async def purge(
    storage: TrackedStorage,
    upstream: str,
    repository: str | None = None,
    tag: str | None = None,
    digest: Digest | None = None,
) -> PurgeReport:
    """Remove a tag, a whole repository, or one digest (manifest or blob) of ``upstream``.

    The caller holds the eviction lock, so passes and purges do not interleave.
    """
    report = PurgeReport()
    records = [
        ref for ref in await tag_records(storage, upstream, repository)
        if (tag is None or ref.tag == tag) and (digest is None or ref.digest == digest)
    ]  # fmt: skip
    roots = {ref.digest for ref in records if ref.digest is not None}
    if digest is not None:
        roots.add(digest)
        await _delete(storage, layout.blob_key(upstream, digest), report)
    for ref in records:
        await storage.delete(ref.key)
        report.tags += 1
    candidates = await image_keys(storage.inner, upstream, sorted(roots, key=str))
    keep = await _still_referenced(storage, upstream, candidates)
    # Manifests first: a pull that still finds one will fetch missing blobs again.
    for key in sorted(candidates - keep, key=lambda k: layout.BLOBS in k.split("/")[1]):
        await _delete(storage, key, report)
    return report


async def _still_referenced(storage: TrackedStorage, upstream: str, removing: set[str]) -> set[str]:
    """Keys of every cached manifest not being removed (or still tagged), and all they use."""
    roots: set[Digest] = set()
    for entry in storage.index.entries():
        manifest = entry.upstream == upstream and entry.kind == layout.MANIFESTS
        if manifest and entry.key not in removing:
            roots.add(_digest(entry))
    for ref in await tag_records(storage, upstream):
        if ref.digest is not None:
            roots.add(ref.digest)
    return await image_keys(storage.inner, upstream, sorted(roots, key=str))


def _digest(entry: CacheEntry) -> Digest:
    algorithm, _, hex_part = entry.digest.partition(":")
    return Digest(algorithm, hex_part)


async def _delete(storage: TrackedStorage, key: str, report: PurgeReport) -> None:
    entry = storage.index.get(key)
    info = await storage.inner.stat(key) if entry is None else None
    if entry is None and info is None:
        return
    await storage.delete(key)
    report.bytes += entry.size if entry is not None else info.size if info is not None else 0
    report.keys.append(key)
    if "/" + layout.MANIFESTS + "/" in key:
        report.manifests += 1
    else:
        report.blobs += 1
