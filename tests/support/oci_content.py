"""Small OCI content for signing fixtures: images, referrers, the referrers fallback index.

A :class:`Content` is a manifest and the blobs it needs; :func:`push_to_fake`
and :func:`push_to_registry` put it into a :class:`FakeUpstream` or a real
distribution registry, blobs first.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mirror.oci import OCI_INDEX, OCI_MANIFEST
from mirror.trust.bundles import BUNDLE_V03
from tests.support.fake_upstream import FakeUpstream
from tests.support.images import Manifest
from tests.support.registry import RegistryClient

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"


def sha256(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    """An OCI descriptor of ``data``."""
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data)}


def compact(doc: dict[str, Any]) -> bytes:
    """JSON as registries and signing tools serialise it: no spaces."""
    return json.dumps(doc, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Content:
    """A manifest (``body``, of ``media_type``) and the blobs it refers to."""

    media_type: str
    body: bytes
    blobs: list[bytes] = field(default_factory=list)

    @property
    def digest(self) -> str:
        """The manifest's digest."""
        return sha256(self.body)

    @property
    def descriptor(self) -> dict[str, Any]:
        """A descriptor of the manifest."""
        return descriptor(self.media_type, self.body)


def small_image(seed: str) -> Content:
    """A one-layer image whose bytes (and so digest) depend only on ``seed``."""
    layer = hashlib.sha256(seed.encode()).digest() * 64
    config = compact({"architecture": "amd64", "os": "linux", "seed": seed})
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": [descriptor(OCI_LAYER, layer)],
    }
    return Content(OCI_MANIFEST, compact(manifest), [config, layer])


def bundle_referrer(bundle: bytes, subject: Content, content_kind: str) -> Content:
    """A sigstore bundle attached to ``subject`` as cosign and @sigstore/oci attach it.

    ``content_kind`` is ``dsse-envelope`` or ``message-signature``.
    """
    empty = b"{}"
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": BUNDLE_V03,
        "config": descriptor(OCI_EMPTY, empty),
        "layers": [descriptor(BUNDLE_V03, bundle)],
        "subject": subject.descriptor,
        "annotations": {"dev.sigstore.bundle.content": content_kind},
    }
    return Content(OCI_MANIFEST, compact(manifest), [empty, bundle])


def referrers_index(referrers: list[Content]) -> Content:
    """The referrers fallback index (tag ``sha256-<hex>`` of the subject) listing ``referrers``."""
    entries = []
    for referrer in referrers:
        doc = json.loads(referrer.body)
        entry = referrer.descriptor
        entry["artifactType"] = doc.get("artifactType") or doc["config"]["mediaType"]
        entries.append(entry)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    return Content(OCI_INDEX, compact(index))


def fallback_tag(digest: str) -> str:
    """``sha256:abc`` -> ``sha256-abc``: the referrers tag schema's tag."""
    return digest.replace(":", "-", 1)


def push_to_fake(
    up: FakeUpstream, repository: str, content: Content, tag: str | None = None
) -> str:
    """Add ``content`` to a fake upstream (blobs served only under ``repository``)."""
    for blob in content.blobs:
        up.add_blob(blob, repository)
    return up.add_manifest(repository, content.body, content.media_type, tag=tag)


def push_to_registry(
    client: RegistryClient, repository: str, content: Content, tag: str | None = None
) -> str:
    """Push ``content`` to a real registry over its HTTP API, by tag or by digest."""
    with tempfile.TemporaryDirectory() as folder:
        for blob in content.blobs:
            if not client.has_blob(repository, sha256(blob)):
                path = Path(folder) / "blob"
                path.write_bytes(blob)
                client.push_blob(repository, sha256(blob), path, len(blob))
    manifest = Manifest(digest=content.digest, media_type=content.media_type, data=content.body)
    client.push_manifest(repository, tag or content.digest, manifest)
    return content.digest
