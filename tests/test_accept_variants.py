"""However clients spell Accept, one tag costs at most three upstream GETs and three records.

Issue 11, item 4: 300 requests for one tag with 300 different Accept values
made 300 upstream GETs (Docker Hub's pull quota) and 300 tag records that
were never evicted.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import aiohttp

from mirror.accept import VARIANT_TYPES
from mirror.app import CACHE, METRICS
from tests.support.cache_images import content_on_disk, manifest_path, upstream_name
from tests.support.fake_upstream import FakeUpstream
from tests.support.manifest_samples import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    SCHEMA1,
    SCHEMA1_SIGNED,
)
from tests.support.mirror_app import mirror_config, run_mirror
from tests.support.small_images import minimal_manifest

REPO = "library/app"
KNOWN = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST, SCHEMA1_SIGNED, SCHEMA1]
NOISE = ["application/json", "text/html", "*/*", "application/*", "image/png", "x-evil/x"]
# What real clients send (../shared/testbed/README.md, "Observed client behaviour").
DOCKER = [OCI_MANIFEST, DOCKER_MANIFEST, DOCKER_LIST, OCI_INDEX, SCHEMA1_SIGNED, "application/json"]
CONTAINERD = [f"{DOCKER_MANIFEST}, {DOCKER_LIST}, {OCI_MANIFEST}, {OCI_INDEX}, */*"]
SKOPEO = [OCI_MANIFEST, DOCKER_MANIFEST, SCHEMA1_SIGNED, SCHEMA1, DOCKER_LIST, OCI_INDEX]


def _spelling(rng: random.Random) -> str:
    """One media type as a hostile client may write it: case, parameters, q-values."""
    media_type = rng.choice(KNOWN + NOISE)
    if rng.random() < 0.5:
        media_type = "".join(c.upper() if rng.random() < 0.3 else c for c in media_type)
    for _ in range(rng.randrange(3)):
        media_type += rng.choice(
            [";q=0.5", "; q=1", ";q=0", ';charset="utf-8"', ";level=1", "; x=y;z", ";q=0.000"]
        )
    return media_type


def hostile_accepts(count: int) -> list[list[str]]:
    """``count`` different Accept headers (as lists of lines), reproducibly."""
    rng = random.Random(11)
    seen: set[tuple[str, ...]] = set()
    headers: list[list[str]] = []
    while len(headers) < count:
        items = [_spelling(rng) for _ in range(rng.randrange(1, 9))]
        cut = rng.randrange(len(items) + 1)  # some on one line, some on lines of their own
        lines = [", ".join(items[:cut])] if cut else []
        lines += [" " * rng.randrange(2) + item for item in items[cut:]]
        if tuple(lines) not in seen:
            seen.add(tuple(lines))
            headers.append(lines)
    return headers


def tag_records(cache: Path) -> list[str]:
    return [key for key in content_on_disk(cache) if "/tags/" in key]


async def get_manifest(
    http: aiohttp.ClientSession, url: str, accept: list[str]
) -> tuple[int, str, bytes]:
    headers = [("Accept", line) for line in accept]
    async with http.get(url, headers=headers) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


async def test_300_accept_spellings_cost_three_upstream_gets_and_three_records(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    body = minimal_manifest()
    up.add_manifest(REPO, body, OCI_MANIFEST, tag="v1")
    headers = hostile_accepts(300)
    async with run_mirror(mirror_config(tmp_path, up.url)) as mirror:
        url = f"{mirror.url}/v2/{REPO}/manifests/v1"
        answers = [await get_manifest(http, url, accept) for accept in headers]

    assert up.count("GET", f"/{REPO}/manifests/v1") <= 3
    assert len(tag_records(tmp_path)) <= 3
    for accept, (status, content_type, got) in zip(headers, answers, strict=True):
        if takes_oci_manifest(accept):
            assert (status, content_type, got) == (200, OCI_MANIFEST, body), accept
        else:
            assert status == 404, (accept, got)
            assert json.loads(got)["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert sum(status == 200 for status, _, _ in answers) > 100


def takes_oci_manifest(accept: list[str]) -> bool:
    """The test's own reading of RFC 9110: named (not with q=0), by a wildcard, or nothing known."""
    named: set[str] = set()
    for item in ",".join(accept).split(","):
        media_type, *parameters = (part.strip().lower() for part in item.split(";"))
        if not any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.000") for p in parameters):
            named.add(media_type)
    return bool(named & {OCI_MANIFEST, "*/*", "application/*"}) or not named & set(KNOWN)


async def test_the_upstream_is_asked_with_one_fixed_list_per_variant(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    up.add_manifest(REPO, minimal_manifest(), OCI_MANIFEST, tag="v1")
    async with run_mirror(mirror_config(tmp_path, up.url)) as mirror:
        url = f"{mirror.url}/v2/{REPO}/manifests/v1"
        for accept in hostile_accepts(60):
            await get_manifest(http, url, accept)

    sent = {tuple(r.accept) for r in up.requests if r.path.endswith("/manifests/v1")}
    assert sent <= set(VARIANT_TYPES.values())


async def test_real_clients_share_one_record_and_one_upstream_get(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode()
    up.add_manifest(REPO, index, OCI_INDEX, tag="v1")
    clients = [DOCKER, list(reversed(DOCKER)), CONTAINERD, SKOPEO, [], ["*/*"]]
    async with run_mirror(mirror_config(tmp_path, up.url)) as mirror:
        url = f"{mirror.url}/v2/{REPO}/manifests/v1"
        answers = [await get_manifest(http, url, accept) for accept in clients]

    assert answers == [(200, OCI_INDEX, index)] * len(clients)
    assert up.count("GET", f"/{REPO}/manifests/v1") == 1
    assert len(tag_records(tmp_path)) == 1


async def test_a_client_never_gets_a_type_it_did_not_name(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """As distribution answers: 404 MANIFEST_UNKNOWN, no OCI manifest to a Docker-only client."""
    up.add_manifest(REPO, minimal_manifest(), OCI_MANIFEST, tag="v1")
    async with run_mirror(mirror_config(tmp_path, up.url)) as mirror:
        url = f"{mirror.url}/v2/{REPO}/manifests/v1"
        docker_only = await get_manifest(http, url, [DOCKER_MANIFEST])
        refused = await get_manifest(http, url, [f"{OCI_MANIFEST};q=0, {DOCKER_MANIFEST}"])
        wildcard = await get_manifest(http, url, [f"{DOCKER_MANIFEST}, */*"])

    assert docker_only[0] == refused[0] == 404
    assert json.loads(docker_only[2])["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert wildcard[:2] == (200, OCI_MANIFEST)


async def test_tag_records_count_toward_the_cache_budget(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    for number in range(60):
        up.add_manifest(REPO, minimal_manifest(str(number)), OCI_MANIFEST, tag=f"t{number}")
    budget = {"max_size": 6000, "high_watermark": 0.9, "low_watermark": 0.6}
    async with run_mirror(mirror_config(tmp_path, up.url, cache=budget)) as mirror:
        for number in range(60):
            status, _, _ = await get_manifest(
                http, f"{mirror.url}/v2/{REPO}/manifests/t{number}", DOCKER
            )
            assert status == 200
        cache = mirror.app[CACHE]
        await cache.evictor.settled()
        on_disk = content_on_disk(tmp_path)
        metrics = mirror.app[METRICS].render().decode()

    assert sum(on_disk.values()) == cache.storage.index.size <= 6000
    assert 0 < len(tag_records(tmp_path)) < 20
    assert 'mirror_cache_evictions_total{kind="tag"}' in metrics


async def test_records_written_by_older_versions_are_still_read_or_ignored(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Older versions named records by a hash of the whole Accept set; offline they still count."""
    body = minimal_manifest("old")
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    upstream = upstream_name(up)
    stored = manifest_path(tmp_path, upstream, digest)
    stored.parent.mkdir(parents=True)
    stored.write_bytes(OCI_MANIFEST.encode() + b"\n" + body)
    tags = tmp_path / upstream / "tags" / REPO
    record = {"digest": digest, "media_type": OCI_MANIFEST, "size": len(body), "checked": 1.0}
    (tags / "old").mkdir(parents=True)
    (tags / "old" / "0123456789abcdef").write_text(json.dumps(record))
    broken = {**record, "media_type": "text/html"}
    (tags / "broken").mkdir(parents=True)
    (tags / "broken" / "fedcba9876543210").write_text(json.dumps(broken))
    async with run_mirror(mirror_config(tmp_path, up.url, offline=True)) as mirror:
        old = await get_manifest(http, f"{mirror.url}/v2/{REPO}/manifests/old", DOCKER)
        ignored = await get_manifest(http, f"{mirror.url}/v2/{REPO}/manifests/broken", DOCKER)

    assert old == (200, OCI_MANIFEST, body)
    assert ignored[0] == 404
    assert up.requests == []
