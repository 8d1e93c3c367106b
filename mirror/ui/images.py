"""What the web UI needs of one stored manifest: media type, references, platforms, annotations.

Parsed once, when the manifest enters the cache (see :mod:`mirror.ui.catalog`),
and kept in memory as a few short tuples, so no page reads a manifest. Every
string here comes from an upstream: lengths and counts are bounded, and the
templates escape all of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from mirror.cache.pins import manifest_references
from mirror.oci import Digest
from mirror.stored import decode_manifest

MAX_ANNOTATIONS = 50
MAX_TEXT = 1000  # characters of an annotation key or value, or of a platform
_PLATFORM_PARTS = ("os", "architecture", "variant")


@dataclass(frozen=True, slots=True)
class Child:
    """A manifest an index names, with the platform the index gives it."""

    digest: Digest
    platform: str  # "linux/arm64/v8"; "" when the index names none


@dataclass(frozen=True, slots=True)
class ManifestFacts:
    """One cached manifest, as the repository page shows it."""

    media_type: str
    blobs: tuple[Digest, ...]  # config and layers
    children: tuple[Child, ...]  # an index's manifests
    annotations: tuple[tuple[str, str], ...]


UNREADABLE = ManifestFacts("", (), (), ())


def manifest_facts(raw: bytes) -> ManifestFacts:
    """The facts of a stored manifest object; :data:`UNREADABLE` when it is not one."""
    stored = decode_manifest(raw)
    if stored is None:
        return UNREADABLE
    refs = manifest_references(raw)
    try:
        doc = json.loads(stored.body)
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict):
        return ManifestFacts(stored.media_type[:MAX_TEXT], refs.blobs, (), ())
    platforms = _platforms(doc.get("manifests"))
    children = tuple(Child(d, platforms.get(str(d), "")) for d in refs.manifests)
    return ManifestFacts(stored.media_type[:MAX_TEXT], refs.blobs, children,
                         _annotations(doc.get("annotations")))  # fmt: skip


def _platforms(descriptors: object) -> dict[str, str]:
    found: dict[str, str] = {}
    for descriptor in descriptors if isinstance(descriptors, list) else []:
        if not isinstance(descriptor, dict) or not isinstance(descriptor.get("digest"), str):
            continue
        platform = descriptor.get("platform")
        if isinstance(platform, dict):
            parts = [platform.get(name) for name in _PLATFORM_PARTS]
            text = "/".join(p for p in parts if isinstance(p, str) and p)
            found[descriptor["digest"]] = text[:MAX_TEXT]
    return found


def _annotations(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        return ()
    pairs = [(k[:MAX_TEXT], v[:MAX_TEXT]) for k, v in value.items()
             if isinstance(k, str) and isinstance(v, str)]  # fmt: skip
    return tuple(sorted(pairs)[:MAX_ANNOTATIONS])
