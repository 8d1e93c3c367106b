"""Only manifests are stored and served: an HTML page with a 200 is a 502, never cached.

Issue 11, item 5: a captive portal's page was cached as a tag's manifest,
served as text/html until the TTL ran out, then served again as a stale answer.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from mirror.errors import ManifestRejected
from mirror.manifest_check import check_manifest
from mirror.oci import parse_digest
from mirror.routes.keys import MANIFESTS
from tests.support.cache_images import content_on_disk, upstream_name
from tests.support.fake_upstream import FakeUpstream
from tests.support.manifest_samples import INVALID, OCI_MANIFEST, VALID
from tests.support.mirror_app import mirror_config, run_mirror
from tests.support.pulls import manifest_url, pull
from tests.support.small_images import minimal_manifest

REPO = "library/app"
PORTAL = b"<!DOCTYPE html><html><body>Please log in to the hotel Wi-Fi</body></html>"
ACCEPT = {"Accept": OCI_MANIFEST}


@pytest.mark.parametrize(
    ("content_type", "body", "served_as"),
    [case[1:] for case in VALID],
    ids=[case[0] for case in VALID],
)
def test_every_known_type_and_artifact_passes(
    content_type: str, body: bytes, served_as: str
) -> None:
    assert check_manifest(body, content_type) == served_as


@pytest.mark.parametrize(
    ("content_type", "body"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_what_is_not_a_manifest_is_rejected(content_type: str, body: bytes) -> None:
    with pytest.raises(ManifestRejected):
        check_manifest(body, content_type)


def manifest_objects(cache: Path) -> list[str]:
    return [key for key in content_on_disk(cache) if "/manifests/" in key or "/tags/" in key]


async def test_html_page_with_200_is_a_502_and_never_cached(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    up.add_manifest(REPO, PORTAL, "text/html", tag="v1")
    async with run_mirror(mirror_config(tmp_path, up.url)) as mirror:
        url = manifest_url(mirror.url, REPO, "v1")
        answers = [await pull(http, url, ACCEPT) for _ in range(2)]
        async with http.head(url, headers=ACCEPT) as head:
            head_status = head.status
        stored = manifest_objects(tmp_path)
        # The portal goes away: the real manifest is fetched, nothing of the page is left.
        real = minimal_manifest("real")
        up.add_manifest(REPO, real, OCI_MANIFEST, tag="v1")
        after = await pull(http, url, ACCEPT)

    for answer in answers:
        assert answer.status == 502
        assert answer.headers["Content-Type"].startswith("application/json")
        error = json.loads(answer.body)["errors"][0]
        assert error["code"] == "UNAVAILABLE"
        assert "not a manifest" in error["message"]
        assert "text/html" in error["message"]
    assert head_status == 502
    assert stored == [], "nothing of the page may be stored"
    assert up.count("GET", f"/{REPO}/manifests/v1") == 4, "each try asks again: no cached page"
    assert after.status == 200
    assert after.body == real


async def test_html_page_after_the_ttl_serves_the_last_good_manifest_stale(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    good = minimal_manifest("good")
    up.add_manifest(REPO, good, OCI_MANIFEST, tag="v1")
    config = mirror_config(tmp_path, up.url, tag_ttl=0.3, max_stale=600)
    async with run_mirror(config) as mirror:
        url = manifest_url(mirror.url, REPO, "v1")
        assert (await pull(http, url, ACCEPT)).body == good
        up.add_manifest(REPO, PORTAL, "text/html", tag="v1")  # a proxy now answers for the tag
        await asyncio.sleep(0.4)
        stale = await pull(http, url, ACCEPT)
        portal_key = [k for k in manifest_objects(tmp_path) if "/manifests/" in k]

    assert stale.status == 200
    assert stale.body == good
    assert stale.headers["Content-Type"] == OCI_MANIFEST
    assert stale.headers["Warning"].startswith("299 ")
    assert len(portal_key) == 1, "only the good manifest is stored"


BY_DIGEST = ("html-as-json", "json-array", "deep-nesting", "layer-bad-digest", "artifact-manifest")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [case[1:] for case in INVALID if case[0] in BY_DIGEST],
    ids=[case[0] for case in INVALID if case[0] in BY_DIGEST],
)
async def test_a_broken_answer_by_digest_is_a_502_too(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path, content_type: str, body: bytes
) -> None:
    digest = up.add_manifest(REPO, body, content_type)
    async with run_mirror(mirror_config(tmp_path, up.url)) as mirror:
        answer = await pull(http, manifest_url(mirror.url, REPO, digest))
    assert answer.status == 502
    assert manifest_objects(tmp_path) == []


@pytest.mark.parametrize(
    ("name", "content_type", "body", "served_as"), VALID[6:9], ids=[v[0] for v in VALID[6:9]]
)
async def test_artifacts_pull_through(
    up: FakeUpstream,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    name: str,
    content_type: str,
    body: bytes,
    served_as: str,
) -> None:
    """cosign signatures, Helm charts and sigstore bundles are image manifests: they pass."""
    digest = up.add_manifest(REPO, body, content_type, tag=name)
    async with run_mirror(mirror_config(tmp_path, up.url)) as mirror:
        by_tag = await pull(http, manifest_url(mirror.url, REPO, name), ACCEPT)
        by_digest = await pull(http, manifest_url(mirror.url, REPO, digest), ACCEPT)
    for answer in (by_tag, by_digest):
        assert answer.status == 200
        assert answer.body == body
        assert answer.headers["Content-Type"] == served_as
        assert answer.headers["Docker-Content-Digest"] == digest


async def test_a_cached_page_from_an_older_version_is_dropped(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Earlier versions stored whatever came; such an entry is discarded like a damaged one.

    The digest is not known to belong to REPO after a restart, so the upstream
    is asked first (blob and manifest access follow repositories), and its page
    is refused; the store's next read of the old entry drops it.
    """
    portal = up.add_manifest(REPO, PORTAL, "text/html")
    hex_part = portal.removeprefix("sha256:")
    stored = tmp_path / upstream_name(up) / "manifests" / "sha256" / hex_part[:2] / hex_part
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"text/html\n" + PORTAL)
    async with run_mirror(mirror_config(tmp_path, up.url)) as mirror:
        answer = await pull(http, manifest_url(mirror.url, REPO, portal))
        store = mirror.app[MANIFESTS]
        assert await store.cached(upstream_name(up), parse_digest(portal)) is None
    assert answer.status == 502, "not served from the cache: the upstream was asked again"
    assert not stored.exists()
    assert up.count("GET", f"/manifests/{portal}") == 1
