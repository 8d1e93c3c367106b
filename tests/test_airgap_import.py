"""Importing layouts: damaged objects refused by name, deltas, partial indexes, referrers."""

from __future__ import annotations

import json
import re
import shutil
import tarfile
from pathlib import Path

import pytest

from mirror.airgap.errors import BaseMissing, LayoutError
from mirror.airgap.importer import ImportReport
from mirror.airgap.summary import SUMMARY_FILE, parse_summary
from mirror.config import build_config
from mirror.oci import Digest, parse_digest
from mirror.storage.base import BlobWriter
from tests.support.airgap_content import (
    SMALL_REFS,
    UPSTREAM,
    DiskContent,
    ImageSetSource,
    export_images,
    import_into,
    run_tool,
)
from tests.support.images import Blob, ImageSet

SIGNATURE = "application/vnd.example.signature"
ATTESTATION = "application/vnd.example.attestation"


def medium_layer(image_set: ImageSet) -> Blob:
    """The 4 MiB layer of library/medium:latest."""
    blobs = image_set.blobs_of(image_set.image("library/medium:latest").manifest)
    return max(blobs, key=lambda blob: blob.size)


def blob_file(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":")[1]


def damage(layout: Path, image_set: ImageSet) -> dict[str, str]:
    """Corrupt one blob, truncate another, drop a manifest: the object named for each image."""
    tiny = image_set.image("library/tiny:oci").manifest
    config = json.loads(tiny.data)["config"]["digest"]
    medium = medium_layer(image_set)
    child = image_set.image("library/multi:docker").platforms["linux/arm64/v8"]
    corrupt = bytearray(blob_file(layout, config).read_bytes())
    corrupt[0] ^= 0xFF
    blob_file(layout, config).write_bytes(bytes(corrupt))
    with blob_file(layout, medium.digest).open("r+b") as handle:
        handle.truncate(medium.size // 2)
    blob_file(layout, child).unlink()
    return {
        "library/tiny:oci": f"blob {config}: does not match its digest",
        "library/medium:latest": f"blob {medium.digest}: truncated: {medium.size // 2} of "
        f"{medium.size} bytes",
        "library/multi:docker": f"manifest {child}: missing from the layout",
    }


def outcomes(report: ImportReport) -> dict[str, tuple[str, str]]:
    """Each image's (status, reason), by its reference without the upstream."""
    return {
        image.reference.removeprefix(f"{UPSTREAM}/"): (image.status, image.reason)
        for image in report.images
    }


@pytest.mark.parametrize("form", ["dir", "tar.zst sorted by name"])
async def test_damaged_objects_are_refused_by_name_and_the_rest_imported(
    image_set: ImageSet, tmp_path: Path, form: str
) -> None:
    layout = tmp_path / "layout"
    await export_images(ImageSetSource(image_set, SMALL_REFS), layout)
    expected = damage(layout, image_set)
    src = layout
    if form != "dir":
        # GNU tar's name order puts blobs first and index.json last: the reader must spool.
        src = tmp_path / "layout.tar.zst"
        status, output = await run_tool("tar", "--zstd", "--sort=name", "-cf", str(src),
                                        "-C", str(layout), ".")  # fmt: skip
        assert status == 0, output
    sink = DiskContent(tmp_path / "cache")
    report = await import_into(sink, src)
    assert not report.ok
    found = outcomes(report)
    for ref, reason in expected.items():
        assert found[ref] == ("refused", reason)
    assert found["library/tiny:docker"] == ("imported", "")
    assert found["library/multi:latest"] == ("imported", "")
    for ref in expected:
        repository, _, tag = ref.rpartition(":")
        assert await sink.tag(UPSTREAM, repository, tag) is None  # nothing of it published
        root = parse_digest(image_set.image(ref).digest)
        assert not await sink.has_manifest(UPSTREAM, root)
    corrupt_config = expected["library/tiny:oci"].split()[1].rstrip(":")
    assert corrupt_config not in await sink.blob_digests()
    assert not list((tmp_path / "cache" / ".partial").iterdir())


async def test_a_flipped_byte_inside_a_tar_is_named(image_set: ImageSet, tmp_path: Path) -> None:
    await export_images(ImageSetSource(image_set, SMALL_REFS), tmp_path / "layout.tar")
    layer = medium_layer(image_set)
    with tarfile.open(tmp_path / "layout.tar") as archive:
        member = archive.getmember(f"blobs/sha256/{layer.digest.split(':')[1]}")
    with (tmp_path / "layout.tar").open("r+b") as handle:
        handle.seek(member.offset_data + 1000)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 1]))
    report = await import_into(DiskContent(tmp_path / "cache"), tmp_path / "layout.tar")
    found = outcomes(report)
    assert found["library/medium:latest"] == ("refused", f"blob {layer.digest}: does not "
                                              "match its digest")  # fmt: skip
    assert [status for status, _ in found.values()].count("imported") == 4


async def test_a_cut_stream_imports_what_arrived_and_names_the_rest(
    image_set: ImageSet, tmp_path: Path
) -> None:
    await export_images(ImageSetSource(image_set, SMALL_REFS), tmp_path / "layout.tar")
    data = (tmp_path / "layout.tar").read_bytes()
    layer = medium_layer(image_set)
    with tarfile.open(tmp_path / "layout.tar") as archive:
        member = archive.getmember(f"blobs/sha256/{layer.digest.split(':')[1]}")
    (tmp_path / "cut.tar").write_bytes(data[: member.offset_data + 12345])
    sink = DiskContent(tmp_path / "cache")
    report = await import_into(sink, tmp_path / "cut.tar")
    assert report.problems  # the stream broke, and the report says so
    # tarfile gives up on the first read that cannot be filled: the count is what came whole.
    assert re.fullmatch(rf"truncated: \d+ of {layer.size} bytes", report.damaged[layer.digest])
    found = outcomes(report)
    assert found["library/medium:latest"][0] == "refused"
    for ref, (status, reason) in found.items():
        if status == "imported":
            blobs = image_set.blobs_of(image_set.image(ref).manifest)
            assert {b.digest for b in blobs} <= await sink.blob_digests()
        else:
            assert "truncated" in reason or "missing from the layout" in reason, reason


@pytest.mark.parametrize("since", ["layout", "summary file", "tar.zst"])
async def test_incremental_carries_only_new_blobs(
    image_set: ImageSet, tmp_path: Path, since: str
) -> None:
    first_refs = [ref for ref in SMALL_REFS if ref != "library/medium:latest"]
    source = ImageSetSource(image_set, first_refs)
    base = tmp_path / ("base.tar.zst" if since == "tar.zst" else "base")
    await export_images(source, base)
    previous = str(base / SUMMARY_FILE) if since == "summary file" else str(base)
    if since == "tar.zst":
        (tmp_path / "base.tar.zst.summary.json").unlink()  # read from the tar's front instead
    medium = image_set.image("library/medium:latest")
    source.tags["library/medium:latest"] = parse_digest(medium.digest)
    await export_images(source, tmp_path / "delta", since=previous)

    summary = parse_summary((tmp_path / "delta" / SUMMARY_FILE).read_bytes(), "delta")
    manifests = {d for d in source.manifests if d in summary.blobs}
    assert {str(d) for d in set(summary.blobs) - manifests} == {
        b.digest for b in image_set.blobs_of(medium.manifest)
    }
    assert summary.base is not None
    index = json.loads((tmp_path / "delta" / "index.json").read_text())
    assert len(index["manifests"]) == 5  # every image is still listed
    on_disk = {p.name for p in (tmp_path / "delta/blobs/sha256").iterdir()}
    assert on_disk == {d.hex for d in summary.blobs}

    alone = DiskContent(tmp_path / "fresh")
    with pytest.raises(BaseMissing, match=f"on top of export {summary.base.layout}"):
        await import_into(alone, tmp_path / "delta")
    assert not alone.writes  # refused before anything was written

    site = DiskContent(tmp_path / "site")
    assert (await import_into(site, base)).ok
    report = await import_into(site, tmp_path / "delta")
    assert report.ok, report.to_json()
    assert report.blobs_written == 3
    assert {"imported", "unchanged"} == {i.status for i in report.images}
    everything = {
        b.digest for ref in SMALL_REFS for b in image_set.blobs_of(image_set.image(ref).manifest)
    }
    assert everything <= await site.blob_digests()


async def test_weekly_chain_carries_nothing_when_nothing_changed(
    image_set: ImageSet, tmp_path: Path
) -> None:
    source = ImageSetSource(image_set, SMALL_REFS)
    await export_images(source, tmp_path / "week1")
    await export_images(source, tmp_path / "week2", since=str(tmp_path / "week1"))
    await export_images(source, tmp_path / "week3", since=str(tmp_path / "week2"))
    week3 = parse_summary((tmp_path / "week3" / SUMMARY_FILE).read_bytes(), "week3")
    assert set(week3.blobs) <= set(source.manifests)  # manifests only
    week1 = parse_summary((tmp_path / "week1" / SUMMARY_FILE).read_bytes(), "week1")
    assert week3.base is not None
    assert set(week3.base.blobs) == set(week1.blobs)  # cumulative across the chain
    site = DiskContent(tmp_path / "site")
    for week in ("week1", "week2", "week3"):
        assert (await import_into(site, tmp_path / week)).ok


async def test_an_index_partly_cached_travels_as_it_is(image_set: ImageSet, tmp_path: Path) -> None:
    source = ImageSetSource(image_set, ["library/multi:latest"])
    image = image_set.image("library/multi:latest")
    arm64 = image.platforms["linux/arm64/v8"]
    del source.manifests[parse_digest(arm64)]  # a client only ever pulled amd64
    result = await export_images(source, tmp_path / "layout")
    [record] = result.summary.images
    assert record["absent"] == [f"{arm64} (linux/arm64/v8): manifest {arm64} is not cached"]
    sink = DiskContent(tmp_path / "cache")
    report = await import_into(sink, tmp_path / "layout")
    assert report.ok
    [outcome] = report.images
    assert (outcome.status, outcome.reason) == (
        "imported", "1 platform(s) were not in the exporting cache"
    )  # fmt: skip
    assert await sink.tag(UPSTREAM, "library/multi", "latest") is not None
    assert await sink.has_manifest(UPSTREAM, parse_digest(image.platforms["linux/amd64"]))
    assert not await sink.has_manifest(UPSTREAM, parse_digest(arm64))


async def test_an_image_missing_from_the_cache_is_skipped_by_name(
    image_set: ImageSet, tmp_path: Path
) -> None:
    source = ImageSetSource(image_set, ["library/tiny:oci", "library/medium:latest"])
    layer = image_set.blobs_of(image_set.image("library/medium:latest").manifest)[1]
    del source.blobs[parse_digest(layer.digest)]
    result = await export_images(source, tmp_path / "layout")
    assert result.summary.skipped == [{
        "image": f"{UPSTREAM}/library/medium:latest", "reason": f"blob {layer.digest} is not cached"
    }]  # fmt: skip
    assert [i["tag"] for i in result.summary.images] == ["oci"]


async def test_referrers_travel_recursively(image_set: ImageSet, tmp_path: Path) -> None:
    source = ImageSetSource(image_set, ["library/multi:latest", "library/tiny:oci"])
    image = image_set.image("library/multi:latest")
    signature = source.attach(parse_digest(image.digest), SIGNATURE, b"signed index")
    child = parse_digest(image.platforms["linux/amd64"])
    attestation = source.attach(child, ATTESTATION, b"provenance")
    countersign = source.attach(attestation, SIGNATURE, b"signed attestation")
    await export_images(source, tmp_path / "layout")
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    subjects = {
        entry["digest"]: entry["annotations"]["org.registry-mirror.subject"]
        for entry in index["manifests"]
        if "org.registry-mirror.subject" in entry["annotations"]
    }
    assert subjects == {
        str(signature): image.digest, str(attestation): str(child),
        str(countersign): str(attestation),
    }  # fmt: skip
    sink = DiskContent(tmp_path / "cache")
    assert (await import_into(sink, tmp_path / "layout")).ok
    found = await sink.referrers(UPSTREAM, "library/multi", attestation)
    assert [d.digest for d in found] == [countersign]

    await export_images(source, tmp_path / "bare", referrers=False)
    bare = json.loads((tmp_path / "bare" / "index.json").read_text())
    assert len(bare["manifests"]) == 2


async def test_an_interrupted_import_continues_where_it_stopped(
    image_set: ImageSet, tmp_path: Path
) -> None:
    await export_images(ImageSetSource(image_set, SMALL_REFS), tmp_path / "layout")
    sink = FailingSink(tmp_path / "cache", fail_after=4)
    with pytest.raises(OSError, match="power cut"):
        await import_into(sink, tmp_path / "layout")
    assert sink.writes["blob"] == 4
    assert await sink.tag(UPSTREAM, "library/tiny", "oci") is None  # no tag before its blobs
    sink.fail_after = None
    report = await import_into(sink, tmp_path / "layout")
    assert report.ok
    assert report.blobs_present == 4
    assert sink.writes["blob"] == 4 + report.blobs_written


class FailingSink(DiskContent):
    """A disk sink that dies (like a crash) when a blob write after the first N starts."""

    def __init__(self, root: Path, fail_after: int | None) -> None:
        super().__init__(root)
        self.fail_after = fail_after

    async def blob_writer(self, upstream: str, digest: Digest) -> BlobWriter:
        if self.fail_after is not None and self.writes["blob"] >= self.fail_after:
            raise OSError("power cut")
        return await super().blob_writer(upstream, digest)


async def test_an_unconfigured_upstream_is_refused_by_name(
    image_set: ImageSet, tmp_path: Path
) -> None:
    await export_images(ImageSetSource(image_set, ["library/tiny:oci"]), tmp_path / "layout")
    config = build_config({"upstreams": [{"name": "other.example", "url": "http://127.0.0.1:9"}]})
    report = await import_into(DiskContent(tmp_path / "cache"), tmp_path / "layout", config=config)
    [outcome] = report.images
    assert outcome.status == "refused"
    assert f"upstream {UPSTREAM!r} is not configured here" in outcome.reason


@pytest.mark.parametrize("what", ["empty directory", "not a tar", "tar without index.json"])
async def test_what_is_not_a_layout_is_refused(tmp_path: Path, what: str) -> None:
    src = tmp_path / "src"
    if what == "empty directory":
        src.mkdir()
    elif what == "not a tar":
        src.write_bytes(b"hello, this is no tar\n" * 100)
    else:
        with tarfile.open(src, "w") as archive:
            archive.add(__file__, "oci-layout")
    with pytest.raises(LayoutError, match="not"):
        await import_into(DiskContent(tmp_path / "cache"), src)
    shutil.rmtree(tmp_path / "cache")
