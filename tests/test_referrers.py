"""The referrers endpoint answers an image index from the cache: online, upstream down, offline.

The upstream's referrers API is a :class:`FakeUpstream` with ``referrers_api``
on; the tag schema (``sha256-<hex>`` fallback tag, cosign's ``.sig``) is
served by a real distribution registry (2.8: no referrers API).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mirror.oci import OCI_INDEX, OCI_MANIFEST
from mirror.trust.bundles import BUNDLE_V03
from tests.support.cosign import CosignKey, payload, sign_layer, signature_manifest
from tests.support.fake_upstream import FakeUpstream, Fault
from tests.support.mirror_app import mirror_config, run_mirror
from tests.support.oci_content import (
    OCI_CONFIG,
    Content,
    bundle_referrer,
    fallback_tag,
    push_to_fake,
    push_to_registry,
    referrers_index,
    small_image,
)
from tests.support.registry import UpstreamRegistry, start_registry

REPOSITORY = "acme/app"
SBOM_TYPE = "application/spdx+json"


def sbom_referrer(subject: Content) -> Content:
    """An SBOM attached as a referrer, with an ``artifactType`` of its own."""
    sbom = b'{"spdxVersion":"SPDX-2.3"}'
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SBOM_TYPE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": "sha256:" + _hex(b"{}"), "size": 2},
        "layers": [{"mediaType": SBOM_TYPE, "digest": "sha256:" + _hex(sbom), "size": len(sbom)}],
        "subject": subject.descriptor,
    }  # fmt: skip
    body = json.dumps(manifest, separators=(",", ":")).encode()
    return Content(OCI_MANIFEST, body, [b"{}", sbom])


def _hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def get_referrers(
    http: aiohttp.ClientSession, url: str, digest: str, artifact_type: str | None = None
) -> tuple[int, dict[str, str], dict[str, Any]]:
    params = {"artifactType": artifact_type} if artifact_type else {}
    async with http.get(f"{url}/v2/{REPOSITORY}/referrers/{digest}", params=params) as resp:
        return resp.status, dict(resp.headers), json.loads(await resp.read())


def digests(index: dict[str, Any]) -> set[str]:
    return {entry["digest"] for entry in index["manifests"]}


def with_api(up: FakeUpstream) -> tuple[Content, Content, Content]:
    """An image with a bundle and an SBOM referrer in a fake upstream with the referrers API."""
    up.referrers_api = True
    image = small_image("referrers-api")
    bundle = bundle_referrer(b'{"mediaType":"x"}', image, "message-signature")
    sbom = sbom_referrer(image)
    for content in (image, bundle, sbom):
        push_to_fake(up, REPOSITORY, content, "1.0" if content is image else None)
    return image, bundle, sbom


async def test_the_upstream_referrers_api_fills_the_cache(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    image, bundle, sbom = with_api(up)
    async with run_mirror(mirror_config(tmp_path, up.url)) as mirror:
        status, headers, index = await get_referrers(http, mirror.url, image.digest)
        again = await get_referrers(http, mirror.url, image.digest)
        filtered = await get_referrers(http, mirror.url, image.digest, SBOM_TYPE)
    assert status == 200
    assert headers["Content-Type"] == OCI_INDEX
    assert "Warning" not in headers
    assert "OCI-Filters-Applied" not in headers
    assert (index["schemaVersion"], index["mediaType"]) == (2, OCI_INDEX)
    assert digests(index) == {bundle.digest, sbom.digest}
    by_digest = {e["digest"]: e for e in index["manifests"]}
    assert by_digest[bundle.digest]["artifactType"] == BUNDLE_V03
    assert again[2] == index
    assert up.count("GET", f"/referrers/{image.digest}") == 1  # the second came from the cache
    assert filtered[1]["OCI-Filters-Applied"] == "artifactType"
    assert digests(filtered[2]) == {sbom.digest}


async def test_nothing_known_is_an_empty_index_not_a_404(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    unknown = small_image("never-pushed").digest
    async with run_mirror(mirror_config(tmp_path, up.url)) as mirror:
        status, headers, index = await get_referrers(http, mirror.url, unknown)
    assert (status, index["manifests"]) == (200, [])
    assert headers["Content-Type"] == OCI_INDEX
    # No referrers API here: the tag schema was asked instead.
    assert up.count("GET", f"/manifests/{fallback_tag(unknown)}.sig") == 1


async def test_a_failing_upstream_leaves_the_cached_index_standing_with_a_warning(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    image, bundle, sbom = with_api(up)
    async with run_mirror(mirror_config(tmp_path, up.url, tag_ttl=0)) as mirror:
        fresh = await get_referrers(http, mirror.url, image.digest)
        up.add_fault(Fault(status=503))
        stale = await get_referrers(http, mirror.url, image.digest)
        unknown = await get_referrers(http, mirror.url, small_image("other").digest)
        async with http.get(f"{mirror.url}/healthz") as resp:
            assert resp.status == 200
    assert "Warning" not in fresh[1]
    assert (stale[0], digests(stale[2])) == (200, {bundle.digest, sbom.digest})
    assert "stale" in stale[1]["Warning"]
    assert (unknown[0], unknown[2]["manifests"]) == (200, [])
    assert "may be incomplete" in unknown[1]["Warning"]


async def test_offline_the_cache_answers_and_nobody_is_asked(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    image, bundle, sbom = with_api(up)
    async with run_mirror(mirror_config(tmp_path, up.url)) as mirror:
        await get_referrers(http, mirror.url, image.digest)
    asked = len(up.requests)
    async with run_mirror(mirror_config(tmp_path, up.url, offline=True)) as mirror:
        status, headers, index = await get_referrers(http, mirror.url, image.digest)
        nothing = await get_referrers(http, mirror.url, small_image("other").digest)
    assert len(up.requests) == asked
    assert (status, digests(index)) == (200, {bundle.digest, sbom.digest})
    assert "Warning" not in headers
    assert (nothing[0], nothing[2]["manifests"]) == (200, [])
    assert "may be incomplete" in nothing[1]["Warning"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"schemaVersion": 2, "layers": []}',  # JSON, but no index
        b"<html>captive portal</html>",
        b"[" * 100_000,
        b'{"manifests": [' + b'{"digest": "x"},' * 1_100_000 + b"{}]}",  # > 16 MiB
    ],
    ids=["not-an-index", "html", "deep", "huge"],
)
async def test_garbage_from_the_referrers_api_is_neither_served_nor_kept(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path, body: bytes
) -> None:
    image, bundle, sbom = with_api(up)
    fault = up.add_fault(Fault(f"/referrers/{image.digest}", body=body, times=1))
    async with run_mirror(mirror_config(tmp_path, up.url)) as mirror:
        status, headers, index = await get_referrers(http, mirror.url, image.digest)
        after = await get_referrers(http, mirror.url, image.digest)
    assert fault.hits == 1
    assert (status, index["manifests"]) == (200, [])
    assert "may be incomplete" in headers["Warning"]
    assert digests(after[2]) == {bundle.digest, sbom.digest}  # nothing wrong was kept


async def test_malformed_descriptors_from_the_api_are_dropped(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    image, bundle, _ = with_api(up)
    good = bundle.descriptor | {"artifactType": BUNDLE_V03}
    junk = [
        {"mediaType": 1, "digest": good["digest"], "size": 1},
        {"mediaType": "a/b", "digest": "sha256:zz", "size": 1},
        {"mediaType": "a/b", "digest": good["digest"], "size": -1},
        {"mediaType": "a/b", "digest": good["digest"], "size": True},
        "not a descriptor",
    ]
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [*junk, good]}
    up.add_fault(Fault(f"/referrers/{image.digest}", body=json.dumps(doc).encode()))
    async with run_mirror(mirror_config(tmp_path, up.url)) as mirror:
        status, _, index = await get_referrers(http, mirror.url, image.digest)
    assert status == 200
    assert index["manifests"] == [good]


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("referrers/sha256:zz", "DIGEST_INVALID"),
        ("referrers/sha256:" + "a" * 63, "DIGEST_INVALID"),
        ("referrers/md5:" + "a" * 32, "DIGEST_INVALID"),
        ("referrers/sha256%2F" + "a" * 64, "NAME_INVALID"),
    ],
)
async def test_bad_digests_are_400(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path, path: str, code: str
) -> None:
    async with run_mirror(mirror_config(tmp_path, up.url)) as mirror:
        async with http.get(f"{mirror.url}/v2/{REPOSITORY}/{path}") as resp:
            status, doc = resp.status, await resp.json()
    assert (status, doc["errors"][0]["code"]) == (400, code)
    assert not any("/referrers/" in r.path for r in up.requests)


# -- the tag schema, from a real distribution registry ---------------------------------


@pytest.fixture(scope="module")
def schema_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamRegistry]:
    started = start_registry(tmp_path_factory.mktemp("referrers-registry"))
    try:
        yield started
    finally:
        started.stop()


async def test_the_tag_schema_fills_the_index_from_a_registry_without_the_api(
    schema_registry: UpstreamRegistry, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    client = schema_registry.client()
    image = small_image("tag-schema")
    push_to_registry(client, REPOSITORY, image, "1.0")
    key = CosignKey.generate()
    sig = signature_manifest([sign_layer(key, payload(f"x/{REPOSITORY}", image.digest))])
    push_to_registry(client, REPOSITORY, sig, fallback_tag(image.digest) + ".sig")
    sbom = sbom_referrer(image)
    push_to_registry(client, REPOSITORY, sbom)
    push_to_registry(client, REPOSITORY, referrers_index([sbom]), fallback_tag(image.digest))
    async with run_mirror(mirror_config(tmp_path, schema_registry.url)) as mirror:
        status, _, index = await get_referrers(http, mirror.url, image.digest)
        sig_types = await get_referrers(http, mirror.url, image.digest, OCI_CONFIG)
        # the .sig manifest was cached like any other: offline it is there
    async with run_mirror(mirror_config(tmp_path, schema_registry.url, offline=True)) as mirror:
        async with http.get(f"{mirror.url}/v2/{REPOSITORY}/manifests/{sig.digest}") as resp:
            assert (resp.status, await resp.read()) == (200, sig.body)
        offline = await get_referrers(http, mirror.url, image.digest)
    assert status == 200
    assert digests(index) == {sig.digest, sbom.digest}
    assert digests(sig_types[2]) == {sig.digest}
    assert offline[2] == index


async def test_an_upstream_that_never_answers_costs_a_bounded_wait_not_an_error(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    image, _, _ = with_api(up)
    up.add_fault(Fault(f"/referrers/{image.digest}", first_byte_delay=math.inf))
    upstream = {"url": up.url, "retries": 0, "connect_timeout": 2, "read_timeout": 1}
    async with run_mirror(mirror_config(tmp_path, up.url, upstreams=[upstream])) as mirror:
        pending = asyncio.ensure_future(get_referrers(http, mirror.url, image.digest))
        async with http.get(f"{mirror.url}/healthz") as resp:
            assert resp.status == 200  # while the referrers request waits on the upstream
        status, headers, index = await asyncio.wait_for(pending, timeout=30)
    assert (status, index["manifests"]) == (200, [])
    assert "may be incomplete" in headers["Warning"]
