"""One repository's tags as the repository page shows them, from the catalog in memory."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from mirror.cache.pins import Pin
from mirror.oci import Digest
from mirror.ui.catalog import Catalog, Record
from mirror.ui.images import Child
from mirror.ui.model import PinState, PlatformImage, SignatureStatus, TagDetail, TagQuery
from mirror.ui.query import cut_page

TagPage = tuple[tuple[TagDetail, ...], int, int]  # (the page's tags, the page, how many pages)

# The optional hook through which content trust tells the signature status of
# an image: (upstream, repository, digest, tag) -> status (mirror.ui.signatures).
# Without one, every tag shows "not checked".
SignatureLookup = Callable[[str, str, str, str], SignatureStatus]


def pin_state(pins: Iterable[Pin], configured: Iterable[Pin], ref: Pin, digest: str) -> PinState:
    """Whether a tag is pinned, and by whom (a configured pin wins: only the config undoes it)."""
    if any(_covers(p, ref, digest) for p in configured):
        return PinState.CONFIGURED
    return PinState.PINNED if ref in set(pins) else PinState.UNPINNED


def _covers(pin: Pin, ref: Pin, digest: str) -> bool:
    if (pin.upstream, pin.repository) != (ref.upstream, ref.repository):
        return False
    return pin.tag == ref.tag if pin.digest is None else str(pin.digest) == digest


class TagDetails:
    """Builds :class:`TagDetail` values of one repository."""

    def __init__(
        self, catalog: Catalog, pin_of: Callable[[Pin, str], PinState],
        signatures: SignatureLookup | None,
    ) -> None:  # fmt: skip
        self._catalog = catalog
        self._pin_of = pin_of
        self._signatures = signatures

    def page(self, upstream: str, repository: str, query: TagQuery) -> TagPage:
        """One page of the repository's tags, most recently pulled first (as select_tags)."""
        tags = self._catalog.tags(upstream, repository)
        used = {tag: self._catalog.last_used(r.key for r in records) or None
                for tag, records in tags.items()}  # fmt: skip
        # Ordered and cut on the cheap facts first: only the page's tags are built in full.
        order = sorted(used, key=lambda t: (used[t] is None, -(used[t] or 0.0), t))
        shown, page, pages = cut_page(order, query.page, query.per_page)
        details = tuple(self._detail(upstream, repository, t, tags[t]) for t in shown)
        return details, page, pages

    def _detail(self, upstream: str, repository: str, tag: str, records: list[Record]) -> TagDetail:
        keys = self._catalog.record_keys(upstream, repository, tag)
        digest = _newest_digest(self._catalog, records)
        facts = self._catalog.manifest(upstream, digest) if digest is not None else None
        image = self._catalog.image_keys(upstream, [digest] if digest is not None else [])
        text = str(digest) if digest is not None else ""
        signature = SignatureStatus()
        if self._signatures is not None and digest is not None:
            signature = self._signatures(upstream, repository, text, tag)
        return TagDetail(
            tag=tag, digest=text, media_type=facts.media_type if facts else "",
            size=self._catalog.size_of(image | keys),
            last_pulled=self._catalog.last_used(keys) or None,
            pin=self._pin_of(Pin(upstream, repository, tag), text),
            platforms=self._platforms(upstream, digest), signature=signature,
            annotations=facts.annotations if facts else (),
        )  # fmt: skip

    def _platforms(self, upstream: str, digest: Digest | None) -> tuple[PlatformImage, ...]:
        if digest is None:
            return ()
        facts = self._catalog.manifest(upstream, digest)
        if facts is None or not facts.children:
            size = self._catalog.size_of(self._catalog.image_keys(upstream, [digest]))
            return (PlatformImage("", str(digest), size, facts is not None),)
        return tuple(self._platform(upstream, child) for child in facts.children)

    def _platform(self, upstream: str, child: Child) -> PlatformImage:
        size = self._catalog.size_of(self._catalog.image_keys(upstream, [child.digest]))
        cached = self._catalog.manifest(upstream, child.digest) is not None
        return PlatformImage(child.platform, str(child.digest), size, cached)


def _newest_digest(catalog: Catalog, records: list[Record]) -> Digest | None:
    """The digest of the tag's most recently used record (its Accept variants may differ)."""
    readable = [r for r in records if r.digest is not None]
    if not readable:
        return None
    return max(readable, key=lambda r: catalog.last_used([r.key])).digest
