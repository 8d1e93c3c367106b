"""A fleet: three replicas on one S3 bucket (moto) behind HAProxy with the shipped config.

With blobs hashed by digest, a cold blob pulled by 30 clients at once is
downloaded from the upstream once, whichever replicas the clients' other
requests reach. Without hashing each replica runs its own single flight,
and the upstream sees up to one download per replica. A replica killed
mid-download leaves nothing in the bucket, and the client's retry through
HAProxy gets the whole blob from another replica; a new replica serves
what the others cached at once; tag records are shared through the bucket.

The layer is ``$MIRROR_TEST_FLEET_MB`` MiB (default 32; docs/deploy.md has the
figures for 200). Clients are curl processes piped into sha256sum.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import signal
import time
from collections.abc import Iterator

import pytest

from tests.support.fake_upstream import Fault
from tests.support.fleet import (
    Fleet,
    curl_digest,
    fills_in_flight,
    missing_fleet_tools,
    running_fleet,
)
from tests.support.pulls import wait_for
from tests.support.s3 import MotoS3

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
LAYER_MB = int(os.environ.get("MIRROR_TEST_FLEET_MB") or 32)
CLIENTS = 30
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def fleet(s3_server: MotoS3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Three replicas, HAProxy with and without digest hashing."""
    missing = missing_fleet_tools()
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (see .ci/install-debian-packages)")
    with running_fleet(tmp_path_factory.mktemp("fleet"), s3_server, 3) as running:
        yield running


def add_image(fleet: Fleet, repositories: list[str], layer: bytes) -> str:
    """One manifest tagged ``latest`` in each repository, all with ``layer``; its digest."""
    digest = fleet.upstream.add_blob(layer)
    config = b"{}"
    config_digest = fleet.upstream.add_blob(config)
    body = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": digest, "size": len(layer)}],
    }).encode()  # fmt: skip
    for repository in repositories:
        fleet.upstream.add_manifest(repository, body, OCI_MANIFEST, tag="latest")
    return digest


async def pull(base: str, repository: str, digest: str) -> str:
    """A client's pull: the manifest by tag, then the layer; the layer's digest as received."""
    status, _ = await curl_digest(f"{base}/v2/{repository}/manifests/latest",
                                  [f"Accept: {OCI_MANIFEST}"])  # fmt: skip
    assert status == 0
    status, received = await curl_digest(f"{base}/v2/{repository}/blobs/{digest}")
    assert status == 0
    return received


async def logged(fleet: Fleet, texts: list[str], total: int) -> None:
    """Wait until the replicas' logs hold ``total`` lines with one of ``texts`` (at most 10 s)."""

    def count() -> int:
        return sum(sum(fleet.replica_log_count(text)) for text in texts)

    await wait_for(lambda: count() >= total, f"{total} access-log lines", 10)


@pytest.mark.parametrize("route", ["hashed", "round-robin", "one replica"])
async def test_thirty_cold_pulls(fleet: Fleet, route: str) -> None:
    repositories = [f"team{i}/{route.replace(' ', '-')}" for i in range(5)]
    layer = random.Random(route).randbytes(LAYER_MB * MIB)
    digest = add_image(fleet, repositories, layer)
    # About 4 s of download: every client arrives while the blob is still cold.
    fleet.upstream.add_fault(Fault(match=digest, method="GET", rate=len(layer) / 4))
    base = fleet.replicas[0].url if route == "one replica" else fleet.proxies[route].url
    started = time.monotonic()
    received = await asyncio.gather(
        *(pull(base, repositories[i % 5], digest) for i in range(CLIENTS))
    )
    wall = time.monotonic() - started
    assert received == [digest] * CLIENTS
    upstream_gets = fleet.upstream.count("GET", "/blobs/" + digest)
    # A replica logs a request only after its last byte went out: a client may be first.
    await logged(fleet, [f"/blobs/{digest}"] + [f"/v2/{r}/manifests/latest" for r in repositories],
                 2 * CLIENTS)  # fmt: skip
    blob_requests = fleet.replica_log_count(f"/blobs/{digest}")
    manifest_requests = [sum(fleet.replica_log_count(f"/v2/{r}/manifests/latest"))
                         for r in repositories]  # fmt: skip
    print(f"\n{route}: {CLIENTS} pulls of {LAYER_MB} MiB in {wall:.1f} s, "
          f"{upstream_gets} upstream GETs, blob requests per replica {blob_requests}")  # fmt: skip
    assert sum(blob_requests) == CLIENTS
    assert sum(manifest_requests) == CLIENTS
    if route == "hashed":
        assert upstream_gets == 1
        assert sorted(blob_requests) == [0, 0, CLIENTS]  # every repository's pull, one replica
        assert sum(1 for n in fleet.replica_log_count("/manifests/latest") if n) > 1
    elif route == "one replica":
        assert upstream_gets == 1
    else:
        assert upstream_gets > 1  # one download per replica that took a request
        assert all(blob_requests)


async def test_replica_killed_mid_fill(fleet: Fleet) -> None:
    idle = lambda: not any(fills_in_flight(r) for r in fleet.replicas)  # noqa: E731
    await wait_for(idle, "earlier tests' downloads to be committed", 60)
    layer = random.Random("kill").randbytes(16 * MIB)
    digest = add_image(fleet, ["kill/app"], layer)

    def stored() -> bool:
        return any(digest.removeprefix("sha256:") in k for k in fleet.blob_keys())

    fleet.upstream.add_fault(Fault(match=digest, method="GET", rate=2 * MIB, times=1))
    base = fleet.proxies["hashed"].url
    first = asyncio.ensure_future(curl_digest(f"{base}/v2/kill/app/blobs/{digest}"))
    await wait_for(lambda: fleet.upstream.count("GET", "/blobs/" + digest) == 1, "the fill", 30)
    filling = [i for i, r in enumerate(fleet.replicas) if fills_in_flight(r)]
    assert len(filling) == 1
    victim = fleet.replicas[filling[0]]
    await asyncio.sleep(1)  # a few MiB into the download
    victim.process.popen.send_signal(signal.SIGKILL)
    victim.process.popen.wait(10)
    status, _ = await first
    assert status != 0  # the client saw the body cut short
    assert not stored()  # nothing of the blob in the bucket
    try:
        status, received = await curl_digest(f"{base}/v2/kill/app/blobs/{digest}")  # the retry
        assert (status, received) == (0, digest)
        assert fleet.upstream.count("GET", "/blobs/" + digest) == 2
        await wait_for(stored, "the retry's download to be committed", 30)
    finally:
        port = int(victim.url.rsplit(":", 1)[1])
        fleet.replicas[filling[0]] = fleet.start_replica(filling[0], port)


async def test_new_replica_serves_hits_at_once(fleet: Fleet) -> None:
    layer = random.Random("new replica").randbytes(4 * MIB)
    digest = add_image(fleet, ["scale/app"], layer)
    path = f"/v2/scale/app/blobs/{digest}"
    status, received = await curl_digest(fleet.proxies["hashed"].url + path)
    assert (status, received) == (0, digest)
    extra = fleet.start_replica(9)  # from this thread: children die with theirs
    try:
        status, received = await curl_digest(extra.url + path)
        assert (status, received) == (0, digest)
        assert fleet.upstream.count("GET", "/blobs/" + digest) == 1  # a hit from the bucket
        await wait_for(lambda: " blob hit" in extra.log(), "the hit's access-log line", 10)
    finally:
        extra.process.stop()


async def test_tag_records_are_shared_through_the_bucket(fleet: Fleet) -> None:
    first = add_image(fleet, ["tags/app"], b"layer one")
    manifest = "/v2/tags/app/manifests/latest"
    digests = []
    for replica in fleet.replicas:
        status, _ = await curl_digest(replica.url + manifest, [f"Accept: {OCI_MANIFEST}"])
        assert status == 0
        digests.append(await manifest_digest(replica.url + manifest))
    assert fleet.upstream.count(None, manifest) == 1  # one replica asked, two read its record
    assert len(set(digests)) == 1
    second = add_image(fleet, ["tags/app"], b"layer two")  # moves the tag
    assert second != first
    await asyncio.sleep(2.5)  # tag_ttl
    moved = [await manifest_digest(replica.url + manifest) for replica in fleet.replicas]
    assert len(set(moved)) == 1
    assert moved[0] != digests[0]


async def manifest_digest(url: str) -> str:
    """The digest of the manifest ``url`` answers with."""
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--fail", "-H", f"Accept: {OCI_MANIFEST}", url,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    body, _ = await proc.communicate()
    assert proc.returncode == 0
    return "sha256:" + hashlib.sha256(body).hexdigest()
