"""The air-gap commands over real caches: incremental exports, skopeo's layouts, referrers.

The connected cache is warmed from the real registry fixture; the far side
is served ``--offline`` with an upstream that counts connections.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import aiohttp

from mirror.airgap.cache_content import CacheContent
from mirror.airgap.content import TagEntry
from mirror.airgap.summary import SUMMARY_FILE
from mirror.oci import OCI_MANIFEST, Digest, parse_digest
from mirror.storage.disk import DiskStorage
from mirror.stored import StoredManifest
from mirror.warm import warm
from tests.support.airgap_cli import (
    UPSTREAM_NAME,
    airgap,
    disk,
    make_site,
    pulled_digest,
    summary,
)
from tests.support.airgap_content import CONFIRMED, run_tool
from tests.support.fake_upstream import FakeUpstream
from tests.support.images import ImageSet
from tests.support.mirror_app import run_mirror
from tests.support.registry import UpstreamRegistry
from tests.support.skopeo import POLICY
from tests.test_airgap_cache import warmed_site

FIRST = ["library/tiny:oci", "library/medium:latest"]
NEW = "library/multi:latest"


def image_blobs(image_set: ImageSet, ref: str) -> set[str]:
    """The configs and layers of an image (of every platform of an index)."""
    image = image_set.image(ref)
    manifests = image_set.children(image) if image.manifest.is_index else [image.manifest]
    return {blob.digest for m in manifests for blob in image_set.blobs_of(m)}


async def test_incremental_export_carries_only_new_blobs_and_needs_its_base(
    registry_none: UpstreamRegistry, image_set: ImageSet, tmp_path: Path
) -> None:
    connected = await warmed_site(registry_none, tmp_path, FIRST)
    full = tmp_path / "full.tar.zst"
    assert airgap("export", connected, str(full)).returncode == 0
    delta = tmp_path / "delta"
    async with run_mirror(connected.config) as mirror:  # a week later: one new image
        assert [r.error for r in await warm(mirror.url, [NEW])] == [None]
        # exported while the mirror still serves from the same cache
        done = airgap("export", connected, str(delta), "--since", f"{full}.summary.json")
    assert done.returncode == 0, done.stderr
    carried = set(json.loads((delta / SUMMARY_FILE).read_text())["blobs"])
    manifests = {m.digest for m in image_set.manifests.values()}
    assert carried - manifests == image_blobs(image_set, NEW)
    assert len(summary(done)["images"]) == 3  # the index still lists every image

    async with FakeUpstream() as unreachable:
        alone = make_site(tmp_path, "alone", disk(tmp_path / "alone"), unreachable.url)
        refused = airgap("import", alone, str(delta))
        assert refused.returncode == 3
        assert "import that export" in refused.stderr
        assert not (tmp_path / "alone" / UPSTREAM_NAME).exists()  # nothing written

        far = make_site(tmp_path, "far", disk(tmp_path / "far"), unreachable.url)
        assert airgap("import", far, str(full)).returncode == 0
        done = airgap("import", far, str(delta))
        assert done.returncode == 0, done.stderr
        async with run_mirror(far.offline(unreachable.url)) as mirror:
            for ref in [*FIRST, NEW]:
                assert await pulled_digest(mirror.url, ref, tmp_path) == image_set.image(ref).digest
        assert unreachable.connections == 0


async def test_a_layout_skopeo_made_imports_and_pulls_offline(
    registry_none: UpstreamRegistry, image_set: ImageSet, tmp_path: Path
) -> None:
    ref = "library/tiny:oci"
    status, output = await run_tool(
        "skopeo", "copy", "--src-tls-verify=false", "--policy", str(POLICY),
        f"docker://{registry_none.host}/{ref}", f"oci:{tmp_path / 'skopeo'}:v1",
    )  # fmt: skip
    assert status == 0, output
    async with FakeUpstream() as unreachable:
        far = make_site(tmp_path, "far", disk(tmp_path / "far"), unreachable.url)
        unnamed = airgap("import", far, str(tmp_path / "skopeo"))
        assert unnamed.returncode == 1  # a bare tag: which repository?
        assert "give the repository" in unnamed.stderr
        done = airgap("import", far, str(tmp_path / "skopeo"), "--upstream", UPSTREAM_NAME,
                      "--repository", "library/tiny")  # fmt: skip
        assert done.returncode == 0, done.stderr
        async with run_mirror(far.offline(unreachable.url)) as mirror:
            got = await pulled_digest(mirror.url, "library/tiny:v1", tmp_path)
        assert got == image_set.image(ref).digest
        assert unreachable.connections == 0


async def sign(cache: Path, subject: str, payload: bytes) -> tuple[str, Digest]:
    """Store a cosign-style signature of ``subject`` under its tag-schema tag."""
    content = CacheContent(DiskStorage(cache), [UPSTREAM_NAME])
    blobs = []
    for data in (b"{}", payload):
        digest = Digest("sha256", hashlib.sha256(data).hexdigest())
        writer = await content.blob_writer(UPSTREAM_NAME, digest)
        await writer.write(data)
        await writer.commit()
        blobs.append({"mediaType": "application/octet-stream", "digest": str(digest),
                      "size": len(data)})  # fmt: skip
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": blobs[0],
                       "layers": [blobs[1]]}).encode()  # fmt: skip
    digest = Digest("sha256", hashlib.sha256(body).hexdigest())
    await content.put_manifest(UPSTREAM_NAME, "library/tiny", digest,
                               StoredManifest(OCI_MANIFEST, body))  # fmt: skip
    tag = subject.replace(":", "-") + ".sig"
    await content.put_tag(TagEntry(UPSTREAM_NAME, "library/tiny", tag, digest, OCI_MANIFEST,
                                   len(body), CONFIRMED))  # fmt: skip
    return tag, digest


async def test_tag_schema_signatures_travel_with_their_image(
    registry_none: UpstreamRegistry, image_set: ImageSet, tmp_path: Path
) -> None:
    ref = "library/tiny:oci"
    connected = await warmed_site(registry_none, tmp_path, [ref, "library/medium:latest"])
    tag, signature = await sign(tmp_path / "connected", image_set.image(ref).digest, b"sig")
    plain = tmp_path / "plain"
    assert airgap("export", connected, str(plain), "--image", f"{UPSTREAM_NAME}/{ref}",
                  "--no-referrers").returncode == 0  # fmt: skip
    assert len(json.loads((plain / "index.json").read_text())["manifests"]) == 1
    signed = tmp_path / "signed"
    done = airgap("export", connected, str(signed), "--image", ref)
    assert done.returncode == 0, done.stderr
    entries = json.loads((signed / "index.json").read_text())["manifests"]
    assert [parse_digest(e["digest"]) for e in entries][1:] == [signature]
    assert entries[1]["annotations"]["org.registry-mirror.tag"] == tag

    async with FakeUpstream() as unreachable:
        far = make_site(tmp_path, "far", disk(tmp_path / "far"), unreachable.url)
        assert airgap("import", far, str(signed)).returncode == 0
        async with (
            run_mirror(far.offline(unreachable.url)) as mirror,
            aiohttp.ClientSession() as http,
        ):
            url = f"{mirror.url}/v2/library/tiny/manifests/{tag}"
            async with http.get(url, headers={"Accept": OCI_MANIFEST}) as resp:
                assert resp.status == 200
                assert resp.headers["Docker-Content-Digest"] == str(signature)
        assert unreachable.connections == 0
