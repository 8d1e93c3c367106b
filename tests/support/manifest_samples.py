"""Manifests as registries really serve them, and answers that are not manifests.

``VALID`` holds one document of every type the mirror serves, and the
artifacts people push as OCI image manifests (cosign signatures, Helm
charts, sigstore bundles), with the ``Content-Type`` a registry sends and
the media type the mirror must serve them as. ``INVALID`` holds what a
captive portal, a broken proxy or a broken registry may send instead.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"


def digest_of(seed: str) -> str:
    """A well-formed sha256 digest derived from ``seed``."""
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def descriptor(media_type: str, seed: str, size: int = 1234, **extra: Any) -> dict[str, Any]:
    """A content descriptor."""
    return {"mediaType": media_type, "digest": digest_of(seed), "size": size, **extra}


def encode(doc: object) -> bytes:
    """JSON bytes as a registry would store them."""
    return json.dumps(doc, indent=3).encode()


def _image(media_type: str | None, config: str, layer: str, **extra: Any) -> bytes:
    doc: dict[str, Any] = {"schemaVersion": 2}
    if media_type is not None:
        doc["mediaType"] = media_type
    doc["config"] = descriptor(config, "config", 233)
    doc["layers"] = [descriptor(layer, "layer", 2_811_969)]
    return encode({**doc, **extra})


_PLATFORM = {"architecture": "amd64", "os": "linux"}
_SCHEMA1 = {
    "schemaVersion": 1,
    "name": "library/old",
    "tag": "1.0",
    "architecture": "amd64",
    "fsLayers": [{"blobSum": digest_of("s1-layer")}],
    "history": [{"v1Compatibility": '{"id":"abc"}'}],
}

# (name, Content-Type sent, body, media type the mirror serves it as)
VALID: list[tuple[str, str, bytes, str]] = [
    ("oci-image", OCI_MANIFEST, _image(OCI_MANIFEST, "application/vnd.oci.image.config.v1+json",
                                       "application/vnd.oci.image.layer.v1.tar+gzip"),
     OCI_MANIFEST),
    ("oci-index", OCI_INDEX, encode({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [descriptor(OCI_MANIFEST, "child", 1000, platform=_PLATFORM)],
    }), OCI_INDEX),
    ("docker-v2", DOCKER_MANIFEST, _image(
        DOCKER_MANIFEST, "application/vnd.docker.container.image.v1+json",
        "application/vnd.docker.image.rootfs.diff.tar.gzip"), DOCKER_MANIFEST),
    ("docker-list", DOCKER_LIST, encode({
        "schemaVersion": 2, "mediaType": DOCKER_LIST,
        "manifests": [descriptor(DOCKER_MANIFEST, "child", 528, platform=_PLATFORM)],
    }), DOCKER_LIST),
    ("schema1-signed", SCHEMA1_SIGNED, encode({**_SCHEMA1, "signatures": [{"header": {}}]}),
     SCHEMA1_SIGNED),
    ("schema1-as-json", "application/json", encode(_SCHEMA1), SCHEMA1),
    # A cosign signature: an image manifest whose layer is a simple-signing payload.
    ("cosign-signature", OCI_MANIFEST, encode({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", "sig-config", 233),
        "layers": [descriptor("application/vnd.dev.cosign.simplesigning.v1+json", "payload", 250,
                              annotations={"dev.cosignproject.cosign/signature": "MEUCIQ=="})],
    }), OCI_MANIFEST),
    # Helm writes no mediaType field: the Content-Type says what it is.
    ("helm-chart", OCI_MANIFEST, _image(None, "application/vnd.cncf.helm.config.v1+json",
                                        "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
                                        annotations={"org.opencontainers.image.title": "app"}),
     OCI_MANIFEST),
    # A sigstore bundle attached as an OCI 1.1 referrer: artifactType, empty config, subject.
    ("sigstore-bundle", OCI_MANIFEST, encode({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "config": descriptor(EMPTY, "{}", 2),
        "layers": [descriptor("application/vnd.dev.sigstore.bundle.v0.3+json", "bundle", 4567)],
        "subject": descriptor(OCI_INDEX, "subject", 1609),
        "annotations": {"dev.sigstore.bundle.content": "dsse-envelope"},
    }), OCI_MANIFEST),
    ("content-type-parameters", OCI_MANIFEST + "; charset=utf-8",
     _image(OCI_MANIFEST, EMPTY, "application/octet-stream"), OCI_MANIFEST),
    ("generic-type-sniffed", "application/octet-stream",
     _image(DOCKER_MANIFEST, "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.image.rootfs.diff.tar.gzip"), DOCKER_MANIFEST),
    ("no-content-type-index", "", encode({"schemaVersion": 2, "manifests": []}), OCI_INDEX),
]  # fmt: skip

_GOOD = json.loads(VALID[0][2])
_DEEP = b'{"schemaVersion":2,"config":' + b"[" * 100_000 + b"]" * 100_000 + b"}"

# (name, Content-Type sent, body)
INVALID: list[tuple[str, str, bytes]] = [
    ("captive-portal", "text/html; charset=utf-8",
     b"<!DOCTYPE html><html><body>Please accept the terms of use</body></html>"),
    ("html-as-json", "application/json", b"<html><body>502 Bad Gateway</body></html>"),
    ("html-with-oci-type", OCI_MANIFEST, b"<html><body>Access denied</body></html>"),
    ("json-as-text-html", "text/html", VALID[0][2]),
    ("artifact-manifest", "application/vnd.oci.artifact.manifest.v1+json", encode({
        "mediaType": "application/vnd.oci.artifact.manifest.v1+json",
        "artifactType": "application/vnd.example", "blobs": []})),
    ("empty-body", OCI_MANIFEST, b""),
    ("json-array", OCI_MANIFEST, b"[]"),
    ("json-string", OCI_MANIFEST, b'"manifest"'),
    ("not-utf8", OCI_MANIFEST, b'{"schemaVersion":2,"x":"\xff\xfe"}'),
    ("truncated", OCI_MANIFEST, VALID[0][2][:-20]),
    ("deep-nesting", OCI_MANIFEST, _DEEP),
    ("schema-version-string", OCI_MANIFEST, encode({**_GOOD, "schemaVersion": "2"})),
    ("schema-version-true", OCI_MANIFEST, encode({**_GOOD, "schemaVersion": True})),
    ("schema-version-1", OCI_MANIFEST, encode({**_GOOD, "schemaVersion": 1})),
    ("no-schema-version", OCI_MANIFEST, encode({k: v for k, v in _GOOD.items()
                                                if k != "schemaVersion"})),
    ("media-type-disagrees", DOCKER_MANIFEST, VALID[0][2]),
    ("media-type-not-string", OCI_MANIFEST, encode({**_GOOD, "mediaType": ["x"]})),
    ("unknown-media-type-field", "application/json",
     encode({**_GOOD, "mediaType": "application/vnd.example+json"})),
    ("no-config", OCI_MANIFEST, encode({k: v for k, v in _GOOD.items() if k != "config"})),
    ("layers-not-list", OCI_MANIFEST, encode({**_GOOD, "layers": {"0": _GOOD["layers"][0]}})),
    ("layer-without-digest", OCI_MANIFEST, encode({**_GOOD, "layers": [{"mediaType": "x",
                                                                        "size": 1}]})),
    ("layer-bad-digest", OCI_MANIFEST, encode({**_GOOD, "layers": [{
        "mediaType": "x", "digest": "sha256:../../etc/passwd", "size": 1}]})),
    ("negative-size", OCI_MANIFEST, encode({**_GOOD, "config": {**_GOOD["config"], "size": -1}})),
    ("size-as-string", OCI_MANIFEST, encode({**_GOOD, "config": {**_GOOD["config"],
                                                                  "size": "233"}})),
    ("size-as-float", OCI_MANIFEST, encode({**_GOOD, "config": {**_GOOD["config"],
                                                                 "size": 233.0}})),
    ("index-without-manifests", OCI_INDEX, encode({"schemaVersion": 2, "mediaType": OCI_INDEX})),
    ("index-of-strings", OCI_INDEX, encode({"schemaVersion": 2, "manifests": ["sha256:abc"]})),
    ("schema1-without-layers", SCHEMA1, encode({**_SCHEMA1, "fsLayers": None})),
    ("schema1-signed-unsigned", SCHEMA1_SIGNED, encode(_SCHEMA1)),
]  # fmt: skip
