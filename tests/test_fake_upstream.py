"""Tests for the fake upstream registry used by the mirror's fault tests."""

from __future__ import annotations

import asyncio
import hashlib
import re
import ssl
import time
from pathlib import Path

import aiohttp
import pytest

from tests.support.fake_upstream import SERVICE, FakeUpstream, Fault
from tests.support.pki import PrivateCA

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
BLOB = bytes(range(256)) * 40  # 10240 bytes


async def test_ping_and_connection_count(up: FakeUpstream, http: aiohttp.ClientSession) -> None:
    assert up.connections == 0
    async with http.get(up.url + "/v2/") as resp:
        assert resp.status == 200
        assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    async with http.get(up.url + "/v2/") as resp:  # keep-alive: same connection
        assert resp.status == 200
    assert up.connections == 1
    assert up.requests[0].remote == up.requests[1].remote
    # A bare TCP connect that sends nothing is still counted.
    _, writer = await asyncio.open_connection("127.0.0.1", up.port)
    writer.close()
    await writer.wait_closed()
    await asyncio.sleep(0.05)
    assert up.connections == 2
    assert up.count("GET", "/v2/") == 2


async def test_manifest_get_head_and_accept_recording(
    up: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    body = b'{"schemaVersion":2}'
    digest = up.add_manifest("library/alpine", body, OCI_MANIFEST, tag="3")
    up.manifest_headers = {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "97;w=21600"}
    url = up.url + "/v2/library/alpine/manifests/3"
    accept = [OCI_MANIFEST, f"{OCI_INDEX}, application/json"]
    async with http.get(url, headers=[("Accept", a) for a in accept]) as resp:
        assert resp.status == 200
        assert await resp.read() == body
        assert resp.headers["Content-Type"] == OCI_MANIFEST
        assert resp.headers["Docker-Content-Digest"] == digest
        assert resp.headers["ratelimit-remaining"] == "97;w=21600"
    async with http.head(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(len(body))
        assert resp.headers["Docker-Content-Digest"] == digest
        assert resp.headers["ratelimit-limit"] == "100;w=21600"
        assert await resp.read() == b""
    assert up.requests[0].accept == accept
    async with http.get(up.url + f"/v2/library/alpine/manifests/{digest}") as resp:
        assert await resp.read() == body
    async with http.get(up.url + "/v2/library/alpine/manifests/nope") as resp:
        assert resp.status == 404
        assert (await resp.json())["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    async with http.get(up.url + f"/v2/other/manifests/{digest}") as resp:
        assert resp.status == 404


async def test_strict_accept(up: FakeUpstream, http: aiohttp.ClientSession) -> None:
    up.add_manifest("r", b"{}", OCI_INDEX, tag="t")
    up.strict_accept = True
    async with http.get(up.url + "/v2/r/manifests/t", headers={"Accept": OCI_MANIFEST}) as resp:
        assert resp.status == 404
    headers = {"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"}
    async with http.get(up.url + "/v2/r/manifests/t", headers=headers) as resp:
        assert resp.status == 200


async def test_tag_moves(up: FakeUpstream, http: aiohttp.ClientSession) -> None:
    first = up.add_manifest("r", b'{"v":1}', OCI_MANIFEST, tag="latest")
    second = up.add_manifest("r", b'{"v":2}', OCI_MANIFEST)
    url = up.url + "/v2/r/manifests/latest"
    async with http.head(url) as resp:
        assert resp.headers["Docker-Content-Digest"] == first
    up.set_tag("r", "latest", second)
    async with http.get(url) as resp:
        assert resp.headers["Docker-Content-Digest"] == second
        assert await resp.read() == b'{"v":2}'
    up.delete_tag("r", "latest")
    async with http.head(url) as resp:
        assert resp.status == 404


async def test_blobs_ranges_and_repositories(up: FakeUpstream, http: aiohttp.ClientSession) -> None:
    digest = up.add_blob(BLOB)
    assert digest == "sha256:" + hashlib.sha256(BLOB).hexdigest()
    private = up.add_blob(b"private", repository="a/b")
    async with http.get(up.url + f"/v2/any/repo/blobs/{digest}") as resp:
        assert resp.status == 200
        assert await resp.read() == BLOB
        assert resp.headers["Docker-Content-Digest"] == digest
    async with http.head(up.url + f"/v2/x/blobs/{digest}") as resp:
        assert resp.headers["Content-Length"] == str(len(BLOB))
    for rng, expect, content_range in [
        ("bytes=10-19", BLOB[10:20], f"bytes 10-19/{len(BLOB)}"),
        ("bytes=10000-", BLOB[10000:], f"bytes 10000-10239/{len(BLOB)}"),
        ("bytes=-5", BLOB[-5:], f"bytes 10235-10239/{len(BLOB)}"),
    ]:
        async with http.get(up.url + f"/v2/x/blobs/{digest}", headers={"Range": rng}) as resp:
            assert resp.status == 206
            assert resp.headers["Content-Range"] == content_range
            assert await resp.read() == expect
    async with http.get(up.url + f"/v2/x/blobs/{digest}", headers={"Range": "bytes=99999-"}) as r:
        assert r.status == 416
        assert r.headers["Content-Range"] == f"bytes */{len(BLOB)}"
    async with http.get(up.url + f"/v2/a/b/blobs/{private}") as resp:
        assert await resp.read() == b"private"
    async with http.get(up.url + f"/v2/c/blobs/{private}") as resp:
        assert resp.status == 404
        assert (await resp.json())["errors"][0]["code"] == "BLOB_UNKNOWN"


async def test_tags_pagination(up: FakeUpstream, http: aiohttp.ClientSession) -> None:
    for tag in ["c", "a", "e", "b", "d"]:
        up.add_manifest("lib/x", tag.encode(), OCI_MANIFEST, tag=tag)
    seen: list[str] = []
    path = "/v2/lib/x/tags/list?n=2"
    while path:
        async with http.get(up.url + path) as resp:
            seen += (await resp.json())["tags"]
            link = resp.headers.get("Link")
        path = re.fullmatch(r'<(.+)>; rel="next"', link)[1] if link else ""  # type: ignore[index]
    assert seen == ["a", "b", "c", "d", "e"]
    assert up.count("GET", "/tags/list") == 3
    async with http.get(up.url + "/v2/lib/x/tags/list") as resp:
        assert (await resp.json()) == {"name": "lib/x", "tags": seen}
    async with http.get(up.url + "/v2/nope/tags/list") as resp:
        assert (await resp.json())["errors"][0]["code"] == "NAME_UNKNOWN"


async def test_status_faults_times_and_method(
    up: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    digest = up.add_blob(BLOB)
    fault = up.add_fault(Fault(digest, method="GET", status=503, times=1))
    url = up.url + f"/v2/r/blobs/{digest}"
    async with http.head(url) as resp:  # HEAD is not matched, does not use up the fault
        assert resp.status == 200
    async with http.get(url) as resp:
        assert resp.status == 503
        assert (await resp.json())["errors"][0]["code"] == "UNAVAILABLE"
    async with http.get(url) as resp:
        assert resp.status == 200
        assert await resp.read() == BLOB
    assert fault.hits == 1
    up.add_fault(Fault(status=429, retry_after=7, times=1))  # global
    async with http.get(url) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "7"
        assert (await resp.json())["errors"][0]["code"] == "TOOMANYREQUESTS"
    up.add_fault(Fault(re.compile(r"/manifests/"), status=401))
    async with http.get(up.url + "/v2/r/manifests/x") as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == 'Basic realm="fake"'
        assert (await resp.json())["errors"][0]["code"] == "UNAUTHORIZED"
    async with http.get(up.url + "/v2/") as resp:  # global faults skip the ping
        assert resp.status == 200


async def test_first_byte_delay_rate_and_chunk_delay(
    up: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    digest = up.add_blob(BLOB)
    url = up.url + f"/v2/r/blobs/{digest}"
    up.add_fault(Fault(digest, first_byte_delay=0.3, times=1))
    start = time.monotonic()
    async with http.get(url) as resp:
        assert time.monotonic() - start >= 0.3
        assert await resp.read() == BLOB
    up.add_fault(Fault(digest, rate=len(BLOB) * 2, times=1))  # ~0.5 s
    start = time.monotonic()
    async with http.get(url) as resp:
        assert await resp.read() == BLOB
    assert 0.4 <= time.monotonic() - start < 2
    up.add_fault(Fault(digest, chunk_size=4096, chunk_delay=0.2, times=1))  # 3 chunks, 2 gaps
    start = time.monotonic()
    async with http.get(url) as resp:
        assert await resp.read() == BLOB
    assert time.monotonic() - start >= 0.4


async def test_cut_after_is_a_premature_eof(up: FakeUpstream, http: aiohttp.ClientSession) -> None:
    digest = up.add_blob(BLOB)
    up.add_fault(Fault(digest, cut_after=1000, times=1))
    received = bytearray()
    async with http.get(up.url + f"/v2/r/blobs/{digest}") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(len(BLOB))

        async def drain() -> None:
            async for chunk in resp.content.iter_any():
                received.extend(chunk)

        with pytest.raises(aiohttp.ClientPayloadError):
            await drain()
    # The client may drop bytes buffered before the EOF; check the wire below.
    assert len(received) <= 1000
    async with http.get(up.url + f"/v2/r/blobs/{digest}") as resp:  # times=1: healthy again
        assert await resp.read() == BLOB
    assert up.connections == 2


async def test_cut_after_sends_exact_bytes_then_eof(up: FakeUpstream) -> None:
    digest = up.add_blob(BLOB)
    up.add_fault(Fault(digest, cut_after=1000))
    reader, writer = await asyncio.open_connection("127.0.0.1", up.port)
    writer.write(f"GET /v2/r/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    raw = await reader.read(-1)  # until EOF
    writer.close()
    await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert f"Content-Length: {len(BLOB)}".encode() in head
    assert body == BLOB[:1000]


async def test_corrupt_keeps_length_and_digest(
    up: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    digest = up.add_blob(BLOB)
    up.add_fault(Fault(digest, corrupt=True))
    async with http.get(up.url + f"/v2/r/blobs/{digest}") as resp:
        data = await resp.read()
        assert resp.headers["Docker-Content-Digest"] == digest
    assert len(data) == len(BLOB)
    assert data != BLOB
    assert "sha256:" + hashlib.sha256(data).hexdigest() != digest


async def test_stall_hits_client_timeout_and_stop_is_prompt(http: aiohttp.ClientSession) -> None:
    async with FakeUpstream() as up:
        digest = up.add_blob(BLOB)
        up.add_fault(Fault(digest, stall_after=100))
        timeout = aiohttp.ClientTimeout(sock_read=0.3)
        async with http.get(up.url + f"/v2/r/blobs/{digest}", timeout=timeout) as resp:
            assert await resp.content.readexactly(100) == BLOB[:100]
            with pytest.raises(asyncio.TimeoutError):
                await resp.read()
        # A second stalled response and a huge first-byte delay, left pending.
        up.add_fault(Fault(re.compile("/manifests/"), first_byte_delay=3600))
        pending = [
            asyncio.create_task(http.get(up.url + f"/v2/r/blobs/{digest}")),
            asyncio.create_task(http.get(up.url + "/v2/r/manifests/x")),
        ]
        await asyncio.sleep(0.2)
        start = time.monotonic()
    assert time.monotonic() - start < 1.0
    for task in pending:
        try:
            resp = await task
        except aiohttp.ClientError:
            continue
        with pytest.raises(aiohttp.ClientError):
            await resp.read()
        resp.release()


async def test_basic_auth() -> None:
    async with FakeUpstream(auth="basic") as up, aiohttp.ClientSession() as http:
        async with http.get(up.url + "/v2/") as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"] == 'Basic realm="fake"'
        auth = {"Authorization": aiohttp.encode_basic_auth("user", "pass")}
        async with http.get(up.url + "/v2/", headers=auth) as resp:
            assert resp.status == 200


async def test_token_flow() -> None:
    async with (
        FakeUpstream(auth="token", token_expires_in=60) as up,
        aiohttp.ClientSession() as http,
    ):
        url = up.url + "/v2/library/busybox/manifests/latest"
        up.add_manifest("library/busybox", b"{}", OCI_MANIFEST, tag="latest")
        async with http.get(url) as resp:
            assert resp.status == 401
            challenge = resp.headers["WWW-Authenticate"]
        assert challenge == (
            f'Bearer realm="{up.url}/token",service="{SERVICE}",'
            'scope="repository:library/busybox:pull"'
        )
        params = {"service": SERVICE, "scope": "repository:library/busybox:pull"}
        async with http.get(up.url + "/token", params=params) as resp:
            doc = await resp.json()
        assert doc["expires_in"] == 60
        bearer = {"Authorization": f"Bearer {doc['token']}"}
        async with http.get(url, headers=bearer) as resp:
            assert resp.status == 200
        # The token is scoped to the repository it was asked for.
        other = up.url + "/v2/library/other/manifests/latest"
        async with http.get(other, headers=bearer) as resp:
            assert resp.status == 401
            assert 'error="insufficient_scope"' in resp.headers["WWW-Authenticate"]
        up.expire_tokens()
        async with http.get(url, headers=bearer) as resp:
            assert resp.status == 401
            assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
        up.token_expires_in = 0  # expired on issue: server-side expiry is enforced
        async with http.get(up.url + "/token", params=params) as resp:
            doc = await resp.json()
        async with http.get(url, headers={"Authorization": f"Bearer {doc['token']}"}) as resp:
            assert resp.status == 401
        bad = {"Authorization": aiohttp.encode_basic_auth("user", "wrong")}
        async with http.get(up.url + "/token", params=params, headers=bad) as resp:
            assert resp.status == 401
        good = {"Authorization": aiohttp.encode_basic_auth("user", "pass")}
        up.token_expires_in = None
        async with http.get(up.url + "/token", params=params, headers=good) as resp:
            assert "expires_in" not in await resp.json()
        up.anonymous_tokens = False
        async with http.get(up.url + "/token", params=params) as resp:
            assert resp.status == 401
        assert up.token_requests == 5


async def test_redirect_to_cdn_records_authorization(http: aiohttp.ClientSession) -> None:
    async with FakeUpstream(auth="basic") as up:
        digest = up.add_blob(BLOB)
        up.blob_redirect = up.cdn_url
        auth = {"Authorization": aiohttp.encode_basic_auth("user", "pass")}
        url = up.url + f"/v2/r/blobs/{digest}"
        async with http.get(url, headers=auth, allow_redirects=False) as resp:
            assert resp.status == 307
            assert resp.headers["Location"].startswith(f"{up.cdn_url}/cdn/{digest}?")
        async with http.get(url, headers=auth) as resp:
            assert await resp.read() == BLOB
        # A client that (wrongly) forwards credentials to the CDN is visible.
        cdn_url = resp.url
        async with http.get(cdn_url, headers=auth) as resp:
            assert resp.status == 200
        assert [r.authorization for r in up.cdn_requests] == [None, auth["Authorization"]]
        assert up.requests[-1].cdn
        assert up.cdn_connections >= 1
        # Body faults match the digest, so they hit the CDN response, not the 307.
        up.add_fault(Fault(digest, cut_after=10, times=1))
        async with http.get(url, headers=auth) as resp:
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
        assert up.cdn_requests[-1].method == "GET"


async def test_redirect_to_another_instance(http: aiohttp.ClientSession) -> None:
    async with FakeUpstream() as up, FakeUpstream(cdn_host="localhost") as cdn:
        digest = up.add_blob(BLOB)
        cdn.add_blob(BLOB)
        up.blob_redirect = cdn.cdn_url
        assert cdn.cdn_url.startswith("http://localhost:")
        async with http.get(up.url + f"/v2/r/blobs/{digest}") as resp:
            assert await resp.read() == BLOB
        assert len(cdn.cdn_requests) == 1
        assert cdn.cdn_requests[0].query["sig"]


async def test_https_listeners(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    ca = PrivateCA.create(tmp_path / "pki")
    context = ca.issue_server("127.0.0.1").server_context(tmp_path / "up")
    trusting = ssl.create_default_context(cafile=ca.root_path)
    async with FakeUpstream(ssl_context=context) as up:
        digest = up.add_blob(BLOB)
        up.blob_redirect = up.cdn_url
        assert up.url == f"https://{up.host}"
        assert up.cdn_url.startswith("https://127.0.0.1:")
        async with http.get(up.url + f"/v2/r/blobs/{digest}", ssl=trusting) as resp:
            assert await resp.read() == BLOB
        assert (up.connections, up.cdn_connections) == (1, 1)
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await http.get(up.url + "/v2/")  # the system's CAs do not vouch for it
