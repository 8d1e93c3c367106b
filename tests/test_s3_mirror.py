"""The mirror with its cache in S3 (moto server), end to end over real sockets.

Tests taking ``storage_settings`` run once on disk and once on S3.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mirror.app import FILLS, METRICS
from tests.support.fake_upstream import FakeUpstream, Fault
from tests.support.mirror_app import RunningMirror, mirror_config, run_mirror
from tests.support.s3 import MIN_PART, MotoS3, dead_endpoint, running_moto

REPO = "library/app"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def blob_bytes(size: int, seed: int) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 2048
    return (block * (size // len(block) + 1))[:size]


def add_image(up: FakeUpstream, layer: bytes, tag: str = "v1") -> tuple[str, str]:
    """A one-layer image in ``REPO``; returns (manifest digest, layer digest)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": tag}).encode()
    config_digest = up.add_blob(config)
    layer_digest = up.add_blob(layer)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": len(layer)}],
    }).encode()  # fmt: skip
    return up.add_manifest(REPO, manifest, OCI_MANIFEST, tag=tag), layer_digest


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get(client: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, bytes]:
    async with client.get(url, **kwargs) as answer:
        return answer.status, await answer.read()


async def pull(client: aiohttp.ClientSession, mirror: RunningMirror, tag: str = "v1") -> bytes:
    """Pull the manifest by tag and every blob it names; return the layer's bytes."""
    headers = {"Accept": OCI_MANIFEST}
    status, body = await get(client, f"{mirror.url}/v2/{REPO}/manifests/{tag}", headers=headers)
    assert status == 200, body
    manifest = json.loads(body)
    digests = [manifest["config"]["digest"], manifest["layers"][0]["digest"]]
    layer = b""
    for digest in digests:
        status, layer = await get(client, f"{mirror.url}/v2/{REPO}/blobs/{digest}")
        assert status == 200
        assert "sha256:" + hashlib.sha256(layer).hexdigest() == digest
    return layer


def metric(mirror: RunningMirror, name: str, **labels: str) -> float:
    """The value of one sample in the mirror's metrics (0 when absent)."""
    text = mirror.app[METRICS].render().decode()
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


async def fills_done(mirror: RunningMirror) -> None:
    """Wait (bounded) until no fill is running and each has committed or aborted."""
    for _ in range(200):
        # A failed fill is forgotten before its upload is aborted; the gauge drops after.
        if len(mirror.app[FILLS]) == 0 and metric(mirror, "mirror_fills_in_flight") == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("fills still running after 10 s")


# ------------------------------------------------------------------ both backends


async def test_pull_through_then_hits_with_no_upstream_request(
    up: FakeUpstream, client: aiohttp.ClientSession,
    storage_settings: dict[str, Any], tmp_path: Path,
) -> None:  # fmt: skip
    layer = blob_bytes(2 * MIN_PART + 999, seed=1)  # three parts on S3
    _, layer_digest = add_image(up, layer)
    config = mirror_config(tmp_path, up.url, storage=storage_settings)
    async with run_mirror(config) as mirror:
        assert await pull(client, mirror) == layer
        await fills_done(mirror)
        before = len(up.requests)
        for _ in range(2):
            status, body = await get(client, f"{mirror.url}/v2/{REPO}/blobs/{layer_digest}")
            assert (status, body == layer) == (200, True)
        status, body = await get(
            client, f"{mirror.url}/v2/{REPO}/blobs/{layer_digest}",
            headers={"Range": f"bytes={MIN_PART - 5}-{MIN_PART + 4}"},
        )  # fmt: skip
        assert (status, body) == (206, layer[MIN_PART - 5 : MIN_PART + 5])
        assert len(up.requests) == before
        assert metric(mirror, "mirror_requests_total", kind="blob", result="hit") == 3
        assert metric(mirror, "mirror_storage_errors_total") == 0


async def test_followers_get_bytes_while_the_fill_runs(
    up: FakeUpstream, client: aiohttp.ClientSession,
    storage_settings: dict[str, Any], tmp_path: Path,
) -> None:  # fmt: skip
    layer = blob_bytes(3 * 1024 * 1024, seed=2)
    _, digest = add_image(up, layer)
    up.add_fault(Fault(digest, method="GET", rate=1024 * 1024))  # about 3 s
    config = mirror_config(tmp_path, up.url, storage=storage_settings)
    async with run_mirror(config) as mirror:
        url = f"{mirror.url}/v2/{REPO}/blobs/{digest}"
        async with client.get(url) as first:
            head = await first.content.readexactly(64 * 1024)
            async with client.get(url) as second:
                early = await second.content.readexactly(64 * 1024)
                # The follower has bytes while the leader's download is still running.
                assert len(mirror.app[FILLS]) == 1
                rest_second = await second.read()
            rest_first = await first.read()
    assert head + rest_first == layer
    assert early + rest_second == layer
    assert up.count("GET", f"/blobs/{digest}") == 1


# ------------------------------------------------------------------ S3 only


def s3_config(s3: MotoS3, bucket: str, tmp_path: Path, up: FakeUpstream, **s3_settings: Any) -> Any:
    storage = s3.storage_settings(bucket, tmp_path / "spool", **s3_settings)
    return mirror_config(tmp_path, up.url, storage=storage)


async def test_blobs_and_manifests_land_in_the_bucket(
    up: FakeUpstream, client: aiohttp.ClientSession, s3_server: MotoS3, tmp_path: Path
) -> None:
    manifest_digest, layer_digest = add_image(up, blob_bytes(MIN_PART + 7, seed=3))
    bucket = s3_server.create_bucket()
    async with run_mirror(s3_config(s3_server, bucket, tmp_path, up)) as mirror:
        await pull(client, mirror)
        await fills_done(mirror)
    stored = s3_server.keys(bucket)
    name = up.host
    assert stored[f"mirror/{name}/blobs/sha256/{layer_digest[7:9]}/{layer_digest[7:]}"] == (
        MIN_PART + 7
    )
    assert f"mirror/{name}/manifests/sha256/{manifest_digest[7:9]}/{manifest_digest[7:]}" in stored
    assert any(key.startswith(f"mirror/{name}/tags/{REPO}/v1/") for key in stored)
    assert all(key.startswith("mirror/") for key in stored)
    assert s3_server.uploads(bucket) == []


async def test_two_mirrors_share_one_bucket(
    up: FakeUpstream, client: aiohttp.ClientSession, s3_server: MotoS3, tmp_path: Path
) -> None:
    manifest_digest, layer_digest = add_image(up, blob_bytes(MIN_PART + 11, seed=4))
    bucket = s3_server.create_bucket()
    one = s3_config(s3_server, bucket, tmp_path / "one", up)
    two = s3_config(s3_server, bucket, tmp_path / "two", up)
    async with run_mirror(one) as first, run_mirror(two) as second:
        await pull(client, first)
        await fills_done(first)
        before = len(up.requests)
        for path in (f"manifests/{manifest_digest}", f"blobs/{layer_digest}"):
            status, _ = await get(client, f"{second.url}/v2/{REPO}/{path}")
            assert status == 200
        assert len(up.requests) == before
        assert metric(second, "mirror_requests_total", result="hit") == 2


async def test_unreachable_s3_serves_pulls_through(
    up: FakeUpstream, client: aiohttp.ClientSession, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    layer = blob_bytes(MIN_PART + 13, seed=5)
    _, digest = add_image(up, layer)
    down = MotoS3(dead_endpoint(), None)  # type: ignore[arg-type]
    caplog.set_level(logging.WARNING)
    async with run_mirror(s3_config(down, "bucket", tmp_path, up)) as mirror:
        for _ in range(2):
            assert await pull(client, mirror) == layer
            await fills_done(mirror)
        assert up.count("GET", f"/blobs/{digest}") == 2  # nothing was cached
        assert metric(mirror, "mirror_storage_errors_total", backend="s3") >= 2
    assert any("s3" in record.getMessage() for record in caplog.records)


@pytest.mark.slow
async def test_s3_dying_mid_fill_still_serves_the_blob(
    up: FakeUpstream, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    layer = blob_bytes(3 * MIN_PART, seed=6)
    _, digest = add_image(up, layer)
    up.add_fault(Fault(digest, method="GET", rate=6 * 1024 * 1024))  # about 2.5 s
    with running_moto(tmp_path) as own:
        bucket = own.create_bucket()
        async with run_mirror(s3_config(own, bucket, tmp_path, up)) as mirror:
            async with client.get(f"{mirror.url}/v2/{REPO}/blobs/{digest}") as answer:
                head = await answer.content.readexactly(MIN_PART + 1)
                own.process.stop()
                rest = await answer.read()
            assert head + rest == layer
            await fills_done(mirror)
            assert metric(mirror, "mirror_storage_errors_total", backend="s3") >= 1


async def test_corrupt_upstream_leaves_no_object_and_no_upload(
    up: FakeUpstream, client: aiohttp.ClientSession, s3_server: MotoS3, tmp_path: Path
) -> None:
    _, digest = add_image(up, blob_bytes(2 * MIN_PART + 1, seed=7))
    up.add_fault(Fault(digest, method="GET", corrupt=True))
    bucket = s3_server.create_bucket()
    async with run_mirror(s3_config(s3_server, bucket, tmp_path, up)) as mirror:
        with pytest.raises(aiohttp.ClientPayloadError):
            await get(client, f"{mirror.url}/v2/{REPO}/blobs/{digest}")
        await fills_done(mirror)
    assert not any("/blobs/" in key for key in s3_server.keys(bucket))
    assert s3_server.uploads(bucket) == []


async def test_shutdown_mid_fill_aborts_the_upload(
    up: FakeUpstream, client: aiohttp.ClientSession, s3_server: MotoS3, tmp_path: Path
) -> None:
    _, digest = add_image(up, blob_bytes(6 * MIN_PART, seed=8))
    up.add_fault(Fault(digest, method="GET", rate=4 * 1024 * 1024))
    bucket = s3_server.create_bucket()
    async with run_mirror(s3_config(s3_server, bucket, tmp_path, up)) as mirror:
        async with client.get(f"{mirror.url}/v2/{REPO}/blobs/{digest}") as answer:
            await answer.content.readexactly(2 * MIN_PART)
        # The client hung up; the fill goes on, with an upload under way, until shutdown.
        assert len(mirror.app[FILLS]) == 1
        assert s3_server.uploads(bucket) != []
    assert s3_server.keys(bucket, f"mirror/{up.host}/blobs/") == {}
    assert s3_server.uploads(bucket) == []


async def test_redirect_mode_sends_clients_to_a_presigned_url(
    up: FakeUpstream, client: aiohttp.ClientSession, s3_server: MotoS3, tmp_path: Path
) -> None:
    layer = blob_bytes(MIN_PART + 17, seed=9)
    _, digest = add_image(up, layer)
    bucket = s3_server.create_bucket()
    config = s3_config(s3_server, bucket, tmp_path, up, redirect=True)
    async with run_mirror(config) as mirror:
        assert await pull(client, mirror) == layer  # the miss streams through
        await fills_done(mirror)
        url = f"{mirror.url}/v2/{REPO}/blobs/{digest}"
        async with client.get(url, allow_redirects=False) as answer:
            assert answer.status == 307
            assert answer.headers["Docker-Content-Digest"] == digest
            location = answer.headers["Location"]
        assert location.startswith(s3_server.endpoint_url)
        assert await get(client, location) == (200, layer)
        assert await get(client, url) == (200, layer)  # followed by the client
