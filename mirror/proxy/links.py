"""Which repositories are known to contain which content: blob access follows repositories.

Within one upstream the cache holds a blob (and a manifest) once, whatever
repositories share it. A registry serves a digest only under a repository
that links it, and so does the mirror: content is served under repository R
only if R is known to contain it. R is known to contain a digest when

- the upstream sent it, or confirmed it, for R (a request under R's own name,
  with R's own scope);
- a manifest served for R names it (its config and layers, the manifests of
  an index, recursively as each manifest is seen), or a tag record of R
  points to it.

Otherwise the proxy asks the upstream under R (a ``HEAD`` for a blob, a ``GET``
for a manifest) before it answers from the cache, and a 404 there is a 404 to
the client: a digest cached through repository A is never served under a B
that does not contain it.

The links live in memory and are bounded (least recently used forgotten
first), so a hit costs one dictionary lookup. Links forgotten, or from
before a restart, are found again from the stored tag records of the
repository (:meth:`RepositoryLinks.find`, at most once per repository per
minute), so a restarted or offline mirror still serves what it cached by tag
without asking anyone; anything else is confirmed upstream again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from cachetools import LRUCache, TTLCache

from mirror.cache.pins import manifest_references, record_digest
from mirror.oci import Digest
from mirror.routing import Target
from mirror.storage import layout
from mirror.storage.base import Storage, StorageError
from mirror.stored import StoredManifest

log = logging.getLogger(__name__)

# About 45 MB at most: (upstream, digest) -> the repositories that contain it.
_MAX_DIGESTS = 100_000
# Manifests whose references are linked already, per repository.
_MAX_EXPANDED = 50_000
# Repositories whose stored tag records were read lately (a flood of names costs bounded memory).
_MAX_LOADED = 10_000
_RELOAD_AFTER = 60.0
# Stored tag records read per repository at most (the rest is confirmed upstream).
_MAX_RECORDS = 2_000


class RepositoryLinks:
    """Repository -> content links of the cache's upstreams, bounded, in memory."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        # Keyed by the digest's text: what the routes and the tag records hold, parsed or not.
        self._repositories: LRUCache[tuple[str, str], set[str]] = LRUCache(_MAX_DIGESTS)
        self._expanded: LRUCache[tuple[str, str, str], bool] = LRUCache(_MAX_EXPANDED)
        self._loaded: TTLCache[tuple[str, str], bool] = TTLCache(_MAX_LOADED, _RELOAD_AFTER)

    def has(self, target: Target, digest: Digest) -> bool:
        """Whether ``target``'s repository is known to contain ``digest`` (memory only)."""
        repositories = self._repositories.get((target.upstream.name, str(digest)))
        return repositories is not None and target.repository in repositories

    async def find(self, target: Target, digest: Digest) -> bool:
        """:meth:`has`, after reading the repository's stored tag records if not done lately."""
        if self.has(target, digest):
            return True
        place = (target.upstream.name, target.repository)
        if place in self._loaded:
            return False
        self._loaded[place] = True
        try:
            await self._load(*place)
        except StorageError as exc:
            log.warning("cannot read the tag records of %s/%s: %s", *place, exc)
        return self.has(target, digest)

    def link(self, target: Target, digests: Iterable[Digest]) -> None:
        """Note that ``target``'s repository contains ``digests``."""
        self._link(target.upstream.name, target.repository, digests)

    def _link(self, upstream: str, repository: str, digests: Iterable[Digest | str]) -> None:
        for digest in digests:
            key = (upstream, str(digest))
            repositories = self._repositories.get(key)
            if repositories is None:
                self._repositories[key] = {repository}
            else:
                repositories.add(repository)

    def served(self, target: Target, digest: Digest | str, stored: StoredManifest | None) -> None:
        """A manifest went out for ``target``: link it, and (once) what it names
        (``stored`` None: a ``HEAD``, the manifest only)."""
        upstream, repository = target.upstream.name, target.repository
        expanded = (upstream, repository, str(digest))
        if expanded in self._expanded:
            return  # the common case, a hit: linked with what it names already
        self._link(upstream, repository, (digest,))
        if stored is None:
            return
        references = manifest_references(stored.encode())
        self._link(upstream, repository, (*references.blobs, *references.manifests))
        self._expanded[expanded] = True

    async def _load(self, upstream: str, repository: str) -> None:
        """Link what the repository's stored tag records lead to (child manifests included)."""
        roots: list[Digest] = []
        async for info in self._storage.walk(layout.tag_prefix(upstream, repository)):
            parsed = layout.parse_tag_key(info.key)
            if parsed is None or parsed[:2] != (upstream, repository):
                continue  # a deeper repository sharing the prefix
            digest = await record_digest(self._storage, info.key)
            if digest is not None:
                roots.append(digest)
            if len(roots) >= _MAX_RECORDS:
                break
        seen: set[Digest] = set()
        while roots:
            digest = roots.pop()
            if digest in seen:
                continue
            seen.add(digest)
            self._link(upstream, repository, (digest,))
            raw = await self._storage.get(layout.manifest_key(upstream, digest))
            if raw is not None:
                references = manifest_references(raw)
                self._link(upstream, repository, references.blobs)
                roots.extend(references.manifests)
