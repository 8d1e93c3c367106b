"""How an exported image is named in a layout's ``index.json``, and read back.

An image layout names its images with ``org.opencontainers.image.ref.name``
on the ``index.json`` descriptors. Tools write it in two forms, and both are
read:

- a bare tag (``skopeo copy … oci:DIR:TAG``): the repository must then be
  given by the operator (``--repository``), the upstream by ``--upstream`` or
  the configuration's default upstream;
- a full reference ``[registry/]repository(:tag|@digest)``, as containerd
  and the mirror's own export write it: read like a cache pin
  (:func:`mirror.cache.pins.parse_pin`), so a first component that names a
  configured upstream (or a Docker Hub alias) chooses it, and Docker Hub's
  ``library/`` rule applies.

The mirror writes the full reference (a bare tag would clash between
repositories) and, so that the layout round-trips exactly, its own
annotations in the project's reverse-DNS namespace ``org.registry-mirror``:

=================================  =========================================
``org.registry-mirror.upstream``   the configured upstream name (``docker.io``)
``org.registry-mirror.repository`` the repository in it (``library/alpine``)
``org.registry-mirror.tag``        the tag; absent for an image exported by digest
``org.registry-mirror.confirmed``  RFC 3339 time the cache last confirmed the
                                   tag upstream: the import writes the tag
                                   record with it, so ``max_stale`` and offline
                                   rules count from then, not from the import
``org.registry-mirror.subject``    on a referrer's entry (a signature, an SBOM):
                                   the digest of the manifest it refers to
=================================  =========================================

When those annotations are present they win over ``ref.name``. A referrer's
entry has no ``ref.name``: it is found by its subject, not pulled by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from mirror.cache.pins import Pin, parse_pin
from mirror.config import Config, ConfigError
from mirror.errors import MirrorError
from mirror.oci import Digest, parse_digest, validate_name, validate_tag

REF_NAME = "org.opencontainers.image.ref.name"
NAMESPACE = "org.registry-mirror"
UPSTREAM = f"{NAMESPACE}.upstream"
REPOSITORY = f"{NAMESPACE}.repository"
TAG = f"{NAMESPACE}.tag"
CONFIRMED = f"{NAMESPACE}.confirmed"
SUBJECT = f"{NAMESPACE}.subject"

# skopeo's oci:DIR:TAG form: one tag, nothing that could start a reference.
_BARE_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")


class NamingError(ValueError):
    """An ``index.json`` entry whose name cannot be mapped to upstream, repository and tag."""


@dataclass(frozen=True, slots=True)
class ImageName:
    """Where an image lives in the cache: upstream, repository and, unless by digest, tag."""

    upstream: str
    repository: str
    tag: str | None = None

    def reference(self, digest: Digest) -> str:
        """The full reference written as ``ref.name``: by tag, else by digest."""
        where = f":{self.tag}" if self.tag is not None else f"@{digest}"
        return f"{self.upstream}/{self.repository}{where}"


@dataclass(frozen=True, slots=True)
class Defaults:
    """The operator's mapping for entries without the mirror's annotations."""

    upstream: str | None = None
    repository: str | None = None


def annotations_for(name: ImageName, digest: Digest, confirmed: datetime | None) -> dict[str, str]:
    """The ``index.json`` annotations of an exported image."""
    found = {REF_NAME: name.reference(digest), UPSTREAM: name.upstream, REPOSITORY: name.repository}
    if name.tag is not None:
        found[TAG] = name.tag
    if confirmed is not None:
        found[CONFIRMED] = format_time(confirmed)
    return found


def referrer_annotations(
    upstream: str,
    repository: str,
    subject: Digest,
    tag: str | None = None,
    confirmed: datetime | None = None,
) -> dict[str, str]:
    """The ``index.json`` annotations of an exported referrer (no ``ref.name``).

    A referrer found through the tag schema (``sha256-<hex>.sig``) keeps its
    tag, so the far side finds it the same way.
    """
    found = {UPSTREAM: upstream, REPOSITORY: repository, SUBJECT: str(subject)}
    if tag is not None:
        found[TAG] = tag
    if confirmed is not None:
        found[CONFIRMED] = format_time(confirmed)
    return found


def parse_image_reference(text: str, config: Config) -> Pin:
    """``[upstream/]repository(:tag|@digest)``, read exactly as a cache pin is.

    Raises :class:`ValueError` with the pin parser's reason, without the
    ``cache.pins`` setting name it reports configuration errors under.
    """
    try:
        return parse_pin(text, config)
    except ConfigError as exc:
        raise ValueError(str(exc).removeprefix("cache.pins: ")) from None


def name_entry(annotations: dict[str, str], config: Config, defaults: Defaults) -> ImageName:
    """Map one ``index.json`` entry's annotations to an image name; :class:`NamingError` if not."""
    try:
        if UPSTREAM in annotations and REPOSITORY in annotations:
            return _annotated(annotations, config)
        return _from_ref_name(annotations.get(REF_NAME), config, defaults)
    except (MirrorError, ValueError) as exc:
        raise NamingError(str(exc)) from None


def _annotated(annotations: dict[str, str], config: Config) -> ImageName:
    upstream = annotations[UPSTREAM]
    if config.upstream(upstream) is None:
        raise NamingError(
            f"upstream {upstream!r} is not configured here; configure it (offline, any URL)"
        )
    tag = annotations.get(TAG)
    repository = validate_name(annotations[REPOSITORY])
    return ImageName(upstream, repository, validate_tag(tag) if tag is not None else None)


def _from_ref_name(ref: str | None, config: Config, defaults: Defaults) -> ImageName:
    if ref is None:
        raise NamingError(f"no {REF_NAME} annotation and no {NAMESPACE} annotations")
    text = ref
    if _BARE_TAG.fullmatch(ref):
        if defaults.repository is None:
            raise NamingError(f"{REF_NAME} {ref!r} is a bare tag: give the repository to import to")
        text = f"{defaults.repository}:{ref}"
    first = text.partition("/")[0]
    if defaults.upstream is not None and config.upstream(first) is None:
        text = f"{defaults.upstream}/{text}"
    try:
        pin = parse_image_reference(text, config)
    except ValueError as exc:
        raise NamingError(f"{REF_NAME} {ref!r}: {exc}") from None
    return ImageName(pin.upstream, pin.repository, pin.tag)


def confirmed_at(annotations: dict[str, str]) -> datetime | None:
    """The ``confirmed`` annotation as a time, None when absent or unreadable."""
    value = annotations.get(CONFIRMED)
    return parse_time(value) if value is not None else None


def subject_of(annotations: dict[str, str]) -> Digest | None:
    """The subject a referrer entry names, None for an image entry."""
    value = annotations.get(SUBJECT)
    try:
        return parse_digest(value) if value is not None else None
    except MirrorError:
        return None


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> datetime | None:
    """An RFC 3339 time (``Z`` or an offset), None when it is not one."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None
