"""Which images an export takes: ``--image``, ``--file``, ``--upstream``, ``--repository``.

- ``--image REF`` (repeatable) and ``--file LIST`` (one reference a line,
  ``#`` comments) name images exactly, in the syntax of cache pins
  (``[upstream/]repository(:tag|@digest)``, parsed by the same parser).
- ``--upstream NAME`` (repeatable) keeps images of those upstreams;
  ``--repository PATTERN`` (repeatable) keeps repositories matching a shell
  pattern (``library/*``; ``*`` also crosses ``/``).
- Named images are always taken; the filters choose among the cache's
  tagged images; with neither, everything is taken.

A named tag the cache does not hold is reported as unmatched, never
silently dropped.
"""

from __future__ import annotations

import fnmatch
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mirror.airgap.content import SourceImage
from mirror.airgap.errors import SelectionError
from mirror.airgap.names import parse_image_reference
from mirror.cache.pins import Pin
from mirror.config import Config


@dataclass(frozen=True, slots=True)
class Selection:
    """The parsed selection flags."""

    images: tuple[Pin, ...] = ()
    upstreams: frozenset[str] = frozenset()
    repositories: tuple[str, ...] = ()

    @property
    def everything(self) -> bool:
        """No flag given: every image is taken."""
        return not (self.images or self.upstreams or self.repositories)

    @property
    def filtered(self) -> bool:
        """Whether ``--upstream`` or ``--repository`` was given."""
        return bool(self.upstreams or self.repositories)

    def keeps(self, upstream: str, repository: str) -> bool:
        """Whether the filters keep an image of ``repository`` in ``upstream``."""
        if self.upstreams and upstream not in self.upstreams:
            return False
        if not self.repositories:
            return True
        return any(fnmatch.fnmatchcase(repository, pattern) for pattern in self.repositories)


@dataclass
class Selected:
    """The images chosen, and the named ones the cache does not have."""

    images: list[SourceImage] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)


def parse_selection(
    config: Config,
    *,
    images: Sequence[str] = (),
    listing: Path | None = None,
    upstreams: Sequence[str] = (),
    repositories: Sequence[str] = (),
) -> Selection:
    """Validate the flags; :class:`SelectionError` names the first bad one."""
    texts = [("--image", text) for text in images]
    if listing is not None:
        texts += [(f"{listing}:{n}", text) for n, text in _listing_lines(listing)]
    pins = []
    for where, text in texts:
        try:
            pins.append(parse_image_reference(text, config))
        except ValueError as exc:
            raise SelectionError(f"{where}: {exc}") from None
    for name in upstreams:
        if config.upstream(name) is None:
            known = ", ".join(u.name for u in config.upstreams)
            raise SelectionError(f"--upstream {name!r} is not configured (configured: {known})")
    for pattern in repositories:
        if not pattern.strip():
            raise SelectionError("--repository: empty pattern")
    return Selection(tuple(pins), frozenset(upstreams), tuple(repositories))


def _listing_lines(listing: Path) -> list[tuple[int, str]]:
    try:
        lines = listing.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SelectionError(f"--file {listing}: {exc}") from None
    found = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if text:
            found.append((number, text))
    return found


async def select_images(listed: AsyncIterator[SourceImage], selection: Selection) -> Selected:
    """Apply ``selection`` to the source's tagged images."""
    wanted_tags = {(p.upstream, p.repository, p.tag) for p in selection.images if p.tag}
    chosen: dict[tuple[str, str, str | None, str], SourceImage] = {}
    found_tags = set()
    async for image in listed:
        key = (image.upstream, image.repository, image.tag)
        named = key in wanted_tags
        if named:
            found_tags.add(key)
        if named or selection.everything or (selection.filtered and selection.keeps(*key[:2])):
            chosen[(*key, str(image.digest))] = image
    for pin in selection.images:
        if pin.digest is not None:
            image = SourceImage(pin.upstream, pin.repository, None, pin.digest)
            chosen.setdefault((pin.upstream, pin.repository, None, str(pin.digest)), image)
    unmatched = [str(p) for p in selection.images if p.tag and
                 (p.upstream, p.repository, p.tag) not in found_tags]  # fmt: skip
    return Selected(sorted(chosen.values(), key=_order), unmatched)


def _order(image: SourceImage) -> tuple[str, str, str, str]:
    return (image.upstream, image.repository, image.tag or "", str(image.digest))
