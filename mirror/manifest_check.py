"""Is this a manifest? Checked before a manifest is stored or served.

A captive portal or a broken proxy can answer a manifest request with
``200`` and an HTML page. Taken as it came, that page was cached as the
tag's manifest, served as ``text/html`` and later served again as a stale
answer. So every manifest, from the upstream or read back from the cache,
must pass :func:`check_manifest`:

- its media type is one the mirror knows (:data:`mirror.oci.MANIFEST_MEDIA_TYPES`):
  the OCI image manifest and index, the Docker schema 2 manifest and
  manifest list, and Docker schema 1 (signed or not; still served by older
  private registries). The type comes from ``Content-Type``; when that is
  missing or generic (``application/json``, ``application/octet-stream``,
  ``text/plain``) it comes from the body. The OCI *artifact* manifest
  (``application/vnd.oci.artifact.manifest.v1+json``) is not served: it was
  dropped from OCI image-spec 1.1 before release, and artifacts (cosign
  signatures, Helm charts, sigstore bundles) are OCI image manifests with
  their own ``artifactType`` or config media type, which pass;
- the body is a JSON object whose ``schemaVersion`` is 2 (1 for schema 1),
  whose ``mediaType``, when present, is the same type, and whose required
  fields have the right types: ``config`` and ``layers`` (descriptors) for
  image manifests, ``manifests`` (descriptors) for indexes, ``fsLayers``
  for schema 1 and ``signatures`` for signed schema 1. A descriptor has a
  string ``mediaType``, a ``digest`` in the OCI digest grammar and a
  non-negative integer ``size``.

Fields the mirror does not use are not checked: registries and tools add
their own, and the spec says to ignore unknown ones.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from mirror.errors import ManifestRejected
from mirror.oci import (
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    is_digest_syntax,
)

# Parsing a 4 MiB manifest takes ~150 ms: bodies above this go to a worker thread.
_OFF_LOOP_BYTES = 256 * 1024
# Content types that say nothing about which manifest this is.
_GENERIC_TYPES = frozenset({"", "application/json", "application/octet-stream", "text/plain"})
_SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})


def check_manifest(body: bytes, content_type: str | None) -> str:
    """The manifest's media type; :class:`ManifestRejected` if ``body`` is not a manifest."""
    declared = media_type_of(content_type)
    if declared not in MANIFEST_MEDIA_TYPES and declared not in _GENERIC_TYPES:
        raise ManifestRejected(f"Content-Type is {declared[:100]!r}, not a manifest media type")
    doc = _json_object(body)
    media_type = _resolve_type(doc, declared if declared in MANIFEST_MEDIA_TYPES else None)
    _check_fields(doc, media_type)
    return media_type


async def check_manifest_off_loop(body: bytes, content_type: str | None) -> str:
    """:func:`check_manifest`, in a worker thread for a large body so the event loop keeps going."""
    if len(body) > _OFF_LOOP_BYTES:
        return await asyncio.to_thread(check_manifest, body, content_type)
    return check_manifest(body, content_type)


def media_type_of(content_type: str | None) -> str:
    """A ``Content-Type`` without its parameters, in lower case."""
    return (content_type or "").split(";", 1)[0].strip(" \t").lower()


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise ManifestRejected("the body is not JSON") from None
    if not isinstance(doc, dict):
        raise ManifestRejected("the body is not a JSON object")
    return doc


def _resolve_type(doc: dict[str, Any], declared: str | None) -> str:
    """The header's type and the body's own ``mediaType`` must agree; sniff if neither says."""
    field = doc.get("mediaType")
    if field is not None and not isinstance(field, str):
        raise ManifestRejected("mediaType is not a string")
    stated = field.lower() if field is not None else None
    if declared is not None:
        if stated is not None and stated != declared:
            raise ManifestRejected(f"Content-Type {declared} but mediaType {stated[:100]!r}")
        return declared
    if stated is not None:
        if stated not in MANIFEST_MEDIA_TYPES:
            raise ManifestRejected(f"mediaType {stated[:100]!r} is not a manifest media type")
        return stated
    if doc.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1_SIGNED if "signatures" in doc else DOCKER_SCHEMA1
    return OCI_INDEX if "manifests" in doc else OCI_MANIFEST


def _check_fields(doc: dict[str, Any], media_type: str) -> None:
    version = 1 if media_type in _SCHEMA1_TYPES else 2
    if not _is_count(doc.get("schemaVersion")) or doc["schemaVersion"] != version:
        raise ManifestRejected(f"schemaVersion is not {version}")
    if media_type in INDEX_MEDIA_TYPES:
        _descriptors(doc, "manifests")
    elif media_type in _SCHEMA1_TYPES:
        layers = doc.get("fsLayers")
        if not isinstance(layers, list) or not all(_has_digest(x, "blobSum") for x in layers):
            raise ManifestRejected("fsLayers is not a list of layers")
        if media_type == DOCKER_SCHEMA1_SIGNED and not isinstance(doc.get("signatures"), list):
            raise ManifestRejected("a signed schema 1 manifest without signatures")
    else:
        _descriptor(doc.get("config"), "config")
        _descriptors(doc, "layers")


def _descriptors(doc: dict[str, Any], field: str) -> None:
    items = doc.get(field)
    if not isinstance(items, list):
        raise ManifestRejected(f"{field} is not a list")
    for item in items:
        _descriptor(item, field)


def _descriptor(value: object, where: str) -> None:
    valid = (
        isinstance(value, dict)
        and isinstance(value.get("mediaType"), str)
        and _has_digest(value, "digest")
        and _is_count(value.get("size"))
    )
    if not valid:
        raise ManifestRejected(f"{where} holds something that is not a descriptor")


def _has_digest(value: object, field: str) -> bool:
    if not isinstance(value, dict):
        return False
    digest = value.get(field)
    return isinstance(digest, str) and is_digest_syntax(digest)


def _is_count(value: object) -> bool:
    """A JSON integer >= 0 (``true`` is an int to Python, not to JSON)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
