"""Tag freshness: TTL, HEAD revalidation, stale-if-error and offline mode."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.fake_upstream import FakeUpstream, Fault
from tests.support.mirror_app import RunningMirror, mirror_config, run_mirror
from tests.support.pulls import Pulled, blob_url, manifest_url, pull, wait_idle

REPO = "team/app"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT = {"Accept": OCI_MANIFEST}
TTL = 1.0


def manifest_body(layer: str, media_type: str = OCI_MANIFEST) -> bytes:
    config = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": layer, "size": 2}
    layer_ref = {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 2}
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config,
        "layers": [layer_ref],
    }
    return json.dumps(doc).encode()


class Image:
    """One tagged manifest and one blob in the fake upstream."""

    def __init__(self, up: FakeUpstream, tag: str = "v1", seed: bytes = b"a") -> None:
        self.blob = os.urandom(2000) + seed
        self.blob_digest = up.add_blob(self.blob)
        self.body = manifest_body(self.blob_digest)
        self.digest = up.add_manifest(REPO, self.body, OCI_MANIFEST, tag=tag)
        self.tag = tag


def manifest_requests(up: FakeUpstream, method: str, tag: str = "v1") -> int:
    return up.count(method, f"/{REPO}/manifests/{tag}")


async def get_tag(mirror: RunningMirror, session: aiohttp.ClientSession, tag: str = "v1",
                  headers: dict[str, str] = ACCEPT) -> Pulled:  # fmt: skip
    return await pull(session, manifest_url(mirror.url, REPO, tag), headers)


async def test_within_ttl_the_upstream_is_not_asked(
    up: FakeUpstream, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    image = Image(up)
    config = mirror_config(tmp_path, up.url, tag_ttl=60)
    async with run_mirror(config) as mirror:
        first = await get_tag(mirror, session)
        seen = len(up.requests)
        again = await get_tag(mirror, session)
        async with session.head(manifest_url(mirror.url, REPO, "v1"), headers=ACCEPT) as head:
            head_digest = head.headers["Docker-Content-Digest"]

    assert first.body == again.body == image.body
    assert head_digest == image.digest
    assert len(up.requests) == seen


async def test_after_ttl_a_head_revalidates(
    up: FakeUpstream, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    image = Image(up)
    async with run_mirror(mirror_config(tmp_path, up.url, tag_ttl=TTL)) as mirror:
        await get_tag(mirror, session)
        await asyncio.sleep(TTL + 0.1)
        # Concurrent clients past the TTL share one revalidation.
        revalidated = await asyncio.gather(*(get_tag(mirror, session) for _ in range(10)))
        renewed = await get_tag(mirror, session)  # the HEAD renewed the record's TTL

    for pulled in (*revalidated, renewed):
        assert pulled.body == image.body
        assert pulled.headers["Docker-Content-Digest"] == image.digest
    assert manifest_requests(up, "GET") == 1
    assert manifest_requests(up, "HEAD") == 1


async def test_a_moved_tag_is_picked_up_after_ttl(
    up: FakeUpstream, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    old = Image(up)
    async with run_mirror(mirror_config(tmp_path, up.url, tag_ttl=TTL)) as mirror:
        await get_tag(mirror, session)
        new = Image(up, seed=b"new")  # the tag now points here
        within_ttl = await get_tag(mirror, session)
        await asyncio.sleep(TTL + 0.1)
        after_ttl = await get_tag(mirror, session)
        async with session.head(manifest_url(mirror.url, REPO, "v1"), headers=ACCEPT) as head:
            head_digest = head.headers["Docker-Content-Digest"]

    assert within_ttl.headers["Docker-Content-Digest"] == old.digest
    assert after_ttl.headers["Docker-Content-Digest"] == new.digest
    assert after_ttl.body == new.body
    assert head_digest == new.digest


async def fail_upstream(up: FakeUpstream, how: str) -> None:
    if how == "down":
        await up.__aexit__(None, None, None)
    else:
        up.add_fault(Fault(status=int(how), retry_after=5))


@pytest.mark.parametrize("how", ["503", "429", "down"])
async def test_stale_manifest_and_cached_blobs_are_served_when_the_upstream_fails(
    session: aiohttp.ClientSession,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    how: str,
) -> None:
    up = FakeUpstream()
    await up.__aenter__()
    try:
        image = Image(up)
        config = mirror_config(tmp_path, up.url, tag_ttl=TTL, max_stale=600)
        async with run_mirror(config) as mirror:
            await get_tag(mirror, session)
            await pull(session, blob_url(mirror.url, REPO, image.blob_digest))
            await wait_idle(mirror.app)
            await asyncio.sleep(TTL + 0.1)
            await fail_upstream(up, how)
            with caplog.at_level(logging.WARNING, logger="mirror"):
                stale = await get_tag(mirror, session)
            async with session.head(manifest_url(mirror.url, REPO, "v1"), headers=ACCEPT) as head:
                head_status, head_warning = head.status, head.headers.get("Warning")
            blob = await pull(session, blob_url(mirror.url, REPO, image.blob_digest))
            by_digest = await pull(session, manifest_url(mirror.url, REPO, image.digest))
    finally:
        if how != "down":
            await up.__aexit__(None, None, None)

    assert stale.status == 200
    assert stale.body == image.body
    assert stale.headers["Docker-Content-Digest"] == image.digest
    assert stale.headers["Warning"].startswith("299 - ")
    assert "stale" in stale.headers["Warning"]
    assert "serving stale" in caplog.text
    assert (head_status, head_warning is not None) == (200, True)
    assert blob.status == 200
    assert blob.body == image.blob
    assert by_digest.body == image.body


# A Retry-After longer than the mirror waits out is passed on, with the status it came with.
@pytest.mark.parametrize(("how", "status", "code"), [("503", 503, "UNAVAILABLE"),
                                                     ("429", 429, "TOOMANYREQUESTS")])  # fmt: skip
async def test_beyond_max_stale_the_error_is_passed_on(
    up: FakeUpstream,
    session: aiohttp.ClientSession,
    tmp_path: Path,
    how: str,
    status: int,
    code: str,
) -> None:
    Image(up)
    config = mirror_config(tmp_path, up.url, tag_ttl=0.1, max_stale=0.1)
    async with run_mirror(config) as mirror:
        await get_tag(mirror, session)
        await asyncio.sleep(0.5)
        await fail_upstream(up, how)
        failed = await get_tag(mirror, session)
        listed = await pull(session, f"{mirror.url}/v2/{REPO}/tags/list")

    assert failed.status == status
    assert json.loads(failed.body)["errors"][0]["code"] == code
    assert failed.headers["Retry-After"] == "5"
    assert "Warning" not in failed.headers
    # The cached tags too are past max_stale: the tag list fails the same way.
    assert (listed.status, "Warning" in listed.headers) == (status, False)


@pytest.mark.parametrize("how", ["503", "429", "down"])
async def test_tag_list_of_the_cached_tags_when_the_upstream_fails(
    session: aiohttp.ClientSession, tmp_path: Path, how: str
) -> None:
    """As distribution's proxy serves its local list; marked stale like a manifest."""
    up = FakeUpstream()
    await up.__aenter__()
    try:
        for tag, seed in (("v1", b"1"), ("v2", b"2"), ("v3", b"3")):
            Image(up, tag=tag, seed=seed)
        config = mirror_config(tmp_path, up.url, tag_ttl=TTL, max_stale=600)
        async with run_mirror(config) as mirror:
            for tag in ("v2", "v1"):  # v3 is never pulled: the cache does not know it
                await get_tag(mirror, session, tag)
            await fail_upstream(up, how)
            listed = await pull(session, f"{mirror.url}/v2/{REPO}/tags/list")
            paged = await pull(session, f"{mirror.url}/v2/{REPO}/tags/list?n=1&last=v1")
            unknown = await pull(session, f"{mirror.url}/v2/team/other/tags/list")
    finally:
        if how != "down":
            await up.__aexit__(None, None, None)

    assert listed.status == 200
    assert json.loads(listed.body) == {"name": REPO, "tags": ["v1", "v2"]}
    assert listed.headers["Warning"].startswith("299 - ")
    assert "stale" in listed.headers["Warning"]
    assert json.loads(paged.body)["tags"] == ["v2"]
    assert unknown.status >= 500 or unknown.status == 429  # nothing known: the error passes


async def test_no_stale_answer_for_a_tag_never_seen(
    up: FakeUpstream, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    Image(up)
    up.add_fault(Fault(status=503))
    async with run_mirror(mirror_config(tmp_path, up.url)) as mirror:
        failed = await get_tag(mirror, session)

    assert failed.status == 502
    assert json.loads(failed.body)["errors"][0]["code"] == "UNAVAILABLE"


async def test_offline_mode_serves_the_cache_and_never_connects(
    up: FakeUpstream, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    image = Image(up)
    Image(up, tag="v2", seed=b"other")  # never pulled
    cache = tmp_path / "cache"
    async with run_mirror(mirror_config(cache, up.url, tag_ttl=0.1)) as mirror:
        await get_tag(mirror, session)
        await pull(session, blob_url(mirror.url, REPO, image.blob_digest))
        await wait_idle(mirror.app)
    await asyncio.sleep(0.2)  # the tag record is past its TTL
    connections = up.connections

    offline = mirror_config(cache, up.url, tag_ttl=0.1, offline=True)
    async with run_mirror(offline) as mirror:
        tagged = await get_tag(mirror, session)
        # An Accept set never seen for this tag still resolves to the known digest.
        other_accept = await get_tag(mirror, session, headers={"Accept": f"{OCI_MANIFEST}, */*"})
        by_digest = await pull(session, manifest_url(mirror.url, REPO, image.digest))
        blob = await pull(session, blob_url(mirror.url, REPO, image.blob_digest))
        unknown_tag = await get_tag(mirror, session, tag="v2")
        unknown_digest = await pull(session, manifest_url(mirror.url, REPO, "sha256:" + "0" * 64))
        unknown_blob = await pull(session, blob_url(mirror.url, REPO, "sha256:" + "1" * 64))
        async with session.head(blob_url(mirror.url, REPO, "sha256:" + "1" * 64)) as head:
            unknown_blob_head = head.status
        tags = await pull(session, f"{mirror.url}/v2/{REPO}/tags/list")

    assert up.connections == connections  # not one TCP connection while offline
    assert tagged.body == other_accept.body == by_digest.body == image.body
    assert tagged.headers["Docker-Content-Digest"] == image.digest
    assert blob.body == image.blob
    for missing, code in ((unknown_tag, "MANIFEST_UNKNOWN"), (unknown_digest, "MANIFEST_UNKNOWN"),
                          (unknown_blob, "BLOB_UNKNOWN")):  # fmt: skip
        assert missing.status == 404
        assert json.loads(missing.body)["errors"][0]["code"] == code
    assert unknown_blob_head == 404
    assert json.loads(tags.body)["tags"] == ["v1"]
