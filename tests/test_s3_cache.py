"""The size budget, pins and verify on the S3 backend (moto in server mode)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from mirror.cache.commands import run_verify
from mirror.config import build_config
from tests.support.cache_images import FakeImage, add_image, noise, pull, settle, upstream_name
from tests.support.fake_upstream import FakeUpstream
from tests.support.mirror_app import mirror_config, run_mirror
from tests.support.s3 import MotoS3

LAYER = 20_000
BUDGET = {"max_size": 100_000, "high_watermark": 0.9, "low_watermark": 0.65}
PREFIX = "mirror"


def in_bucket(s3: MotoS3, bucket: str, up: FakeUpstream, image: FakeImage) -> list[bool]:
    """For the manifest and each layer of ``image``: is it in the bucket?"""
    keys = s3.keys(bucket, f"{PREFIX}/")
    base = f"{PREFIX}/{upstream_name(up)}"
    wanted = [f"{base}/manifests/sha256/{image.manifest[7:9]}/{image.manifest[7:]}"]
    wanted += [f"{base}/blobs/sha256/{d[7:9]}/{d[7:]}" for d in image.layers]
    return [key in keys for key in wanted]


def content_bytes(s3: MotoS3, bucket: str) -> int:
    """Bytes of blobs, manifests and tag records in the bucket: what the budget counts."""
    keys = s3.keys(bucket, f"{PREFIX}/")
    budgeted = ("/blobs/", "/manifests/", "/tags/")
    return sum(size for key, size in keys.items() if any(kind in key for kind in budgeted))


async def test_budget_and_pins_on_s3(
    up: FakeUpstream, http: aiohttp.ClientSession, s3_server: MotoS3, tmp_path: Path
) -> None:
    bucket = s3_server.create_bucket()
    storage = s3_server.storage_settings(bucket, tmp_path / "spool", prefix=PREFIX)
    pinned = add_image(up, "base/pinned", "stable", [noise(LAYER, 99)])
    a, b, c, d = (add_image(up, f"team/app{i}", "1", [noise(LAYER, i)]) for i in range(4))
    cache = {**BUDGET, "pins": ["base/pinned:stable"]}
    config = mirror_config(tmp_path, up.url, storage=storage, cache=cache)
    async with run_mirror(config) as mirror:
        for image in (pinned, a, b, c):
            await pull(http, mirror.url, image)
            await settle(mirror.app)
        await pull(http, mirror.url, a)  # a hit makes a the most recent
        await pull(http, mirror.url, d)
        manager = await settle(mirror.app)
        assert content_bytes(s3_server, bucket) == manager.storage.index.size <= 65_000
        assert all(in_bucket(s3_server, bucket, up, pinned))
        assert all(in_bucket(s3_server, bucket, up, a))
        assert all(in_bucket(s3_server, bucket, up, d))
        assert not any(in_bucket(s3_server, bucket, up, b))
        await pull(http, mirror.url, b)  # evicted: fetched again and correct
        assert up.count("GET", "/blobs/" + b.layers[0]) == 2


async def damaged_on_s3(
    up: FakeUpstream, http: aiohttp.ClientSession, s3_server: MotoS3, tmp_path: Path
) -> tuple[str, dict[str, Any], str]:
    """A bucket filled through a mirror, then one layer overwritten with other bytes.

    Returns the bucket, the mirror's storage settings and the layer's digest.
    """
    bucket = s3_server.create_bucket()
    storage = s3_server.storage_settings(bucket, tmp_path / "spool", prefix=PREFIX)
    image = add_image(up, "team/app", "1", [noise(LAYER, 1)])
    async with run_mirror(mirror_config(tmp_path, up.url, storage=storage)) as mirror:
        await pull(http, mirror.url, image)
        await settle(mirror.app)
    layer = image.layers[0]
    key = f"{PREFIX}/{upstream_name(up)}/blobs/sha256/{layer[7:9]}/{layer[7:]}"
    s3_server.client.put_object(Bucket=bucket, Key=key, Body=noise(LAYER, 2))
    return bucket, storage, layer


async def test_verify_finds_a_damaged_object_on_s3(
    up: FakeUpstream, http: aiohttp.ClientSession, s3_server: MotoS3, tmp_path: Path
) -> None:
    bucket, storage, layer = await damaged_on_s3(up, http, s3_server, tmp_path)
    key = f"{PREFIX}/{upstream_name(up)}/blobs/sha256/{layer[7:9]}/{layer[7:]}"

    raw = {"storage": storage, "upstreams": [{"url": up.url}]}
    report = await run_verify(build_config(raw), quarantine=False)
    assert report.damaged == [f"{upstream_name(up)}/blobs/sha256/{layer[7:9]}/{layer[7:]}"]
    assert report.blobs >= 2
    assert key not in s3_server.keys(bucket, f"{PREFIX}/")


async def test_verify_on_s3_covers_upstreams_the_configuration_does_not_name(
    up: FakeUpstream, http: aiohttp.ClientSession, s3_server: MotoS3, tmp_path: Path
) -> None:
    bucket, storage, layer = await damaged_on_s3(up, http, s3_server, tmp_path)
    name = upstream_name(up)
    key = f"{name}/blobs/sha256/{layer[7:9]}/{layer[7:]}"

    elsewhere = {"storage": storage, "upstreams": [{"url": "https://registry.example"}]}
    report = await run_verify(build_config(elsewhere), quarantine=True)
    assert report.damaged == [key]
    assert report.unconfigured == {name: 3}  # the config blob, the layer, the manifest
    assert (report.blobs, report.manifests) == (2, 1)
    keys = s3_server.keys(bucket, f"{PREFIX}/")
    assert f"{PREFIX}/{key}" not in keys
    assert f"{PREFIX}/_quarantine/{key}" in keys
    again = await run_verify(build_config(elsewhere), quarantine=True)
    assert again.ok  # the quarantined copy is not checked again
    assert again.unconfigured == {name: 2}
