"""skopeo, an independent implementation, reads our layouts, and we read skopeo's.

skopeo (containers/image) looks an ``oci:DIR:NAME`` up only among
``index.json`` entries of OCI media types; a Docker schema 2 manifest or
manifest list (valid in a layout, and exported as it is, digest unchanged)
is read by skopeo from a layout that holds it alone, as ``oci:DIR``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mirror.airgap.names import Defaults
from mirror.oci import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, parse_digest
from tests.support.airgap_content import (
    SMALL_REFS,
    UPSTREAM,
    DiskContent,
    ImageSetSource,
    export_images,
    import_into,
    mirror_config,
    run_tool,
)
from tests.support.images import ImageSet
from tests.support.registry import UpstreamRegistry
from tests.support.skopeo import POLICY

ALL_REFS = [*SMALL_REFS, "library/large:latest"]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


async def skopeo_reads(reference: str, digest: str, out: Path) -> None:
    """``skopeo inspect --raw`` and ``skopeo copy --all`` of ``reference`` match ``digest``."""
    status, raw = await run_tool("skopeo", "inspect", "--raw", reference)
    assert status == 0, raw
    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == digest
    status, output = await run_tool(
        "skopeo", "copy", "--all", "--preserve-digests", "--policy", str(POLICY),
        reference, f"dir:{out}",
    )  # fmt: skip
    assert status == 0, output
    assert sha256_of(out / "manifest.json") == digest
    assert_blobs_match(out)


def assert_blobs_match(out: Path) -> None:
    """Every blob skopeo wrote into a ``dir:`` copy hashes to its file name."""
    blobs = [p for p in out.iterdir() if p.name != "version" and not p.name.endswith(".json")]
    assert blobs
    for path in blobs:
        assert sha256_of(path) == "sha256:" + path.name


async def test_skopeo_reads_every_exported_image(image_set: ImageSet, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    await export_images(ImageSetSource(image_set, ALL_REFS), layout)
    index = json.loads((layout / "index.json").read_text())
    media_types = {entry["mediaType"] for entry in index["manifests"]}
    assert media_types == {OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST}
    for n, ref in enumerate(ALL_REFS):
        image = image_set.image(ref)
        if image.media_type in (OCI_INDEX, OCI_MANIFEST):
            await skopeo_reads(f"oci:{layout}:{UPSTREAM}/{ref}", image.digest, tmp_path / f"{n}")
            continue
        alone = tmp_path / f"alone-{n}"
        await export_images(ImageSetSource(image_set, [ref]), alone)
        await skopeo_reads(f"oci:{alone}", image.digest, tmp_path / f"{n}")


async def test_import_of_layouts_skopeo_made_from_the_registry(
    registry_none: UpstreamRegistry, image_set: ImageSet, tmp_path: Path
) -> None:
    host = registry_none.host
    bare = tmp_path / "bare-tag"  # skopeo's oci:DIR:TAG, the repository given by the operator
    status, output = await run_tool(
        "skopeo", "copy", "--all", "--preserve-digests", "--src-tls-verify=false",
        "--policy", str(POLICY), f"docker://{host}/library/multi:latest", f"oci:{bare}:latest",
    )  # fmt: skip
    assert status == 0, output
    full = tmp_path / "full-name"  # a full reference; skopeo converts Docker schema 2 to OCI
    status, output = await run_tool(
        "skopeo", "copy", "--src-tls-verify=false", "--policy", str(POLICY),
        f"docker://{host}/library/tiny:docker", f"oci:{full}:{host}/library/tiny:docker",
    )  # fmt: skip
    assert status == 0, output

    config = mirror_config(host)
    sink = DiskContent(tmp_path / "cache")
    report = await import_into(sink, bare, Defaults(repository="library/multi"), config)
    assert report.ok, report.to_json()
    multi = image_set.image("library/multi:latest")
    record = await sink.tag(UPSTREAM, "library/multi", "latest")
    assert record is not None
    assert str(record.digest) == multi.digest  # the upstream's own digest
    for child in image_set.children(multi):
        assert await sink.has_manifest(UPSTREAM, parse_digest(child.digest))
    assert {b.digest for b in image_set.blobs_of(multi.manifest)} <= await sink.blob_digests()

    report = await import_into(sink, full, config=config)
    assert report.ok, report.to_json()
    [entry] = json.loads((full / "index.json").read_text())["manifests"]
    record = await sink.tag(host, "library/tiny", "docker")
    assert record is not None
    assert str(record.digest) == entry["digest"]
    assert record.media_type == OCI_MANIFEST
