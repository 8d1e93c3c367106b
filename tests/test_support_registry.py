"""The real-upstream fixtures work: images, distribution in every auth mode, token server, logs."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from pathlib import Path

import aiohttp
import pytest

from tests.support.images import ImageSet, build_images
from tests.support.processes import free_port
from tests.support.registry import UpstreamRegistry, basic_auth_header, http_request
from tests.support.token_server import decode_jwt_claims, start_token_server

MODES = ("none", "basic", "token")
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


@pytest.fixture(params=MODES)
def registry(request: pytest.FixtureRequest) -> UpstreamRegistry:
    """Each session registry in turn."""
    found: UpstreamRegistry = request.getfixturevalue(f"registry_{request.param}")
    return found


async def _authorization(
    http: aiohttp.ClientSession, registry: UpstreamRegistry, url: str
) -> dict[str, str]:
    """Follow the registry's own 401 challenge, the way a client would."""
    async with http.get(url) as resp:
        if resp.status != 401:
            return {}
        challenge = resp.headers["WWW-Authenticate"]
    assert registry.username is not None
    assert registry.password is not None
    basic = basic_auth_header(registry.username, registry.password)
    scheme, _, params_text = challenge.partition(" ")
    if scheme == "Basic":
        return {"Authorization": basic}
    params = dict(_CHALLENGE_PARAM.findall(params_text))
    query = {"service": params["service"], "scope": params["scope"]}
    async with http.get(params["realm"], params=query, headers={"Authorization": basic}) as resp:
        assert resp.status == 200
        token = (await resp.json())["token"]
    return {"Authorization": f"Bearer {token}"}


def test_image_set_layers_match_configs(image_set: ImageSet) -> None:
    """diff_ids are the sha256 of the uncompressed layers; blob files match their digests."""
    image = image_set.image("library/tiny:docker")
    config_blob, layer = image_set.blobs_of(image.manifest)
    config = json.loads(config_blob.read())
    assert config["rootfs"]["diff_ids"] == [
        "sha256:" + hashlib.sha256(gzip.decompress(layer.read())).hexdigest()
    ]
    assert layer.digest == "sha256:" + hashlib.sha256(layer.read()).hexdigest()
    assert image_set.image("library/tiny:oci").manifest.references()[1] == layer.digest


def test_image_set_shape(image_set: ImageSet) -> None:
    """Six tagged images; indexes have amd64 and arm64/v8 children; the large layer is big."""
    assert set(image_set.images) == {
        "library/tiny:oci",
        "library/tiny:docker",
        "library/medium:latest",
        "library/large:latest",
        "library/multi:latest",
        "library/multi:docker",
    }
    for tag in ("latest", "docker"):
        multi = image_set.image(f"library/multi:{tag}")
        assert set(multi.platforms) == {"linux/amd64", "linux/arm64/v8"}
        assert [child.digest for child in image_set.children(multi)] == multi.manifest.references()
    large = image_set.large_layer()
    assert large.size >= image_set.params["large_mb"] * 1024 * 1024
    assert large.path.stat().st_size == large.size


def test_build_images_is_deterministic_and_cached(tmp_path: Path) -> None:
    """Same sizes, same digests; a second call reuses the directory."""
    first = build_images(tmp_path / "a", small_kb=1, medium_mb=1, large_mb=1)
    second = build_images(tmp_path / "b", small_kb=1, medium_mb=1, large_mb=1)
    assert {r: i.digest for r, i in first.images.items()} == {
        r: i.digest for r, i in second.images.items()
    }
    before = first.metadata_path.stat().st_mtime_ns
    build_images(tmp_path / "a", small_kb=1, medium_mb=1, large_mb=1)
    assert first.metadata_path.stat().st_mtime_ns == before


async def test_registry_serves_every_manifest(
    registry: UpstreamRegistry, image_set: ImageSet
) -> None:
    """Tags and child digests resolve to the exact bytes that were built."""
    async with aiohttp.ClientSession() as http:
        for image in image_set.images.values():
            base = f"{registry.url}/v2/{image.repository}/manifests/"
            headers = await _authorization(http, registry, base + image.tag)
            wanted = [
                (image.tag, image.manifest),
                *((c.digest, c) for c in image_set.children(image)),
            ]
            for reference, manifest in wanted:
                accept = {"Accept": manifest.media_type}
                async with http.get(base + reference, headers={**headers, **accept}) as resp:
                    assert resp.status == 200, (image.ref, reference)
                    assert resp.headers["Docker-Content-Digest"] == manifest.digest
                    assert resp.content_type == manifest.media_type
                    assert await resp.read() == manifest.data


async def test_registry_serves_large_blob_ranges(
    registry: UpstreamRegistry, image_set: ImageSet
) -> None:
    """The big layer is there at full size, and Range requests work."""
    blob = image_set.large_layer()
    url = f"{registry.url}/v2/library/large/blobs/{blob.digest}"
    async with aiohttp.ClientSession() as http:
        headers = await _authorization(http, registry, url)
        async with http.head(url, headers=headers) as resp:
            assert resp.status == 200
            assert int(resp.headers["Content-Length"]) == blob.size
        async with http.get(url, headers={**headers, "Range": "bytes=1000-1999"}) as resp:
            assert resp.status == 206
            with blob.path.open("rb") as source:
                source.seek(1000)
                assert await resp.read() == source.read(1000)


def test_basic_registry_rejects_missing_and_wrong_credentials(
    registry_basic: UpstreamRegistry,
) -> None:
    """401 with a Basic challenge without credentials or with a wrong password."""
    url = f"{registry_basic.url}/v2/library/tiny/manifests/oci"
    missing = http_request(url)
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"].startswith("Basic realm=")
    wrong = http_request(url, headers={"Authorization": basic_auth_header("testuser", "nope")})
    assert wrong.status == 401


def test_token_registry_challenge_and_anonymous_pull(
    registry_token: UpstreamRegistry, image_set: ImageSet
) -> None:
    """The challenge names realm, service and scope; an anonymous token may pull, not push."""
    image = image_set.image("library/tiny:oci")
    url = f"{registry_token.url}/v2/library/tiny/manifests/oci"
    challenge = http_request(url).headers["WWW-Authenticate"]
    assert challenge == (
        f'Bearer realm="{registry_token.token_realm}",service="registry-testbed",'
        'scope="repository:library/tiny:pull"'
    )
    token = registry_token.fetch_token(["repository:library/tiny:pull,push"])
    assert decode_jwt_claims(token)["access"] == [
        {"type": "repository", "name": "library/tiny", "actions": ["pull"]}
    ]
    bearer = {"Authorization": f"Bearer {token}"}
    pulled = http_request(url, headers={**bearer, "Accept": image.media_type})
    assert pulled.status == 200
    upload = http_request(
        f"{registry_token.url}/v2/library/tiny/blobs/uploads/", "POST", headers=bearer
    )
    assert upload.status == 401


def test_token_server_rejects_wrong_credentials(registry_token: UpstreamRegistry) -> None:
    """GET with a wrong Basic password and POST with a wrong password grant both get 401."""
    realm = registry_token.token_realm
    assert realm is not None
    mark = registry_token.token_log_mark()
    bad = {"Authorization": basic_auth_header("testuser", "wrong")}
    assert http_request(f"{realm}?service=registry-testbed", headers=bad).status == 401
    form = b"grant_type=password&username=testuser&password=wrong&service=registry-testbed"
    content_type = {"Content-Type": "application/x-www-form-urlencoded"}
    assert http_request(realm, "POST", headers=content_type, body=form).status == 401
    logged = registry_token.token_requests(since=mark)
    assert [(r["method"], r["status"]) for r in logged] == [("GET", 401), ("POST", 401)]


def test_token_server_password_and_refresh_grants(registry_token: UpstreamRegistry) -> None:
    """POST grant_type=password with access_type=offline gives a refresh token that works."""
    realm = registry_token.token_realm
    assert realm is not None
    content_type = {"Content-Type": "application/x-www-form-urlencoded"}
    scope = "scope=repository%3Alibrary%2Fmedium%3Apull%2Cpush"
    first = http_request(
        realm,
        "POST",
        headers=content_type,
        body=f"grant_type=password&username=testuser&password=testpass&access_type=offline"
        f"&service=registry-testbed&{scope}".encode(),
    )
    assert first.status == 200
    body = first.json()
    assert isinstance(body, dict)
    assert body["token"] == body["access_token"]
    refreshed = http_request(
        realm,
        "POST",
        headers=content_type,
        body=f"grant_type=refresh_token&refresh_token={body['refresh_token']}"
        f"&service=registry-testbed&{scope}".encode(),
    )
    assert refreshed.status == 200
    token = refreshed.json()["token"]  # type: ignore[index]
    claims = decode_jwt_claims(token)
    assert claims["sub"] == "testuser"
    assert claims["aud"] == "registry-testbed"
    assert claims["access"][0]["actions"] == ["pull", "push"]


def test_token_server_without_anonymous_pull(tmp_path: Path) -> None:
    """With --anonymous-pull no, an anonymous token grants nothing; the user still gets all."""
    server = start_token_server(
        tmp_path, port=free_port(), users={"testuser": "testpass"}, anonymous_pull=False
    )
    try:
        query = "service=registry-testbed&scope=repository:library/tiny:pull"
        anonymous = http_request(f"{server.realm}?{query}").json()
        assert isinstance(anonymous, dict)
        assert decode_jwt_claims(anonymous["token"])["access"] == []
        user = {"Authorization": basic_auth_header("testuser", "testpass")}
        granted = http_request(f"{server.realm}?{query}", headers=user).json()
        assert isinstance(granted, dict)
        assert decode_jwt_claims(granted["token"])["access"][0]["actions"] == ["pull"]
        assert [r["account"] for r in server.requests()] == [None, "testuser"]
    finally:
        server.stop()


def test_access_log_counts_requests_since_mark(
    registry_none: UpstreamRegistry, image_set: ImageSet
) -> None:
    """Counting by (method, path) sees exactly the requests made after the mark."""
    blob = image_set.large_layer()
    path = f"/v2/library/large/blobs/{blob.digest}"
    mark = registry_none.log_mark()
    ranged = {"Range": "bytes=0-99"}
    assert http_request(registry_none.url + path, headers=ranged).status == 206
    assert http_request(registry_none.url + path + "?ns=docker.io", "HEAD").status == 200
    counts = registry_none.count_requests(since=mark)
    assert counts == {("GET", path): 1, ("HEAD", path): 1}
    entries = registry_none.requests(since=mark)
    assert [(e.status, e.query) for e in entries] == [(206, ""), (200, "ns=docker.io")]
    assert registry_none.count("GET", path, since=registry_none.log_mark()) == 0
