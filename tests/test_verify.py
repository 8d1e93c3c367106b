"""``registry-mirror verify`` and ``registry-mirror gc`` on a real disk cache."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import aiohttp

from tests.support.cache_images import (
    FakeImage,
    add_image,
    blob_path,
    content_on_disk,
    manifest_path,
    noise,
    pull,
    settle,
    upstream_name,
)
from tests.support.fake_upstream import FakeUpstream
from tests.support.mirror_app import mirror_config, run_mirror


async def cli(*args: str) -> tuple[int, str]:
    """Run ``python -m mirror ARGS``; its exit status and stdout."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mirror", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def cached_image(
    up: FakeUpstream, http: aiohttp.ClientSession, cache_dir: Path, seed: int = 1
) -> FakeImage:
    image = add_image(up, f"team/app{seed}", "1", [noise(30_000, seed), noise(10_000, seed + 1)])
    async with run_mirror(mirror_config(cache_dir, up.url)) as mirror:
        await pull(http, mirror.url, image)
        await settle(mirror.app)
    return image


def flip_byte(path: Path, offset: int = 1000) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


async def test_verify_finds_and_removes_a_corrupted_blob(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    image = await cached_image(up, http, tmp_path)
    flags = ("--cache-dir", str(tmp_path), "--upstream", up.url)
    status, out = await cli("verify", *flags)
    assert status == 0, out
    assert "checked 3 blobs and 1 manifests" in out

    damaged = blob_path(tmp_path, upstream_name(up), image.layers[0])
    flip_byte(damaged)
    status, out = await cli("verify", *flags)
    assert status == 1, out
    assert f"damaged: {upstream_name(up)}/blobs/sha256/" in out
    assert "1 damaged (1 removed, 0 quarantined)" in out
    assert not damaged.exists()
    assert blob_path(tmp_path, upstream_name(up), image.layers[1]).exists()
    status, out = await cli("verify", *flags)
    assert status == 0, out

    async with run_mirror(mirror_config(tmp_path, up.url)) as mirror:
        await pull(http, mirror.url, image)  # the good copy comes back, verified
    assert up.count("GET", "/blobs/" + image.layers[0]) == 2
    assert up.count("GET", "/blobs/" + image.layers[1]) == 1


async def test_verify_quarantines_blob_and_manifest(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    image = await cached_image(up, http, tmp_path)
    name = upstream_name(up)
    blob = blob_path(tmp_path, name, image.layers[1])
    manifest = manifest_path(tmp_path, name, image.manifest)
    flip_byte(blob, 5)
    flip_byte(manifest, len(manifest.read_bytes()) - 3)
    status, out = await cli(
        "verify", "--quarantine", "--cache-dir", str(tmp_path), "--upstream", up.url
    )
    assert status == 1, out
    assert "2 damaged (2 removed, 2 quarantined)" in out
    assert not blob.exists()
    assert not manifest.exists()
    kept = tmp_path / "_quarantine" / blob.relative_to(tmp_path)
    assert kept.read_bytes()[5] != noise(10_000, 2)[5]
    assert (tmp_path / "_quarantine" / manifest.relative_to(tmp_path)).exists()


async def test_gc_command_evicts_least_recent(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    old = await cached_image(up, http, tmp_path, seed=1)
    await asyncio.sleep(0.02)  # distinct modification times
    new = await cached_image(up, http, tmp_path, seed=10)
    total = sum(content_on_disk(tmp_path).values())
    assert total > 80_000
    flags = ("--cache-dir", str(tmp_path), "--upstream", up.url)
    status, out = await cli("gc", *flags)
    assert status == 0, out
    assert "no cache budget configured" in out
    assert sum(content_on_disk(tmp_path).values()) == total

    status, out = await cli("gc", "--max-size", "60KB", *flags)
    assert status == 0, out
    found = re.search(r"removed (\d+) objects", out)
    assert found is not None, out
    removed = int(found.group(1))
    assert removed >= 3  # at least the old manifest, its config and its big layer
    assert out.count("  evicted ") == removed
    assert not manifest_path(tmp_path, upstream_name(up), old.manifest).exists()
    assert manifest_path(tmp_path, upstream_name(up), new.manifest).exists()
    assert sum(content_on_disk(tmp_path).values()) <= 60_000 * 0.85


async def test_bad_pin_is_a_configuration_error(tmp_path: Path) -> None:
    config = tmp_path / "mirror.toml"
    config.write_text('[cache]\npins = ["alpine"]\n')
    status, out = await cli("check-config", "--config", str(config))
    assert status == 2
    assert "cache.pins: 'alpine'" in out


async def test_verify_covers_upstreams_the_configuration_does_not_name(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    image = await cached_image(up, http, tmp_path)  # filled through --upstream up.url
    name = upstream_name(up)
    damaged = blob_path(tmp_path, name, image.layers[0])
    flip_byte(damaged)
    # The configuration names only the default upstream (Docker Hub), not the one it was filled by.
    status, out = await cli("verify", "--cache-dir", str(tmp_path))
    assert status == 1, out
    assert "checked 3 blobs and 1 manifests" in out
    assert f"damaged: {name}/blobs/sha256/" in out
    assert f"upstream {name} is not in the configuration: its 4 blobs and manifests" in out
    assert not damaged.exists()
    status, out = await cli("verify", "--cache-dir", str(tmp_path), "--upstream", up.url)
    assert status == 0, out
    assert "not in the configuration" not in out


async def test_gc_counts_and_evicts_upstreams_the_configuration_does_not_name(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    await cached_image(up, http, tmp_path)
    total = sum(content_on_disk(tmp_path).values())
    status, out = await cli("gc", "--cache-dir", str(tmp_path), "--max-size", "20KB")
    assert status == 0, out
    assert f"upstream {upstream_name(up)} is not in the configuration: its " in out
    assert f"objects ({total} bytes) count toward the budget" in out
    assert sum(content_on_disk(tmp_path).values()) <= 20_000 * 0.85
    assert "removed 0 objects" not in out
