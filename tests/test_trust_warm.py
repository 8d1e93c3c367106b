"""warm takes an image's referrers along, recursively, so an offline copy verifies.

The connected side warms through a mirror that checks nothing (``allow``);
the offline side, on the same cache, requires the publisher's signature:
it must find the signature, list the referrers (an SBOM, and the SBOM's own
signature) and serve their blobs without any upstream.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import aiohttp

from mirror.oci import OCI_MANIFEST
from mirror.warm import warm
from tests.support.cosign import CosignKey
from tests.support.mirror_app import run_mirror
from tests.support.oci_content import (
    OCI_EMPTY,
    Content,
    compact,
    descriptor,
    fallback_tag,
    push_to_registry,
    referrers_index,
    small_image,
)
from tests.support.registry import start_registry
from tests.support.trust_mirror import fetch, signature_for, trust_config

REPOSITORY = "acme/app"
KEY = CosignKey.generate()
SBOM_TYPE = "application/spdx+json"


def sbom_of(subject: Content) -> Content:
    """An SBOM attached to ``subject`` as an OCI referrer."""
    sbom = compact({"spdxVersion": "SPDX-2.3", "name": subject.digest})
    manifest = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SBOM_TYPE,
        "config": descriptor(OCI_EMPTY, b"{}"), "layers": [descriptor(SBOM_TYPE, sbom)],
        "subject": subject.descriptor,
    }  # fmt: skip
    return Content(OCI_MANIFEST, compact(manifest), [b"{}", sbom])


async def referrer_digests(http: aiohttp.ClientSession, url: str, digest: str) -> set[str]:
    async with http.get(f"{url}/v2/{REPOSITORY}/referrers/{digest}") as resp:
        assert resp.status == 200
        return {entry["digest"] for entry in (await resp.json())["manifests"]}


async def test_warm_carries_signatures_and_referrers_to_an_offline_mirror(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    image = small_image("warm-signed")
    signature = signature_for(KEY, REPOSITORY, image.digest)
    sbom = sbom_of(image)
    sbom_signature = signature_for(KEY, REPOSITORY, sbom.digest)
    registry = start_registry(tmp_path / "registry")
    try:
        client = registry.client()
        push_to_registry(client, REPOSITORY, image, "1.0")
        push_to_registry(client, REPOSITORY, signature, fallback_tag(image.digest) + ".sig")
        push_to_registry(client, REPOSITORY, sbom)
        push_to_registry(client, REPOSITORY, referrers_index([sbom]), fallback_tag(image.digest))
        push_to_registry(client, REPOSITORY, sbom_signature, fallback_tag(sbom.digest) + ".sig")
        connected = trust_config(tmp_path / "site", registry.url, KEY, mode="allow")
        async with run_mirror(connected) as mirror:
            [result] = await warm(mirror.url, [f"{REPOSITORY}:1.0"])
    finally:
        registry.stop()
    assert result.error is None
    assert result.referrers == 3  # the signature, the SBOM, the SBOM's signature
    offline = trust_config(tmp_path / "site", registry.url, KEY, offline=True)
    async with run_mirror(offline) as mirror:
        status, error = await fetch(http, mirror.url, f"/v2/{REPOSITORY}/manifests/1.0")
        of_image = await referrer_digests(http, mirror.url, image.digest)
        of_sbom = await referrer_digests(http, mirror.url, sbom.digest)
        for blob in (*signature.blobs, *sbom.blobs, *sbom_signature.blobs):
            digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            async with http.get(f"{mirror.url}/v2/{REPOSITORY}/blobs/{digest}") as resp:
                assert (resp.status, await resp.read()) == (200, blob)
    assert (status, error) == (200, {})
    assert of_image == {signature.digest, sbom.digest}
    assert of_sbom == {sbom_signature.digest}
