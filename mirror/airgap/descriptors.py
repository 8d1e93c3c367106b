"""OCI descriptors and what a manifest refers to, read from manifest and ``index.json`` bytes.

Pure: no I/O. A manifest has already passed :func:`mirror.manifest_check.check_manifest`
when :func:`manifest_links` reads it, so only the descriptors' own fields are
checked here; ``index.json`` is checked in full by :func:`parse_index`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mirror.airgap.errors import LayoutError
from mirror.errors import MirrorError
from mirror.oci import INDEX_MEDIA_TYPES, OCI_INDEX, Digest, parse_digest

LAYOUT_VERSION = b'{"imageLayoutVersion":"1.0.0"}'


@dataclass(frozen=True, slots=True)
class Descriptor:
    """A content descriptor: what a manifest, an index or ``index.json`` points at.

    ``size`` is None only for Docker schema 1 layers, whose ``blobSum``
    carries no size.
    """

    media_type: str
    digest: Digest
    size: int | None
    annotations: dict[str, str] = field(default_factory=dict)
    platform: str | None = None
    artifact_type: str | None = None

    @property
    def is_index(self) -> bool:
        """Whether the descriptor names an image index or a Docker manifest list."""
        return self.media_type in INDEX_MEDIA_TYPES

    def to_json(self) -> dict[str, Any]:
        """The descriptor as it is written into ``index.json``."""
        doc: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest)}
        doc["size"] = self.size
        if self.artifact_type is not None:
            doc["artifactType"] = self.artifact_type
        if self.annotations:
            doc["annotations"] = dict(sorted(self.annotations.items()))
        return doc


@dataclass(frozen=True, slots=True)
class Links:
    """What one manifest refers to: child manifests (of an index) and blobs."""

    manifests: tuple[Descriptor, ...] = ()
    blobs: tuple[Descriptor, ...] = ()
    subject: Digest | None = None


def parse_descriptor(value: object, where: str) -> Descriptor:
    """One descriptor object; :class:`LayoutError` naming ``where`` if it is not one."""
    if not isinstance(value, dict):
        raise LayoutError(f"{where}: not a descriptor object")
    media_type, size = value.get("mediaType"), value.get("size")
    if not isinstance(media_type, str):
        raise LayoutError(f"{where}: mediaType missing")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise LayoutError(f"{where}: size is not a non-negative integer")
    artifact_type = value.get("artifactType")
    return Descriptor(
        media_type=media_type,
        digest=_digest(value.get("digest"), where),
        size=size,
        annotations=_annotations(value.get("annotations"), where),
        platform=_platform(value.get("platform")),
        artifact_type=artifact_type if isinstance(artifact_type, str) else None,
    )


def manifest_links(body: bytes, where: str) -> Links:
    """Children, blobs and subject of a checked manifest; :class:`LayoutError` if unreadable."""
    doc = json.loads(body)
    children = tuple(
        parse_descriptor(entry, f"{where} manifests[{i}]")
        for i, entry in enumerate(_list(doc.get("manifests")))
    )
    blobs = [parse_descriptor(doc["config"], f"{where} config")] if "config" in doc else []
    blobs += [
        parse_descriptor(entry, f"{where} layers[{i}]")
        for i, entry in enumerate(_list(doc.get("layers")))
    ]
    # Docker schema 1 lists its layers as fsLayers[].blobSum, without sizes.
    blobs += [
        Descriptor("application/octet-stream", _digest(entry.get("blobSum"), where), None)
        for entry in _list(doc.get("fsLayers"))
        if isinstance(entry, dict)
    ]
    subject = doc.get("subject")
    found = parse_descriptor(subject, f"{where} subject").digest if subject else None
    return Links(children, tuple(_unique(blobs)), found)


def parse_index(body: bytes) -> list[Descriptor]:
    """The entries of an ``index.json``; :class:`LayoutError` when it is not an image index."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise LayoutError("index.json is not JSON") from None
    if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
        raise LayoutError("index.json is not an image index (schemaVersion 2)")
    entries = doc.get("manifests")
    if not isinstance(entries, list):
        raise LayoutError("index.json has no manifests list")
    return [
        parse_descriptor(entry, f"index.json manifests[{i}]") for i, entry in enumerate(entries)
    ]


def index_document(entries: list[Descriptor]) -> bytes:
    """``index.json`` for ``entries``, in the order given, ending with a newline."""
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [entry.to_json() for entry in entries],
    }
    return json.dumps(doc, indent=1).encode() + b"\n"


def _digest(value: object, where: str) -> Digest:
    if not isinstance(value, str):
        raise LayoutError(f"{where}: digest missing")
    try:
        return parse_digest(value)
    except MirrorError as exc:
        raise LayoutError(f"{where}: {exc}") from None


def _annotations(value: object, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise LayoutError(f"{where}: annotations must map strings to strings")
    return dict(value)


def _platform(value: object) -> str | None:
    if not isinstance(value, dict):
        return None
    parts = [value.get("os"), value.get("architecture"), value.get("variant")]
    return "/".join(p for p in parts if isinstance(p, str) and p) or None


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _unique(descriptors: list[Descriptor]) -> list[Descriptor]:
    """Each digest once, first occurrence kept (a layer may repeat in a manifest)."""
    seen: set[Digest] = set()
    unique = []
    for descriptor in descriptors:
        if descriptor.digest not in seen:
            seen.add(descriptor.digest)
            unique.append(descriptor)
    return unique
