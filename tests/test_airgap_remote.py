"""``registry-mirror import SRC --mirror URL``: a layout into a running mirror's cache.

The mirror runs on a real socket with an admin token, offline (its upstream
counts connections and must see none); the command runs as a process.
"""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import aiohttp

from mirror.config import Config
from tests.support.airgap_cli import pulled_digest, run_cli_async
from tests.support.airgap_content import SMALL_REFS, UPSTREAM, ImageSetSource, export_images
from tests.support.fake_upstream import FakeUpstream
from tests.support.images import ImageSet
from tests.support.mirror_app import mirror_config, run_mirror

TOKEN = "s3cret-admin-token"


def offline_mirror(cache_dir: Path, upstream_url: str, **settings: object) -> Config:
    upstreams = [{"name": UPSTREAM, "url": upstream_url}]
    return mirror_config(cache_dir, upstream_url, upstreams=upstreams, offline=True,
                         admin={"token": TOKEN}, **settings)  # fmt: skip


async def send(
    mirror_url: str, source: Path, *flags: str, token: str = TOKEN
) -> tuple[int, str, str]:
    """``import SOURCE --mirror URL`` with the token in the environment, as an operator sets it."""
    env = {"MIRROR_ADMIN_TOKEN": token} if token else {}
    args = ["import", str(source), "--mirror", mirror_url, "--json", "--quiet", *flags]
    return await run_cli_async(*args, env=env)


async def test_import_into_a_running_mirror_serves_at_once(
    image_set: ImageSet, storage_settings: dict[str, Any], tmp_path: Path
) -> None:
    tar = tmp_path / "layout.tar.zst"
    await export_images(ImageSetSource(image_set, SMALL_REFS), tar)
    async with FakeUpstream() as unreachable:
        config = offline_mirror(tmp_path / "cache", unreachable.url, storage=storage_settings)
        async with run_mirror(config) as mirror:
            status, out, err = await send(mirror.url, tar)
            assert status == 0, err
            report = json.loads(out)
            assert {i["status"] for i in report["images"]} == {"imported"}
            for ref in SMALL_REFS:
                assert await pulled_digest(mirror.url, ref, tmp_path) == image_set.image(ref).digest
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{mirror.url}/metrics") as resp:
                    metrics = await resp.text()
            size = next(line for line in metrics.splitlines()
                        if line.startswith("mirror_cache_size_bytes"))  # fmt: skip
            assert float(size.split()[-1]) >= report["bytes_written"]
            status, out, _ = await send(mirror.url, tar)
            assert status == 0
            assert json.loads(out)["blobs_written"] == 0
        assert unreachable.connections == 0


async def test_refusals_are_oci_errors_and_the_mirror_keeps_serving(
    image_set: ImageSet, tmp_path: Path
) -> None:
    tar = tmp_path / "layout.tar"
    await export_images(ImageSetSource(image_set, ["library/medium:latest"]), tar)
    junk = io.BytesIO()
    with tarfile.open(fileobj=junk, mode="w") as archive:
        info = tarfile.TarInfo("junk")
        info.size = 3 * 1024 * 1024
        archive.addfile(info, io.BytesIO(b"\0" * info.size))
    config = offline_mirror(tmp_path / "cache", "http://127.0.0.1:9", cache={"max_size": "2MiB"})
    async with run_mirror(config) as mirror, aiohttp.ClientSession() as http:
        status, _, err = await send("http://127.0.0.1:9", tar)  # nobody listens there
        assert status == 3
        assert "127.0.0.1:9" in err
        assert "Traceback" not in err
        status, _, err = await send(mirror.url, tar, token="wrong")
        assert status == 3
        assert "401" in err
        status, _, err = await send(mirror.url, tar, token="")
        assert status == 2
        assert "admin token" in err
        status, _, err = await send(mirror.url, tar)
        assert status == 3
        assert "more than the cache budget" in err
        url = f"{mirror.url}/admin/import"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for body, code, expected in [
            (b"not a tar at all", 400, "BLOB_UPLOAD_INVALID"),
            (io.BytesIO(junk.getvalue()), 413, "SIZE_INVALID"),
        ]:
            async with http.put(url, data=body, headers=auth) as resp:
                assert resp.status == code
                assert (await resp.json())["errors"][0]["code"] == expected
        async with http.put(url + "?repository=Bad..Name", data=b"", headers=auth) as resp:
            assert resp.status == 400
        async with http.get(f"{mirror.url}/healthz") as resp:
            assert resp.status == 200
    assert not list((tmp_path / "cache").rglob("blobs/*/*/*"))


async def partial_request(
    mirror_url: str, data: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A PUT of ``data`` that sends only its first half, and keeps the connection."""
    host, port = mirror_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"PUT /admin/import HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data[: len(data) // 2]
    )
    await writer.drain()
    return reader, writer


async def test_a_sender_that_goes_quiet_or_vanishes_leaves_nothing_partial(
    image_set: ImageSet, tmp_path: Path
) -> None:
    tar = tmp_path / "layout.tar"
    await export_images(ImageSetSource(image_set, ["library/medium:latest"]), tar)
    data = tar.read_bytes()
    cache = tmp_path / "cache"
    config = offline_mirror(cache, "http://127.0.0.1:9", fill={"idle_timeout": "2s"})
    url = "/admin/import"
    async with run_mirror(config) as mirror, aiohttp.ClientSession(mirror.url) as http:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        answer, quiet = await partial_request(mirror.url, data)
        await asyncio.sleep(0.5)
        async with http.put(url, data=io.BytesIO(data), headers=auth) as resp:
            assert resp.status == 429  # one import at a time
        head = (await asyncio.wait_for(answer.readline(), timeout=60)).decode()
        assert head.startswith("HTTP/1.1 200"), head  # cut after 2 s of silence
        quiet.close()
        _, vanished = await partial_request(mirror.url, data)
        vanished.close()  # half a blob, then gone
        for _ in range(600):  # until the mirror has given up on it
            async with http.put(url, data=io.BytesIO(data), headers=auth) as resp:
                if resp.status != 429:
                    break
            await asyncio.sleep(0.1)
        assert resp.status == 200
        async with http.get("/healthz") as health:
            assert health.status == 200
    assert not list((cache / ".partial").iterdir())
    layer = max(image_set.blobs_of(image_set.image("library/medium:latest").manifest),
                key=lambda b: b.size)  # fmt: skip
    assert len(list(cache.rglob(layer.digest.removeprefix("sha256:")))) == 1


async def test_a_cache_that_refuses_a_manifest_is_a_503_not_a_500(
    image_set: ImageSet, tmp_path: Path
) -> None:
    tar = tmp_path / "layout.tar"
    await export_images(ImageSetSource(image_set, ["library/tiny:oci"]), tar)
    cache = tmp_path / "cache"
    (cache / UPSTREAM).mkdir(parents=True)
    (cache / UPSTREAM / "manifests").write_bytes(b"")  # a file where manifests must go
    config = offline_mirror(cache, "http://127.0.0.1:9")
    async with run_mirror(config) as mirror, aiohttp.ClientSession(mirror.url) as http:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with http.put("/admin/import", data=tar.read_bytes(), headers=auth) as resp:
            assert resp.status == 503
            error = (await resp.json())["errors"][0]
            assert error["code"] == "UNAVAILABLE"
            assert "the cache refused a write" in error["message"]
        async with http.get("/healthz") as health:
            assert health.status == 200
    assert not list(cache.rglob("tags/*"))  # no tag without its manifest
