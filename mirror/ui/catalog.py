"""The cache's repositories and images in memory, kept current as objects come and go.

The index (:mod:`mirror.cache.index`) knows every object's size and last use,
but not which repository uses it: blobs and manifests are stored once per
upstream, and only tag records name a repository. The catalog joins them for
the web UI, without a storage scan per page:

- every tag record's digest, and every manifest's references, platforms and
  annotations (:mod:`mirror.ui.images`), each read once when it is written;
- :meth:`TrackedStorage.on_change` tells it which keys were written or
  deleted; it only notes them (no I/O in the pull path) and reads them at
  the next :meth:`Catalog.refresh`, which every page awaits first. At start
  every tag record and manifest of the index is noted, so the first refresh
  reads them all once;
- each repository's size (every object its tags use, counted once) and the
  last use of its tag records are kept until an object it uses changes.

Reads go to the storage under the tracker, so the UI never counts as a use
of an object (its recency, which eviction goes by, stays the pulls').
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from mirror.cache.index import CacheEntry
from mirror.cache.pins import record_digest
from mirror.cache.tracked import TrackedStorage
from mirror.oci import Digest
from mirror.storage import layout
from mirror.storage.base import StorageError
from mirror.ui.images import UNREADABLE, ManifestFacts, manifest_facts

log = logging.getLogger(__name__)

RepoKey = tuple[str, str]  # (upstream, repository)


@dataclass(frozen=True, slots=True)
class Record:
    """One tag record: whose it is and where it points."""

    key: str
    repo: RepoKey
    tag: str
    digest: Digest | None  # None: unreadable
    # The index's entry of the record: its last use, updated in place on each
    # hit, read here without an index lookup (a re-write is a new entry, and a
    # change the catalog reads again).
    entry: CacheEntry


@dataclass(frozen=True, slots=True)
class RepositoryUsage:
    """What one repository's tags hold in the cache."""

    upstream: str
    name: str
    size: int
    tags: int
    last_used: float  # the last pull or write of any of its tag records (see Catalog._count)


class Catalog:
    """Repositories, tags and manifests of a tracked storage, in memory."""

    def __init__(self, storage: TrackedStorage) -> None:
        self._storage = storage
        self._index = storage.index
        self._records: dict[str, Record] = {}
        self._tags: dict[RepoKey, dict[str, set[str]]] = {}  # tag -> its record keys
        self._manifests: dict[str, ManifestFacts] = {}  # by manifest key
        self._usages: dict[RepoKey, RepositoryUsage] = {}  # until an object they count changes
        self._users: defaultdict[str, set[RepoKey]] = defaultdict(set)  # key -> sized repos
        self._dirty = {e.key for e in self._index.entries() if e.kind != layout.BLOBS}
        self._lock = asyncio.Lock()
        storage.on_change(self._changed)

    def _changed(self, key: str) -> None:
        if layout.parse_tag_key(key) is not None or _is_manifest(key):
            self._dirty.add(key)
        else:
            self._forget_usage(key)  # a blob came or went: sizes that count it are wrong

    async def refresh(self) -> None:
        """Read what changed since the last refresh (the first reads everything once)."""
        async with self._lock:
            failed: set[str] = set()
            while self._dirty:
                key = self._dirty.pop()
                try:
                    await self._load(key)
                except StorageError as exc:
                    log.warning("web UI: cannot read %s (%s); will try again", key, exc)
                    failed.add(key)
            self._dirty |= failed

    async def _load(self, key: str) -> None:
        tag = layout.parse_tag_key(key)
        entry = self._index.get(key)
        present = entry is not None
        if tag is not None:
            digest = await record_digest(self._storage.inner, key) if present else None
            # The index may have dropped the key while the record was read.
            entry = self._index.get(key)
            record = Record(key, (tag[0], tag[1]), tag[2], digest, entry) if entry else None
            self._set_record(key, record)
        else:
            raw = await self._storage.inner.get(key) if present else None
            if raw is not None:
                self._manifests[key] = manifest_facts(raw)
            else:
                self._manifests.pop(key, None)
            self._forget_usage(key)

    def _set_record(self, key: str, record: Record | None) -> None:
        old = self._records.pop(key, None)
        if old is not None:
            tags = self._tags.get(old.repo, {})
            tags.get(old.tag, set()).discard(key)
            if not tags.get(old.tag, True):
                del tags[old.tag]
            if not tags:
                self._tags.pop(old.repo, None)
            self._usages.pop(old.repo, None)
        if record is not None:
            self._records[key] = record
            self._tags.setdefault(record.repo, {}).setdefault(record.tag, set()).add(key)
            self._usages.pop(record.repo, None)

    def _forget_usage(self, key: str) -> None:
        for repo in self._users.pop(key, ()):
            self._usages.pop(repo, None)

    # -- reading (from memory; call refresh() first) ---------------------------

    def repositories(self) -> list[RepositoryUsage]:
        """Every repository with a cached tag."""
        return [self._usage(repo) for repo in self._tags]

    def usage(self, upstream: str, repository: str) -> RepositoryUsage | None:
        """One repository, None when none of its tags is cached."""
        repo = (upstream, repository)
        return self._usage(repo) if repo in self._tags else None

    def users_of(self, key: str, limit: int = 3) -> tuple[str, ...]:
        """Names of (at most ``limit``) repositories whose cached tags use ``key``."""
        tag = layout.parse_tag_key(key)
        if tag is not None:
            return (tag[1],)
        for repo, tags in self._tags.items():
            if repo not in self._usages:
                self._count(repo, tags)  # records which keys the repository uses
        return tuple(sorted(name for _, name in self._users.get(key, ()))[:limit])

    def tags(self, upstream: str, repository: str) -> dict[str, list[Record]]:
        """The records of each cached tag of a repository."""
        found = self._tags.get((upstream, repository), {})
        return {tag: [self._records[k] for k in sorted(keys)] for tag, keys in found.items()}

    def last_used(self, keys: Iterable[str]) -> float:
        """The latest use of any of ``keys`` that the index holds (0 for none)."""
        return max(map(self._used, keys), default=0.0)

    def _used(self, key: str) -> float:
        record = self._records.get(key)
        if record is not None:
            return record.entry.accessed
        entry = self._index.get(key)
        return entry.accessed if entry is not None else 0.0

    def record_keys(self, upstream: str, repository: str, tag: str) -> set[str]:
        """The record keys of one tag."""
        return set(self._tags.get((upstream, repository), {}).get(tag, set()))

    def manifest(self, upstream: str, digest: Digest) -> ManifestFacts | None:
        """A cached manifest's facts, None when it is not cached (or not read yet)."""
        facts = self._manifests.get(layout.manifest_key(upstream, digest))
        return None if facts is UNREADABLE else facts

    def image_keys(self, upstream: str, roots: Iterable[Digest]) -> set[str]:
        """Keys of the manifests ``roots``, their children and blobs (missing ones named too)."""
        keys: set[str] = set()
        pending = list(roots)
        while pending:
            digest = pending.pop()
            key = layout.manifest_key(upstream, digest)
            if key in keys:
                continue
            keys.add(key)
            facts = self._manifests.get(key)
            if facts is not None:
                keys.update(layout.blob_key(upstream, blob) for blob in facts.blobs)
                pending.extend(child.digest for child in facts.children)
        return keys

    def size_of(self, keys: Iterable[str]) -> int:
        """Bytes of those of ``keys`` the cache holds."""
        return sum(e.size for e in map(self._index.get, keys) if e is not None)

    def _usage(self, repo: RepoKey) -> RepositoryUsage:
        usage = self._usages.get(repo)
        return usage if usage is not None else self._count(repo, self._tags[repo])

    def _count(self, repo: RepoKey, tags: dict[str, set[str]]) -> RepositoryUsage:
        """Size and last use of a repository, kept until an object it counts changes.

        The last use is as of then: later pulls are in the pull counts, which are
        current (see LiveView), so it stands in only for repositories never counted.
        """
        records = [self._records[key] for keys in tags.values() for key in keys]
        roots = {r.digest for r in records if r.digest is not None}
        keys = self.image_keys(repo[0], roots) | {r.key for r in records}
        for key in keys:
            self._users[key].add(repo)
        last = max((r.entry.accessed for r in records), default=0.0)
        usage = RepositoryUsage(repo[0], repo[1], self.size_of(keys), len(tags), last)
        self._usages[repo] = usage
        return usage


def _is_manifest(key: str) -> bool:
    content = layout.parse_content_key(key)
    return content is not None and content[1] == layout.MANIFESTS
