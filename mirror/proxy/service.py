"""Pull-through policy: answer from the cache, fetch from the upstream on a miss.

Digests are immutable: content asked for by digest is served from the cache
until evicted. Tags are not: a tag record is trusted for the upstream's
``tag_ttl``, then revalidated with a HEAD (free against Docker Hub's pull
limit). When the upstream fails with a 5xx, a 429 or no answer, the last
known manifest is served for up to ``max_stale`` more, with a ``Warning``.
In offline mode no upstream is ever contacted.

This module knows nothing of aiohttp requests or responses: routes turn its
answers into HTTP.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

from mirror.accept import ALL_TYPES, VARIANT_TYPES, Accepted
from mirror.errors import (
    BlobUnknown,
    DigestMismatch,
    ManifestUnknown,
    MirrorError,
    NameUnknown,
    is_retryable_upstream,
)
from mirror.manifest_check import check_manifest_off_loop, media_type_of
from mirror.metrics import Metrics
from mirror.oci import MANIFEST_MEDIA_TYPES, Digest, Reference, parse_digest, sha256_digest
from mirror.proxy.downloads import Download, Downloads
from mirror.proxy.flight import SingleFlight
from mirror.proxy.manifests import ManifestStore
from mirror.routing import Target
from mirror.storage import layout
from mirror.storage.base import ObjectInfo, Storage, StorageError
from mirror.stored import StoredManifest, TagRecord
from mirror.upstream.client import Listing, ManifestHead

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ManifestAnswer:
    """A manifest for the client; ``body`` is None for HEAD-only answers."""

    digest: str
    media_type: str
    size: int
    body: bytes | None
    result: str  # hit, miss, stale, revalidated
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class BlobAnswer:
    """Where a blob comes from: one of path, key, fill, redirect (none for HEAD)."""

    digest: str
    size: int | None
    result: str  # hit or miss
    path: Path | None = None  # a local file to sendfile
    key: str | None = None  # a storage key to stream
    fill: Download | None = None  # a download to follow
    redirect: str | None = None  # a URL to send the client to


class PullService:
    """Answers manifest, blob and listing requests for routed targets."""

    def __init__(
        self,
        storage: Storage,
        fills: Downloads,
        metrics: Metrics,
        *,
        offline: bool,
        redirect_blobs: bool = False,
    ) -> None:
        self._storage = storage
        self._fills = fills
        self._metrics = metrics
        self._offline = offline
        self._redirect = redirect_blobs
        self._manifests = ManifestStore(storage, metrics)
        self._flight: SingleFlight[tuple[str, ...], object] = SingleFlight()

    @property
    def offline(self) -> bool:
        """Whether upstreams are never contacted."""
        return self._offline

    async def close(self) -> None:
        """Cancel shared upstream calls still running."""
        await self._flight.close()

    # ------------------------------------------------------------------ blobs

    async def blob(self, target: Target, digest: Digest, *, head: bool) -> BlobAnswer:
        """Find a blob in the cache, or start (or join) its download."""
        upstream = target.upstream.name
        key = layout.blob_key(upstream, digest)
        info = await self._stat(key)
        if info is not None:
            await self._touch(key)
            return await self._blob_hit(str(digest), key, info.size, head)
        fill = self._fills.running(key)
        if self._offline and fill is None:
            raise BlobUnknown(f"{digest} is not cached and the mirror is offline")
        if head and fill is None:
            size = await target.upstream.head_blob(target.repository, str(digest), BlobUnknown)
            return BlobAnswer(str(digest), size, "miss")
        if fill is None:
            fill, _ = self._fills.start_or_join(target.upstream, target.repository, digest, key)
        size = await fill.started
        return BlobAnswer(str(digest), size, "miss", fill=None if head else fill)

    async def _blob_hit(self, digest: str, key: str, size: int, head: bool) -> BlobAnswer:
        if head:
            return BlobAnswer(digest, size, "hit")
        path = self._storage.local_path(key)
        if path is not None:
            return BlobAnswer(digest, size, "hit", path=path)
        if self._redirect:
            url = await self._storage.redirect_url(key)
            if url is not None:
                return BlobAnswer(digest, size, "hit", redirect=url)
        return BlobAnswer(digest, size, "hit", key=key)

    async def _stat(self, key: str) -> ObjectInfo | None:
        try:
            with self._metrics.storage_timer(self._storage.backend, "stat"):
                return await self._storage.stat(key)
        except StorageError as exc:
            # A broken cache must not stop pulls: treat it as a miss.
            log.warning("storage stat failed: %s", exc)
            self._metrics.storage_error(self._storage.backend, "stat")
            return None

    async def _touch(self, key: str) -> None:
        try:
            with self._metrics.storage_timer(self._storage.backend, "touch"):
                await self._storage.touch(key)
        except StorageError as exc:
            log.debug("touch failed: %s", exc)

    # -------------------------------------------------------------- manifests

    async def manifest(
        self, target: Target, reference: Reference, accepted: Accepted, *, head: bool
    ) -> ManifestAnswer:
        """A manifest by digest (immutable) or by tag (revalidated after its TTL).

        By digest, the digest names the content: it is served whatever the
        client's ``Accept``. By tag, the client gets only a type it takes.
        """
        if reference.digest is not None:
            return await self._manifest_by_digest(target, reference.digest, head)
        assert reference.tag is not None
        answer = await self._manifest_by_tag(target, reference.tag, accepted, head)
        if not accepted.allows(answer.media_type):
            raise ManifestUnknown(
                f"tag {reference.tag!r} is a {answer.media_type}, which the request's Accept "
                "does not list"
            )
        return answer

    async def _manifest_by_digest(
        self, target: Target, digest: Digest, head: bool
    ) -> ManifestAnswer:
        upstream = target.upstream.name
        stored = await self._manifests.get_manifest(upstream, digest)
        if stored is not None:
            return _answer(str(digest), stored, head, "hit")
        if self._offline:
            raise ManifestUnknown(f"{digest} is not cached and the mirror is offline")
        fetched = await self._fetch_by_digest(target, digest)
        return _answer(str(digest), fetched, head, "miss")

    async def _fetch_by_digest(self, target: Target, digest: Digest) -> StoredManifest:
        """GET a manifest by digest upstream, once however many ask at the same time.

        It asks for every known type: the cached copy serves every later client.
        """
        fetched = await self._flight.run(
            ("manifest", target.upstream.name, str(digest)),
            lambda: self._fetch_manifest(target, str(digest), ALL_TYPES, digest),
        )
        assert isinstance(fetched, _Fetched)
        return fetched.stored

    async def _manifest_by_tag(
        self, target: Target, tag: str, accepted: Accepted, head: bool
    ) -> ManifestAnswer:
        upstream = target.upstream
        variant = accepted.variant
        record = await self._manifests.get_tag(upstream.name, target.repository, tag, variant)
        if self._offline:
            return await self._offline_tag(target, tag, accepted, record, head)
        if record is not None and record.age() < upstream.config.tag_ttl:
            answer = await self._from_record(target, record, head, "hit")
            if answer is not None:
                return answer
        flight_key = ("tag", upstream.name, target.repository, tag, variant, str(head))
        try:
            result = await self._flight.run(
                flight_key, lambda: self._refresh_tag(target, tag, variant, record, head)
            )
        except MirrorError as exc:
            stale = await self._stale_answer(target, tag, accepted, record, head, exc)
            if stale is None:
                raise
            return stale
        assert isinstance(result, ManifestAnswer)
        return result

    async def _refresh_tag(
        self, target: Target, tag: str, variant: str, record: TagRecord | None, head: bool
    ) -> ManifestAnswer:
        """Ask the upstream what the tag points to now (HEAD first when we know it)."""
        upstream = target.upstream
        lines = VARIANT_TYPES[variant]
        if record is not None or head:
            found = await upstream.head_manifest(target.repository, tag, lines, ManifestUnknown)
            new = _record_from_head(found)
            if new is not None and head and (record is None or new.digest != record.digest):
                await self._save_tag(target, tag, variant, new)
                return ManifestAnswer(new.digest, new.media_type, new.size, None, "miss")
            if record is not None and found.digest == record.digest:
                renewed = TagRecord(record.digest, record.media_type, record.size, time.time())
                await self._save_tag(target, tag, variant, renewed)
                answer = await self._from_record(target, renewed, head, "revalidated")
                if answer is not None:
                    return answer
        fetched = await self._fetch_manifest(target, tag, lines, None)
        new = TagRecord(
            fetched.digest, fetched.stored.media_type, len(fetched.stored.body), time.time()
        )
        await self._save_tag(target, tag, variant, new)
        return _answer(fetched.digest, fetched.stored, head, "miss")

    async def _from_record(
        self, target: Target, record: TagRecord, head: bool, result: str
    ) -> ManifestAnswer | None:
        """Answer from a tag record; None when the manifest itself is gone and we are offline."""
        if head:
            return ManifestAnswer(record.digest, record.media_type, record.size, None, result)
        digest = parse_digest(record.digest)
        stored = await self._manifests.get_manifest(target.upstream.name, digest)
        if stored is None:
            if self._offline:
                return None
            stored = await self._fetch_by_digest(target, digest)
        return _answer(record.digest, stored, head, result)

    async def _offline_tag(
        self,
        target: Target,
        tag: str,
        accepted: Accepted,
        record: TagRecord | None,
        head: bool,
    ) -> ManifestAnswer:
        record = record or await self._last_known(target, tag, accepted)
        if record is not None:
            answer = await self._from_record(target, record, head, "hit")
            if answer is not None:
                return answer
        raise ManifestUnknown(f"tag {tag!r} is not cached and the mirror is offline")

    async def _last_known(self, target: Target, tag: str, accepted: Accepted) -> TagRecord | None:
        """The newest record of a tag, for any Accept variant this client can take."""
        return await self._manifests.any_tag(target.upstream.name, target.repository, tag, accepted)

    async def _stale_answer(
        self,
        target: Target,
        tag: str,
        accepted: Accepted,
        record: TagRecord | None,
        head: bool,
        error: MirrorError,
    ) -> ManifestAnswer | None:
        """Serve the last known manifest when the upstream failed, within max_stale."""
        if not is_retryable_upstream(error):
            return None
        config = target.upstream.config
        record = record or await self._last_known(target, tag, accepted)
        if record is None or record.age() > config.tag_ttl + config.max_stale:
            return None
        stored = await self._manifests.get_manifest(
            target.upstream.name, parse_digest(record.digest)
        )
        if stored is None and not head:
            return None
        log.warning(
            "serving stale %s/%s:%s (%s, last confirmed %.0fs ago): upstream failed: %s",
            target.upstream.name, target.repository, tag, record.digest, record.age(), error,
        )  # fmt: skip
        warning = (
            f'299 - "stale: upstream failed ({error.code}); manifest last confirmed '
            f'{formatdate(record.checked, usegmt=True)}"'
        )
        body = stored.body if stored is not None and not head else None
        return ManifestAnswer(record.digest, record.media_type, record.size, body, "stale", warning)

    async def _fetch_manifest(
        self,
        target: Target,
        reference: str,
        accept: tuple[str, ...],
        expected: Digest | None,
    ) -> _Fetched:
        """GET a manifest upstream, check that it is one and matches its digest, cache it."""
        upstream = target.upstream
        got = await upstream.get_manifest(target.repository, reference, accept, ManifestUnknown)
        # ManifestRejected goes up: a 502, or a stale answer, each logged once there.
        media_type = await check_manifest_off_loop(got.body, got.media_type)
        digest = _verified_digest(got.body, got.digest, expected)
        if digest is None:
            self._metrics.digest_mismatch("manifest")
            raise DigestMismatch(f"upstream manifest {reference} does not match its digest")
        await self._manifests.put_manifest(upstream.name, digest, media_type, got.body)
        return _Fetched(str(digest), StoredManifest(media_type, got.body))

    async def _save_tag(self, target: Target, tag: str, variant: str, record: TagRecord) -> None:
        await self._manifests.put_tag(target.upstream.name, target.repository, tag, variant, record)

    # --------------------------------------------------------------- listings

    async def tags(self, target: Target, query: dict[str, str]) -> Listing:
        """The upstream's tag list, or the tags we know of when offline."""
        if self._offline:
            tags = await self._manifests.known_tags(target.upstream.name, target.repository)
            if not tags:
                raise NameUnknown(f"no tags of {target.repository!r} are cached")
            return _tag_listing(target.repository, tags, query)
        path = f"/v2/{target.repository}/tags/list"
        return await target.upstream.get_listing(target.repository, path, query, NameUnknown)

    async def referrers(self, target: Target, digest: Digest, query: dict[str, str]) -> Listing:
        """The upstream's referrers index for ``digest``, passed through."""
        if self._offline:
            raise ManifestUnknown("referrers are not available offline")
        path = f"/v2/{target.repository}/referrers/{digest}"
        return await target.upstream.get_listing(target.repository, path, query, ManifestUnknown)


@dataclass(frozen=True, slots=True)
class _Fetched:
    digest: str
    stored: StoredManifest


def _record_from_head(found: ManifestHead) -> TagRecord | None:
    """A tag record from a HEAD answer that names a manifest type, a valid digest and a size.

    Anything less (a generic or foreign ``Content-Type``, no digest) is no
    record: the GET that follows gets the body and checks it.
    """
    media_type = media_type_of(found.media_type)
    if found.digest is None or found.size is None or media_type not in MANIFEST_MEDIA_TYPES:
        return None
    try:
        digest = parse_digest(found.digest)
    except MirrorError:
        return None
    return TagRecord(str(digest), media_type, found.size, time.time())


def _answer(digest: str, stored: StoredManifest, head: bool, result: str) -> ManifestAnswer:
    body = None if head else stored.body
    return ManifestAnswer(digest, stored.media_type, len(stored.body), body, result)


def _verified_digest(body: bytes, header: str | None, expected: Digest | None) -> Digest | None:
    """The digest of ``body`` if it agrees with what was asked and announced, else None."""
    if expected is not None:
        return expected if expected.matches(body) else None
    if header:
        try:
            announced = parse_digest(header)
        except MirrorError:
            announced = None
        if announced is not None:
            return announced if announced.matches(body) else None
    return sha256_digest(body)


def _tag_listing(repository: str, tags: list[str], query: dict[str, str]) -> Listing:
    last = query.get("last")
    if last:
        tags = [t for t in tags if t > last]
    if "n" in query:
        tags = tags[: int(query["n"])]
    body = json.dumps({"name": repository, "tags": tags}).encode()
    return Listing(200, body, "application/json", None, {})
