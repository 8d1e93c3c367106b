"""Export a warmed cache, check it with skopeo and sha256sum, import it, pull it offline.

The far cache is a disk directory or a moto bucket; it exports the same
index again, so the layout round-trips through either backend.

The connected mirror warms from the real registry fixture (an OCI and a
Docker index, OCI and schema 2 manifests, a 4 MiB layer); every step after
that runs the ``registry-mirror export`` and ``import`` commands as an
operator does. The disconnected mirror's upstream is a fake that counts
connections: it must see none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mirror.oci import OCI_INDEX, OCI_MANIFEST
from mirror.warm import warm
from tests.support.airgap_cli import (
    UPSTREAM_NAME,
    Site,
    airgap,
    disk,
    make_site,
    pulled_digest,
    summary,
)
from tests.support.airgap_content import SMALL_REFS, run_tool
from tests.support.cli import run_cli
from tests.support.fake_upstream import FakeUpstream
from tests.support.images import ImageSet
from tests.support.mirror_app import run_mirror
from tests.support.registry import UpstreamRegistry
from tests.test_airgap_skopeo import skopeo_reads


async def warmed_site(registry: UpstreamRegistry, workdir: Path, refs: list[str]) -> Site:
    """A disk cache warmed through a mirror of the registry fixture with ``refs``."""
    site = make_site(workdir, "connected", disk(workdir / "connected"), registry.url)
    async with run_mirror(site.config) as mirror:
        results = await warm(mirror.url, refs)
    assert [r.error for r in results] == [None] * len(refs)
    return site


async def test_export_check_import_and_pull_offline(
    registry_none: UpstreamRegistry,
    image_set: ImageSet,
    storage_settings: dict[str, Any],
    tmp_path: Path,
) -> None:
    connected = await warmed_site(registry_none, tmp_path, SMALL_REFS)
    layout = tmp_path / "layout"
    exported = airgap("export", connected, str(layout))
    assert exported.returncode == 0, exported.stderr
    assert len(summary(exported)["images"]) == len(SMALL_REFS)

    status, output = await run_tool("sha256sum", "-c", "--strict", "SHA256SUMS", cwd=layout)
    assert status == 0, output
    for n, ref in enumerate(SMALL_REFS):
        image = image_set.image(ref)
        if image.media_type in (OCI_INDEX, OCI_MANIFEST):  # see test_airgap_skopeo
            await skopeo_reads(f"oci:{layout}:{UPSTREAM_NAME}/{ref}", image.digest,
                               tmp_path / f"read-{n}")  # fmt: skip

    async with FakeUpstream() as unreachable:
        far = make_site(tmp_path, "far", storage_settings, unreachable.url)
        imported = airgap("import", far, str(layout))
        assert imported.returncode == 0, imported.stderr
        report = summary(imported)
        assert {i["status"] for i in report["images"]} == {"imported"}
        assert report["blobs_written"] > 0
        again = summary(airgap("import", far, str(layout)))
        assert {i["status"] for i in again["images"]} == {"unchanged"}
        assert (again["blobs_written"], again["manifests_written"], again["tags_written"]) == (
            0, 0, 0,
        )  # fmt: skip
        async with run_mirror(far.offline(unreachable.url)) as mirror:
            for ref in SMALL_REFS:
                got = await pulled_digest(mirror.url, ref, tmp_path)
                assert got == image_set.image(ref).digest, ref
        assert unreachable.connections == 0
    verified = run_cli("verify", "--config", str(far.path))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # The far cache exports the same images, named and confirmed as they came.
    again_out = tmp_path / "again"
    assert airgap("export", far, str(again_out)).returncode == 0
    assert (again_out / "index.json").read_bytes() == (layout / "index.json").read_bytes()
