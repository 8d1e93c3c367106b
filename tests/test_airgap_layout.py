"""The air-gap layout: export to a directory, a tar and a tar.zst, read back and imported.

Sources are the test images in memory; the sink is the mirror's real disk
storage (the commands over a real cache: ``tests/test_airgap_cache*.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from mirror.airgap.errors import ExportError
from mirror.airgap.summary import SUMMARY_FILE, parse_summary
from mirror.oci import parse_digest
from tests.support.airgap_content import (
    SMALL_REFS,
    UPSTREAM,
    DiskContent,
    ImageSetSource,
    export_images,
    import_into,
    run_tool,
)
from tests.support.images import ImageSet

DESTINATIONS = ["layout", "layout.tar", "layout.tar.zst"]


@pytest.fixture
def source(image_set: ImageSet) -> ImageSetSource:
    """The small test images, one signed, as a content source."""
    found = ImageSetSource(image_set, SMALL_REFS)
    found.attach(found.tags["library/tiny:oci"], "application/vnd.example.signature", b"sig")
    return found


def expected_blobs(image_set: ImageSet) -> set[str]:
    """Every blob digest the small images need."""
    return {
        blob.digest
        for ref in SMALL_REFS
        for blob in image_set.blobs_of(image_set.image(ref).manifest)
    }


def expected_manifests(image_set: ImageSet) -> set[str]:
    """Every manifest digest of the small images, platform manifests included."""
    found = set()
    for ref in SMALL_REFS:
        image = image_set.image(ref)
        found |= {image.digest, *(child.digest for child in image_set.children(image))}
    return found


@pytest.mark.parametrize("dest", DESTINATIONS)
async def test_round_trip_through_each_form(
    source: ImageSetSource, image_set: ImageSet, tmp_path: Path, dest: str
) -> None:
    await export_images(source, tmp_path / dest)
    sink = DiskContent(tmp_path / "cache")
    report = await import_into(sink, tmp_path / dest)
    assert report.ok, report.to_json()
    assert [i.status for i in report.images] == ["imported"] * 6  # 5 images, 1 signature
    for ref in SMALL_REFS:
        name, _, tag = ref.rpartition(":")
        record = await sink.tag(UPSTREAM, name, tag)
        assert record is not None
        assert str(record.digest) == image_set.image(ref).digest
        assert record.confirmed.isoformat() == "2026-11-01T12:00:00+00:00"  # from the export
    for digest in expected_manifests(image_set):
        stored = await sink.manifest(UPSTREAM, parse_digest(digest))
        assert stored is not None
        assert stored.body == image_set.manifests[digest].data
    assert expected_blobs(image_set) <= await sink.blob_digests()
    # Idempotent: the same layout again writes nothing.
    writes = dict(sink.writes)
    again = await import_into(sink, tmp_path / dest)
    assert again.ok
    assert {i.status for i in again.images} == {"unchanged"}
    assert dict(sink.writes) == writes


async def test_export_of_an_import_gives_the_same_index(
    source: ImageSetSource, tmp_path: Path
) -> None:
    """Names, tags, confirmation times and referrers survive export -> import -> export."""
    await export_images(source, tmp_path / "first")
    sink = DiskContent(tmp_path / "cache")
    assert (await import_into(sink, tmp_path / "first")).ok
    await export_images(sink, tmp_path / "second")
    first = (tmp_path / "first" / "index.json").read_bytes()
    assert (tmp_path / "second" / "index.json").read_bytes() == first
    assert b"org.registry-mirror.subject" in first


async def test_sha256sum_checks_a_directory_and_a_tar(
    source: ImageSetSource, tmp_path: Path
) -> None:
    await export_images(source, tmp_path / "layout")
    status, output = await run_tool("sha256sum", "--check", "--strict", "SHA256SUMS",
                                    cwd=tmp_path / "layout")  # fmt: skip
    assert status == 0, output
    files = [p for p in (tmp_path / "layout").rglob("*") if p.is_file()]
    assert output.count(": OK") == len(files) - 1  # every file but SHA256SUMS itself

    result = await export_images(source, tmp_path / "layout.tar.zst")
    beside = ["layout.tar.zst.sha256", "layout.tar.zst.summary.json"]
    assert sorted(p.name for p in result.beside) == beside
    assert await run_tool("sha256sum", "-c", "layout.tar.zst.sha256", cwd=tmp_path) == (
        0, "layout.tar.zst: OK\n"
    )  # fmt: skip
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    assert (await run_tool("tar", "--zstd", "-xf", "../layout.tar.zst", cwd=unpacked))[0] == 0
    status, output = await run_tool("sha256sum", "-c", "SHA256SUMS", cwd=unpacked)
    assert status == 0, output


async def test_a_flipped_byte_fails_sha256sum(source: ImageSetSource, tmp_path: Path) -> None:
    await export_images(source, tmp_path / "layout")
    layer = max(
        (tmp_path / "layout" / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size
    )
    data = bytearray(layer.read_bytes())
    data[len(data) // 2] ^= 1
    layer.write_bytes(bytes(data))
    status, output = await run_tool("sha256sum", "-c", "--quiet", "SHA256SUMS",
                                    cwd=tmp_path / "layout")  # fmt: skip
    assert status == 1
    assert f"blobs/sha256/{layer.name}: FAILED" in output


async def test_tar_order_is_fixed_and_streamable(source: ImageSetSource, tmp_path: Path) -> None:
    """Metadata, then manifests, then blobs, each by digest; two runs give the same bytes."""
    await export_images(source, tmp_path / "a.tar")
    await export_images(source, tmp_path / "b.tar")
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    status, output = await run_tool("tar", "-tf", str(tmp_path / "a.tar"))
    assert status == 0, output
    listing = output.split()
    assert listing[:4] == ["oci-layout", "index.json", SUMMARY_FILE, "SHA256SUMS"]
    assert listing[4:6] == ["blobs/", "blobs/sha256/"]
    summary = parse_summary((tmp_path / "a.tar.summary.json").read_bytes(), "summary")
    names = listing[6:]
    manifests = sorted(f"blobs/sha256/{d.hex}" for d in source.manifests if d in summary.blobs)
    assert names[: len(manifests)] == manifests
    assert names[len(manifests) :] == sorted(names[len(manifests) :])
    assert len(names) == len(summary.blobs)


async def test_summary_lists_images_objects_and_totals(
    source: ImageSetSource, image_set: ImageSet, tmp_path: Path
) -> None:
    await export_images(source, tmp_path / "layout")
    doc = json.loads((tmp_path / "layout" / SUMMARY_FILE).read_text())
    assert doc["tool"].startswith("registry-mirror ")
    assert doc["created"] == "2026-11-01T12:00:00Z"
    index = (tmp_path / "layout" / "index.json").read_bytes()
    assert doc["layout"] == "sha256:" + hashlib.sha256(index).hexdigest()
    by_tag = {(i["repository"], i["tag"]): i for i in doc["images"]}
    multi = by_tag[("library/multi", "latest")]
    assert multi["digest"] == image_set.image("library/multi:latest").digest
    on_disk = {p.name: p.stat().st_size for p in (tmp_path / "layout/blobs/sha256").iterdir()}
    assert {k.split(":")[1]: v for k, v in doc["blobs"].items()} == on_disk
    assert doc["totals"] == {
        "images": 5, "referrers": 1, "objects": len(on_disk), "bytes": sum(on_disk.values()),
        "expected_from_base": 0,
    }  # fmt: skip


async def test_export_stops_on_damaged_cache_bytes_and_leaves_nothing(
    source: ImageSetSource, image_set: ImageSet, tmp_path: Path
) -> None:
    """A blob the cache holds wrongly stops the export, named; no destination appears."""
    layer = image_set.blobs_of(image_set.image("library/medium:latest").manifest)[0]
    bad = bytearray(layer.path.read_bytes())
    bad[100] ^= 0xFF
    source.blobs[parse_digest(layer.digest)] = bytes(bad)
    for dest in DESTINATIONS:
        with pytest.raises(ExportError, match=layer.digest):
            await export_images(source, tmp_path / dest)
    assert list(tmp_path.iterdir()) == []  # noqa: ASYNC240 (a test's own tmp_path)


async def test_export_refuses_an_existing_destination(
    source: ImageSetSource, tmp_path: Path
) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(ExportError, match="exists"):
        await export_images(source, tmp_path / "taken")


def test_stream_to_stdout_and_import_from_stdin(tmp_path: Path) -> None:
    """``-`` on both sides: a pipe, no file in between."""
    driver = [sys.executable, "-m", "tests.support.airgap_process"]
    with subprocess.Popen([*driver, "export", "-", *SMALL_REFS], stdout=subprocess.PIPE) as out:
        imported = subprocess.run(
            [*driver, "import", "-", str(tmp_path / "cache")],
            stdin=out.stdout, capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
    assert out.returncode == 0
    assert imported.returncode == 0, imported.stderr
    report = json.loads(imported.stdout)
    assert [i["status"] for i in report["images"]] == ["imported"] * 5


def test_a_tar_stream_is_never_written_to_a_terminal(tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tests.support.airgap_process", "export", "-", SMALL_REFS[0]],
            stdout=follower, stderr=subprocess.PIPE, text=True, check=False, timeout=120,
        )  # fmt: skip
    finally:
        os.close(leader)
        os.close(follower)
    assert done.returncode != 0
    assert "refusing to write a tar stream to a terminal" in done.stderr
