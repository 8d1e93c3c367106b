"""The stored form of a subject's referrers: an OCI image index under its fallback tag.

The referrers of an image (signatures, SBOMs, attestations: manifests whose
``subject`` is its digest) are kept as an image index stored like any
manifest, named by a tag record of the variant ``referrers`` of the
subject's fallback tag (``sha256-<hex>``, the distribution spec's tag
schema). The pull-through side (:mod:`mirror.proxy.referrers`) and the air
gap (:mod:`mirror.airgap.cache_content`) read and write this one format.
"""

from __future__ import annotations

import json
import re
from typing import Any

from mirror.errors import MirrorError
from mirror.oci import OCI_INDEX, parse_digest

__all__ = [
    "MAX_REFERRERS",
    "REFERRERS_VARIANT",
    "descriptors_of",
    "fallback_tag",
    "index_body",
    "is_fallback_tag",
    "json_object",
    "referrer_descriptor",
    "subject_of",
    "valid_descriptors",
]

#: the tag-record variant under which a subject's referrers index is kept
REFERRERS_VARIANT = "referrers"
#: descriptors kept per subject (a referrers answer is bounded like a manifest)
MAX_REFERRERS = 1000
_DESCRIPTOR_STRINGS = ("mediaType", "digest", "artifactType")
_FALLBACK_TAG = re.compile(r"sha(?:256|512)-[0-9a-f]{64}")


def fallback_tag(digest: str) -> str:
    """``sha256:abc`` -> ``sha256-abc``: the referrers tag schema's tag of ``digest``.

    As the distribution spec truncates it (algorithm to 32, encoded part to 64
    characters), so a sha512 digest still makes a valid tag.
    """
    algorithm, _, encoded = digest.partition(":")
    return f"{algorithm[:32]}-{encoded[:64]}"


def is_fallback_tag(tag: str) -> bool:
    """Whether ``tag`` is a referrers fallback tag: an index of a subject's referrers."""
    return _FALLBACK_TAG.fullmatch(tag) is not None


def valid_descriptors(entries: list[Any]) -> tuple[dict[str, Any], ...]:
    """The well-formed descriptors among ``entries``, with only the fields the spec names."""
    kept = []
    for entry in entries[:MAX_REFERRERS]:
        if not isinstance(entry, dict):
            continue
        size = entry.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            continue
        if not all(isinstance(entry.get(f, ""), str) for f in _DESCRIPTOR_STRINGS):
            continue
        if not isinstance(entry.get("mediaType"), str) or not _is_digest(entry.get("digest")):
            continue
        descriptor = {k: entry[k] for k in (*_DESCRIPTOR_STRINGS, "size") if k in entry}
        annotations = entry.get("annotations")
        if isinstance(annotations, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
        ):
            descriptor["annotations"] = annotations
        kept.append(descriptor)
    return tuple(kept)


def descriptors_of(body: bytes) -> tuple[dict[str, Any], ...]:
    doc = json_object(body)
    entries = doc.get("manifests") if doc is not None else None
    return valid_descriptors(entries) if isinstance(entries, list) else ()


def index_body(entries: list[dict[str, Any]]) -> bytes:
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    return json.dumps(doc, separators=(",", ":")).encode()


def json_object(body: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):  # deep nesting: no index
        return None
    return doc if isinstance(doc, dict) else None


def _is_digest(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parse_digest(value)
    except MirrorError:
        return False
    return True


def referrer_descriptor(
    digest: str, media_type: str, body: bytes, doc: dict[str, Any]
) -> dict[str, Any]:
    """The referrers-index entry of one manifest (``doc``: its parsed ``body``).

    ``artifactType`` is the manifest's, else its config's media type, as the
    distribution spec has registries fill it in.
    """
    entry: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": len(body)}
    config = doc.get("config")
    artifact = doc.get("artifactType") or (
        config.get("mediaType") if isinstance(config, dict) else None
    )
    if isinstance(artifact, str):
        entry["artifactType"] = artifact
    annotations = doc.get("annotations")
    if isinstance(annotations, dict) and all(isinstance(v, str) for v in annotations.values()):
        entry["annotations"] = annotations
    return entry


def subject_of(doc: dict[str, Any]) -> str | None:
    """The digest a manifest names as its ``subject``, if it names a well-formed one."""
    subject = doc.get("subject")
    digest = subject.get("digest") if isinstance(subject, dict) else None
    return digest if _is_digest(digest) else None
