"""Referrers the mirror learned from an upstream's referrers API cross the air gap.

Signatures stored as referrers (sigstore bundles) are not tags: only the
subject's referrers index, as the mirror keeps it, names them. An export
takes that index's cached manifests along; an import rebuilds the index on
the far side, where the referrers endpoint lists them offline.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import aiohttp

from mirror.airgap.commands import ExportRequest, ImportRequest, run_export, run_import
from mirror.airgap.selection import Selection
from mirror.progress import make_reporter
from tests.support.fake_upstream import FakeUpstream
from tests.support.mirror_app import mirror_config, run_mirror
from tests.support.oci_content import Content
from tests.test_referrers import REPOSITORY, digests, get_referrers, with_api

ACCEPT = "application/vnd.oci.image.manifest.v1+json"


async def fetch(http: aiohttp.ClientSession, url: str, path: str) -> int:
    async with http.get(f"{url}/v2/{REPOSITORY}/{path}", headers={"Accept": ACCEPT}) as resp:
        await resp.read()
        return resp.status


async def pull(
    http: aiohttp.ClientSession, url: str, image: Content, referrers: list[Content]
) -> None:
    """The tag, the referrers list, then each of ``image`` and ``referrers`` with its blobs.

    A verifying client fetches the referrers it lists; ``referrers=[]`` is
    one that only looked at the list.
    """
    assert await fetch(http, url, "manifests/1.0") == 200
    await get_referrers(http, url, image.digest)
    for content in (image, *referrers):
        assert await fetch(http, url, f"manifests/{content.digest}") == 200
        for blob in content.blobs:
            assert await fetch(http, url, f"blobs/sha256:{_sha256(blob)}") == 200


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_api_referrers_travel_and_are_listed_offline_on_the_far_side(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    image, bundle, sbom = with_api(up)
    near = mirror_config(tmp_path / "near", up.url)
    async with run_mirror(near) as mirror:
        await pull(http, mirror.url, image, [bundle, sbom])
    layout = str(tmp_path / "layout")
    quiet = make_reporter(quiet=True)
    exported = await run_export(near, ExportRequest(layout, Selection()), quiet)
    assert exported.complete, exported.result.summary.skipped
    far = mirror_config(tmp_path / "far", up.url, offline=True)
    first = await run_import(far, ImportRequest(layout), quiet)
    second = await run_import(far, ImportRequest(layout), quiet)
    asked = len(up.requests)
    async with run_mirror(far) as mirror:
        status, headers, index = await get_referrers(http, mirror.url, image.digest)
        fetched = [await fetch(http, mirror.url, f"manifests/{d}") for d in digests(index)]
    assert len(up.requests) == asked  # offline: nobody asked
    assert (status, digests(index)) == (200, {bundle.digest, sbom.digest})
    assert "Warning" not in headers
    assert fetched == [200, 200]
    assert first.manifests_written >= 3
    assert (second.manifests_written, second.tags_written) == (0, 0)  # idempotent


async def test_referrers_never_fetched_through_the_mirror_are_left_out(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    image, _, _ = with_api(up)
    near = mirror_config(tmp_path / "near", up.url)
    async with run_mirror(near) as mirror:
        await pull(http, mirror.url, image, [])  # referrers listed, never fetched
    layout = str(tmp_path / "layout")
    exported = await run_export(near, ExportRequest(layout, Selection()), make_reporter(quiet=True))
    assert exported.complete, exported.result.summary.skipped
    assert len(exported.result.summary.images) == 1  # the image only, no referrer, no index
