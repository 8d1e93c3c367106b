"""Malformed requests get a 4xx OCI error document, never a 500, never an upstream request."""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from tests.support.fake_upstream import FakeUpstream
from tests.support.mirror_app import mirror_config, run_mirror

GOOD_DIGEST = "sha256:" + "a" * 64
RANGE_DATA = bytes(range(256)) * 8

# (method, path, headers, expected status, expected OCI code)
CASES: list[tuple[str, str, dict[str, str], int, str]] = [
    ("GET", "/v2/UPPER/manifests/latest", {}, 400, "NAME_INVALID"),
    ("GET", "/v2/a..b/manifests/latest", {}, 400, "NAME_INVALID"),
    ("GET", "/v2/-lead/manifests/latest", {}, 400, "NAME_INVALID"),
    ("GET", "/v2/a//b/manifests/latest", {}, 400, "NAME_INVALID"),
    ("GET", "/v2/" + "a" * 300 + "/manifests/latest", {}, 400, "NAME_INVALID"),
    # A reference that is no valid tag names no manifest: 404, as the distribution spec allows.
    ("GET", "/v2/library/tiny/manifests/" + "t" * 129, {}, 404, "MANIFEST_UNKNOWN"),
    ("GET", "/v2/library/tiny/manifests/.hidden", {}, 404, "MANIFEST_UNKNOWN"),
    ("GET", "/v2/library/tiny/manifests/.INVALID_MANIFEST_NAME", {}, 404, "MANIFEST_UNKNOWN"),
    ("GET", "/v2/library/tiny/manifests/sha256:abc", {}, 400, "DIGEST_INVALID"),
    ("GET", "/v2/library/tiny/manifests/md5:" + "a" * 32, {}, 400, "DIGEST_INVALID"),
    ("GET", "/v2/library/tiny/blobs/sha256:" + "A" * 64, {}, 400, "DIGEST_INVALID"),
    ("GET", "/v2/library/tiny/blobs/sha256:" + "g" * 64, {}, 400, "DIGEST_INVALID"),
    ("GET", "/v2/library/tiny/blobs/sha256:" + "a" * 63, {}, 400, "DIGEST_INVALID"),
    ("GET", "/v2/library/tiny/blobs/sha512:" + "a" * 64, {}, 400, "DIGEST_INVALID"),
    ("GET", "/v2/library/tiny/blobs/notadigest", {}, 400, "DIGEST_INVALID"),
    # Encoded slashes are decoded before routing, so these are bad names.
    ("GET", "/v2/library/tiny/blobs/sha256:..%2F..%2Fetc%2Fpasswd", {}, 400, "NAME_INVALID"),
    # Dot segments are resolved before routing: this is /blobs/..., no API path.
    ("GET", "/v2/library/%2e%2e/%2e%2e/blobs/" + GOOD_DIGEST, {}, 404, "NAME_UNKNOWN"),
    ("GET", "/v2/..%2F..%2Fetc/manifests/latest", {}, 400, "NAME_INVALID"),
    ("GET", "/v2/library/tiny/tags/list?n=-1", {}, 400, "PAGINATION_NUMBER_INVALID"),
    ("GET", "/v2/library/tiny/tags/list?n=abc", {}, 400, "PAGINATION_NUMBER_INVALID"),
    ("GET", "/v2/library/tiny/referrers/sha256:zz", {}, 400, "DIGEST_INVALID"),
    ("GET", "/v2/library/tiny/something/else", {}, 400, "NAME_INVALID"),
    ("GET", "/v2/_catalog", {}, 405, "UNSUPPORTED"),
    ("PUT", "/v2/library/tiny/manifests/latest", {}, 405, "UNSUPPORTED"),
    ("DELETE", "/v2/library/tiny/manifests/" + GOOD_DIGEST, {}, 405, "UNSUPPORTED"),
    ("POST", "/v2/library/tiny/blobs/uploads/", {}, 405, "UNSUPPORTED"),
    ("PATCH", "/v2/library/tiny/blobs/uploads/some-uuid", {}, 405, "UNSUPPORTED"),
    ("GET", "/v2/library/tiny/blobs/uploads/some-uuid", {}, 405, "UNSUPPORTED"),
    ("POST", "/v2/", {}, 405, "UNSUPPORTED"),
    ("GET", "/v2/ghcr.io/org/image/manifests/latest", {}, 403, "DENIED"),
    ("GET", "/v2/library/tiny/manifests/latest?ns=evil.example.com", {}, 403, "DENIED"),
    ("GET", "/v2/library/tiny/manifests/latest?ns=127.0.0.1:1", {}, 403, "DENIED"),
    ("GET", "/nothing-here", {}, 404, "NAME_UNKNOWN"),
]


@pytest.mark.parametrize(("method", "path", "headers", "status", "code"), CASES)
async def test_bad_request_gets_oci_error(
    tmp_path: Path, method: str, path: str, headers: dict[str, str], status: int, code: str
) -> None:
    async with FakeUpstream() as upstream:
        config = mirror_config(tmp_path, upstream.url)
        async with run_mirror(config) as mirror, aiohttp.ClientSession() as session:
            url = mirror.url + path
            async with session.request(method, url, headers=headers) as resp:
                assert resp.status == status, await resp.text()
                document = await resp.json()
        assert upstream.requests == [], "a malformed request must not reach the upstream"
    assert document["errors"][0]["code"] == code
    assert document["errors"][0]["message"]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_a_reference_that_is_no_tag_is_an_unknown_manifest(
    tmp_path: Path, method: str
) -> None:
    """The OCI conformance suite's "GET/HEAD nonexistent manifest should return 404"."""
    async with FakeUpstream() as upstream:
        async with run_mirror(mirror_config(tmp_path, upstream.url)) as mirror:
            url = f"{mirror.url}/v2/library/tiny/manifests/.INVALID_MANIFEST_NAME"
            async with aiohttp.ClientSession() as session, session.request(method, url) as resp:
                status = resp.status
        assert upstream.requests == []
    assert status == 404


@pytest.mark.parametrize(
    "range_header",
    ["bytes=abc", "bytes=5-2", "items=0-1", "bytes=0-1,4-5", "bytes=", "bytes=-0", "bytes=999999-"],
)
async def test_odd_range_headers_never_fail_badly(tmp_path: Path, range_header: str) -> None:
    status, headers, body = await get_cached_range(tmp_path, range_header)
    assert status in (200, 206, 416), body
    if status == 200:
        assert body == RANGE_DATA
    if status == 416:
        assert headers["Content-Range"] == f"bytes */{len(RANGE_DATA)}"


async def get_cached_range(tmp_path: Path, range_header: str) -> tuple[int, dict[str, str], bytes]:
    """Cache a 2 KiB blob, then GET it with ``Range: range_header``: status, headers, body."""
    async with FakeUpstream() as upstream:
        digest = upstream.add_blob(RANGE_DATA)
        config = mirror_config(tmp_path, upstream.url)
        async with run_mirror(config) as mirror, aiohttp.ClientSession() as session:
            url = f"{mirror.url}/v2/library/tiny/blobs/{digest}"
            async with session.get(url) as resp:  # cache it first
                assert await resp.read() == RANGE_DATA
            async with session.get(url, headers={"Range": range_header}) as resp:
                return resp.status, dict(resp.headers), await resp.read()


async def test_library_prefix_only_for_docker_hub(tmp_path: Path) -> None:
    """One-component names stay as they are for registries other than Docker Hub."""
    async with FakeUpstream() as upstream:
        media_type = "application/vnd.oci.image.index.v1+json"
        body = b'{"schemaVersion":2,"mediaType":"%s","manifests":[]}' % media_type.encode()
        upstream.add_manifest("alpine", body, media_type, tag="3")
        config = mirror_config(tmp_path, upstream.url)
        async with run_mirror(config) as mirror, aiohttp.ClientSession() as session:
            async with session.get(f"{mirror.url}/v2/alpine/manifests/3") as resp:
                assert resp.status == 200
                assert await resp.read() == body
        assert upstream.count("GET", "/v2/alpine/manifests/3") == 1


@pytest.mark.parametrize(
    ("range_header", "status", "span"),
    [
        # Python refuses int() of more than 4,300 digits: these were 500s with a traceback.
        ("bytes=" + "9" * 5000 + "-", 416, None),
        ("bytes=0-" + "9" * 5000, 206, (0, 2048)),
        ("bytes=-" + "9" * 5000, 206, (0, 2048)),
        ("bytes=" + "0" * 3000 + "1-" + "0" * 3000 + "2", 206, (1, 3)),
        ("bytes=18446744073709551616-", 416, None),
        ("bytes=2047-18446744073709551616", 206, (2047, 2048)),
    ],
    ids=["huge-start", "huge-end", "huge-suffix", "leading-zeros", "2^64-start", "2^64-end"],
)
async def test_crafted_range_numbers_are_answered(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    range_header: str,
    status: int,
    span: tuple[int, int] | None,
) -> None:
    got, _, body = await get_cached_range(tmp_path, range_header)
    assert got == status, body
    if span is not None:
        assert body == RANGE_DATA[span[0] : span[1]]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


@pytest.mark.parametrize(
    "n",
    ["%C2%B2", "%D9%A3", "%EF%BC%91", "1_0", "+5", "%205", "0x10", "1e3", "9" * 5000, "10001"],
    ids=[
        "superscript",
        "arabic",
        "fullwidth",
        "underscore",
        "plus",
        "space",
        "hex",
        "exp",
        "5000-digits",
        "too-many",
    ],
)
async def test_crafted_page_sizes_are_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, n: str
) -> None:
    """Only ASCII digits: '²'.isdigit() is true, int('٣') is 3, int('1_0') is 10."""
    async with FakeUpstream() as upstream:
        config = mirror_config(tmp_path, upstream.url)
        async with run_mirror(config) as mirror, aiohttp.ClientSession() as session:
            url = URL(f"{mirror.url}/v2/library/tiny/tags/list?n={n}", encoded=True)
            async with session.get(url) as resp:
                assert resp.status == 400, await resp.text()
                document = await resp.json()
        assert upstream.requests == []
    assert document["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
