"""Pinned images, and what cached manifests refer to.

A pin names an image the way ``docker pull`` does, with the upstream first::

    docker.io/library/alpine:3.20
    ghcr.io/org/img@sha256:<hex>
    alpine:3.20                      (default upstream; Docker Hub adds library/)

The first component is an upstream when it is the name of a configured
upstream (or a Docker Hub alias, see :mod:`mirror.docker_hub`); otherwise the pin is for the default
upstream. A tag pin follows the tag's cached records; a digest pin names the
manifest itself. Either way the manifest, the child manifests of an index and
every blob they refer to are never evicted, nor are a tag pin's records. Pins
are resolved against what is cached at each eviction pass, so an image pinned
before its first pull is protected from the moment it arrives, and a moved tag
protects its new target.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from mirror.config import Config, ConfigError
from mirror.docker_hub import official_repository
from mirror.errors import MirrorError
from mirror.oci import Digest, parse_digest, validate_name, validate_tag
from mirror.storage import layout
from mirror.storage.base import Storage, StorageError
from mirror.stored import decode_manifest, decode_record


@dataclass(frozen=True, slots=True)
class Pin:
    """One pinned image: a tag or a digest in a repository of an upstream."""

    upstream: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    def __str__(self) -> str:
        ref = f"@{self.digest}" if self.digest is not None else f":{self.tag}"
        return f"{self.upstream}/{self.repository}{ref}"


def parse_pin(text: str, config: Config) -> Pin:
    """Parse one ``cache.pins`` entry; raise :class:`ConfigError` naming it."""
    try:
        return _parse_pin(text.strip(), config)
    except (MirrorError, ValueError) as exc:
        raise ConfigError(f"cache.pins: {text!r} is not an image reference: {exc}") from None


def _parse_pin(text: str, config: Config) -> Pin:
    name, at, digest_text = text.partition("@")
    tag: str | None = None
    if not at:
        slash = name.rfind("/")
        colon = name.rfind(":")
        if colon <= slash:
            raise ValueError("needs :tag or @digest")
        name, tag = name[:colon], validate_tag(name[colon + 1 :])
    digest = parse_digest(digest_text) if at else None
    upstream = config.default_upstream
    first, sep, rest = name.partition("/")
    named = config.upstream_named(first) if sep else None
    if named is not None:
        upstream, name = named, rest
    repository = official_repository(validate_name(name), docker_hub=upstream.is_docker_hub)
    return Pin(upstream.name, repository, tag, digest)


def parse_pins(config: Config) -> list[Pin]:
    """Every configured pin, validated."""
    return [parse_pin(text, config) for text in config.cache.pins]


@dataclass(frozen=True, slots=True)
class References:
    """The digests a manifest refers to."""

    blobs: tuple[Digest, ...] = ()
    manifests: tuple[Digest, ...] = ()


def manifest_references(stored: bytes) -> References:
    """What a stored manifest object refers to; nothing if unreadable."""
    manifest = decode_manifest(stored)
    if manifest is None:
        return References()
    try:
        doc = json.loads(manifest.body)
    except (ValueError, RecursionError):
        return References()
    if not isinstance(doc, dict):
        return References()
    blobs = [_digest_of(doc.get("config"))]
    blobs += [_digest_of(layer) for layer in _list(doc.get("layers"))]
    # Docker schema 1 lists its layers as fsLayers[].blobSum.
    blobs += [_digest_of(layer, "blobSum") for layer in _list(doc.get("fsLayers"))]
    children = [_digest_of(child) for child in _list(doc.get("manifests"))]
    return References(
        tuple(d for d in blobs if d is not None), tuple(d for d in children if d is not None)
    )


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _digest_of(descriptor: object, field: str = "digest") -> Digest | None:
    if not isinstance(descriptor, dict) or not isinstance(descriptor.get(field), str):
        return None
    try:
        return parse_digest(descriptor[field])
    except MirrorError:
        return None


async def image_keys(storage: Storage, upstream: str, roots: list[Digest]) -> set[str]:
    """Storage keys of the manifests ``roots``, their child manifests and all their blobs.

    Only cached manifests can be followed; missing ones are still named, so
    a manifest that arrives later is already covered.
    """
    keys: set[str] = set()
    pending = list(roots)
    while pending:
        digest = pending.pop()
        key = layout.manifest_key(upstream, digest)
        if key in keys:
            continue
        keys.add(key)
        try:
            raw = await storage.get(key)
        except StorageError:
            raw = None
        if raw is None:
            continue
        refs = manifest_references(raw)
        keys.update(layout.blob_key(upstream, blob) for blob in refs.blobs)
        pending.extend(refs.manifests)
    return keys


async def records_of_tag(
    storage: Storage, upstream: str, repository: str, tag: str
) -> dict[str, Digest | None]:
    """The cached records of one tag (any Accept variant): key -> the manifest it points to."""
    found: dict[str, Digest | None] = {}
    async for info in storage.walk(layout.tag_prefix(upstream, repository, tag)):
        if layout.parse_tag_key(info.key) != (upstream, repository, tag):
            continue  # a deeper repository sharing the prefix
        found[info.key] = await record_digest(storage, info.key)
    return found


async def record_digest(storage: Storage, key: str) -> Digest | None:
    """The digest a tag record points to, None if it is gone or unreadable."""
    try:
        raw = await storage.get(key)
    except StorageError:
        return None
    record = decode_record(raw) if raw is not None else None
    return parse_digest(record.digest) if record is not None else None


async def pinned_keys(storage: Storage, pins: list[Pin]) -> set[str]:
    """Every key the pins protect, resolved against what is cached now.

    For a tag pin that includes the tag's records: without them the tag
    would no longer lead to its image, offline or at the next pass.
    """
    keys: set[str] = set()
    for pin in pins:
        if pin.digest is not None:
            roots = [pin.digest]
        else:
            assert pin.tag is not None
            records = await records_of_tag(storage, pin.upstream, pin.repository, pin.tag)
            keys |= set(records)
            roots = [digest for digest in records.values() if digest is not None]
        keys |= await image_keys(storage, pin.upstream, roots)
    return keys
