"""The parsers of what clients and upstreams write, by example: one readable row per case.

tests/test_parser_properties.py states what must hold for every input
(hypothesis); these tables show what each parser makes of the inputs people
meet, and are where a regression shows by name.
"""

from __future__ import annotations

import json

import pytest

from mirror.errors import ManifestRejected, RangeNotSatisfiable
from mirror.manifest_check import check_manifest
from mirror.oci import parse_range
from mirror.upstream.auth import parse_challenge
from tests.support.manifest_samples import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    SCHEMA1,
    SCHEMA1_SIGNED,
    descriptor,
    digest_of,
)

# ----------------------------------------------------------------------------- Range

SIZE = 1000
HUGE = "9" * 5000  # past Python's int() digit limit
REFUSED = "416"


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        # (header, object size, (first, last byte) | None for the whole object | 416)
        (None, SIZE, None),
        ("bytes=0-499", SIZE, (0, 499)),
        ("bytes=0-0", SIZE, (0, 0)),
        ("bytes=999-999", SIZE, (999, 999)),
        ("bytes=500-", SIZE, (500, 999)),
        ("bytes=900-5000", SIZE, (900, 999)),  # the end is clipped to the object
        ("bytes=-200", SIZE, (800, 999)),  # the last 200 bytes
        ("bytes=-2000", SIZE, (0, 999)),  # a suffix longer than the object: all of it
        ("bytes=0000010-20", SIZE, (10, 20)),  # leading zeros
        (" bytes=1-2\t", SIZE, (1, 2)),  # whitespace around the value
        (f"bytes=0-{HUGE}", SIZE, (0, 999)),
        (f"bytes=-{HUGE}", SIZE, (0, 999)),
        ("bytes=1000-", SIZE, REFUSED),  # starts past the end
        ("bytes=5-4", SIZE, REFUSED),  # ends before it starts
        ("bytes=-0", SIZE, REFUSED),  # the last zero bytes
        (f"bytes={HUGE}-", SIZE, REFUSED),
        ("bytes=0-", 0, REFUSED),  # an empty object has no first byte
        ("bytes=-5", 0, None),  # ... but its last five bytes are all of it: nothing
        # Ignored, as RFC 9110 allows: the whole object is sent.
        ("bytes=0-1,5-6", SIZE, None),  # several ranges
        ("items=0-1", SIZE, None),  # another unit
        ("BYTES=0-1", SIZE, None),
        ("bytes=-", SIZE, None),
        ("bytes=a-b", SIZE, None),
        ("bytes=\u00b2-3", SIZE, None),  # '²'.isdigit() is true; not an ASCII digit
        ("", SIZE, None),
    ],
)
def test_range(header: str | None, size: int, expected: tuple[int, int] | str | None) -> None:
    if expected == REFUSED:
        with pytest.raises(RangeNotSatisfiable):
            parse_range(header, size)
        return
    found = parse_range(header, size)
    assert (None if found is None else (found.start, found.end)) == expected


# ----------------------------------------------------------------- manifest media type

CONFIG = descriptor("application/vnd.oci.image.config.v1+json", "config")
LAYER = descriptor("application/vnd.oci.image.layer.v1.tar+gzip", "layer")
CHILD = descriptor(OCI_MANIFEST, "child", platform={"architecture": "amd64", "os": "linux"})
IMAGE = {"schemaVersion": 2, "config": CONFIG, "layers": [LAYER]}
INDEX = {"schemaVersion": 2, "manifests": [CHILD]}
V1 = {"schemaVersion": 1, "fsLayers": [{"blobSum": digest_of("v1")}]}
V1_SIGNED = {**V1, "signatures": [{"signature": "c2ln"}]}


@pytest.mark.parametrize(
    ("content_type", "doc", "expected"),
    [
        # (Content-Type, body, media type served | ManifestRejected)
        # A manifest type in Content-Type says what it is.
        (OCI_MANIFEST, IMAGE, OCI_MANIFEST),
        (DOCKER_MANIFEST, IMAGE, DOCKER_MANIFEST),
        (OCI_INDEX, INDEX, OCI_INDEX),
        (DOCKER_LIST, INDEX, DOCKER_LIST),
        (SCHEMA1, V1, SCHEMA1),
        (f"{OCI_MANIFEST}; charset=utf-8", IMAGE, OCI_MANIFEST),
        (OCI_MANIFEST.upper(), IMAGE, OCI_MANIFEST),
        # A generic or missing Content-Type: the body's mediaType field says.
        ("application/json", {**IMAGE, "mediaType": DOCKER_MANIFEST}, DOCKER_MANIFEST),
        ("", {**INDEX, "mediaType": DOCKER_LIST}, DOCKER_LIST),
        ("text/plain", {**IMAGE, "mediaType": OCI_MANIFEST.upper()}, OCI_MANIFEST),
        # ... and without one, the body's shape.
        ("application/octet-stream", IMAGE, OCI_MANIFEST),
        (None, INDEX, OCI_INDEX),
        ("application/json", V1, SCHEMA1),
        ("application/json", V1_SIGNED, SCHEMA1_SIGNED),
        # Refused: a type that is not a manifest's, or header and body that disagree.
        ("text/html", IMAGE, ManifestRejected),
        ("application/vnd.oci.artifact.manifest.v1+json", IMAGE, ManifestRejected),
        (DOCKER_MANIFEST, {**IMAGE, "mediaType": OCI_MANIFEST}, ManifestRejected),
        ("application/json", {**IMAGE, "mediaType": "application/vnd.example+json"},
         ManifestRejected),
        (OCI_MANIFEST, INDEX, ManifestRejected),  # an index's fields under a manifest type
        (OCI_INDEX, IMAGE, ManifestRejected),
        (SCHEMA1, IMAGE, ManifestRejected),  # schemaVersion 2 under a schema 1 type
    ],
)  # fmt: skip
def test_manifest_media_type(
    content_type: str | None, doc: dict[str, object], expected: str | type[Exception]
) -> None:
    body = json.dumps(doc).encode()
    if not isinstance(expected, str):
        with pytest.raises(expected):
            check_manifest(body, content_type)
        return
    assert check_manifest(body, content_type) == expected


# ------------------------------------------------------------------ WWW-Authenticate

REALM = "https://auth.docker.io/token"


@pytest.mark.parametrize(
    ("header", "scheme", "params"),
    [
        (f'Bearer realm="{REALM}",service="registry.docker.io"', "bearer",
         {"realm": REALM, "service": "registry.docker.io"}),
        (f'Bearer realm="{REALM}",service="registry.docker.io",'
         'scope="repository:library/alpine:pull"', "bearer",
         {"realm": REALM, "service": "registry.docker.io",
          "scope": "repository:library/alpine:pull"}),
        # A comma inside a quoted value (two scopes) does not end it.
        ('Bearer realm="https://ghcr.io/token",scope="repository:a:pull,push"', "bearer",
         {"realm": "https://ghcr.io/token", "scope": "repository:a:pull,push"}),
        ('Basic realm="Registry Realm"', "basic", {"realm": "Registry Realm"}),
        ("BEARER Realm=\"x\", Service=\"y\"", "bearer", {"realm": "x", "service": "y"}),
        ('Bearer realm = "x" , service = "y"', "bearer", {"realm": "x", "service": "y"}),
        ("Bearer realm=https://h/token,service=h", "bearer",
         {"realm": "https://h/token", "service": "h"}),  # unquoted (token) values
        (r'Bearer realm="a\"b\\c"', "bearer", {"realm": 'a"b\\c'}),  # RFC 9110 quoted-pair
        ('Bearer realm=""', "bearer", {"realm": ""}),
        ("Bearer", "bearer", {}),
        ("", "", {}),
        ('Bearer realm="x",,garbage', "bearer", {"realm": "x"}),  # stops at what it cannot read
    ],
)  # fmt: skip
def test_challenge(header: str, scheme: str, params: dict[str, str]) -> None:
    challenge = parse_challenge(header)
    assert (challenge.scheme, challenge.params) == (scheme, params)
