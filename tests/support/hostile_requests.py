"""A table of malformed and hostile requests, as raw bytes, for tests/test_hostile_input.py.

Each :class:`Case` is the exact bytes a client sends and the statuses the
mirror may answer with (``None``: any status below 500). The table is built
against a :class:`Bed`: the hosts and ports of decoy listeners that no request
may make the mirror dial, the cached blob Range requests are made against, and
the names of the configured upstreams.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass

DENIED = frozenset({403})
BAD = frozenset({400})
# A name that is no repository, a path that is no API endpoint, a reference that is neither.
REFUSED = frozenset({400, 403, 404, 405})
RANGE_OK = frozenset({200, 206, 416})
HEX = "ab" * 32


@dataclass(frozen=True)
class Case:
    """One request: a short name, the bytes, and what the mirror may answer."""

    name: str
    data: bytes
    statuses: frozenset[int] | None = None  # None: any status below 500
    head: bool = False  # the answer has no body


@dataclass(frozen=True)
class Bed:
    """What the table is built against."""

    decoys: tuple[tuple[str, int], ...]  # (host, port) listeners that must see no connection
    cached_blob: str  # a digest the mirror holds (and the fake upstream serves)
    cold_blob: str  # a digest the fake upstream serves that the mirror has not cached yet
    repository: str  # a repository the fake upstream knows

    def decoy(self, index: int) -> str:
        """``host:port`` of one decoy, IPv6 hosts in brackets."""
        host, port = self.decoys[index % len(self.decoys)]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def request(
    target: str | bytes,
    *,
    method: bytes = b"GET",
    headers: tuple[tuple[bytes, bytes], ...] = (),
    version: bytes = b"HTTP/1.1",
    host: bytes | None = b"mirror.example",
    body: bytes = b"",
    close: bool = True,
) -> bytes:
    """A request with CRLF line ends, ``Host`` and (unless told) ``Connection: close``."""
    raw_target = target.encode("latin-1") if isinstance(target, str) else target
    lines = [method + b" " + raw_target + b" " + version]
    if host is not None:
        lines.append(b"Host: " + host)
    lines += [name + b": " + value for name, value in headers]
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def build_cases(bed: Bed) -> list[Case]:
    """The whole table."""
    cases = [
        *_framing(),
        *_request_lines(bed),
        *_headers(bed),
        *_traversal(),
        *_names_and_references(),
        *_ranges(bed),
        *_queries(),
        *_hosts(bed),
        *_accept(),
        *_authorization(bed),
        *_token_requests(),
    ]
    names = [case.name for case in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases


def _framing() -> Iterator[Case]:
    """Request smuggling shapes: aiohttp's parser must refuse them, with a plain 400."""
    smuggled = b"GET /v2/_catalog HTTP/1.1\r\nHost: x\r\n\r\n"
    chunked = ((b"Transfer-Encoding", b"chunked"),)
    for name, headers, body in [
        ("cl-and-te", ((b"Content-Length", b"4"), *chunked), b"0\r\n\r\n" + smuggled),
        ("te-and-cl", (*chunked, (b"Content-Length", b"40")), b"0\r\n\r\n" + smuggled),
        ("two-different-cl", ((b"Content-Length", b"5"), (b"Content-Length", b"6")), b"hello!"),
        ("two-equal-cl", ((b"Content-Length", b"5"), (b"Content-Length", b"5")), b"hello"),
        ("cl-list", ((b"Content-Length", b"5, 5"),), b"hello"),
        ("cl-plus", ((b"Content-Length", b"+5"),), b"hello"),
        ("cl-negative", ((b"Content-Length", b"-1"),), b""),
        ("cl-hex", ((b"Content-Length", b"0x5"),), b"hello"),
        ("cl-space-inside", ((b"Content-Length", b"1 0"),), b"0123456789"),
        ("cl-superscript", ((b"Content-Length", "\u00b2".encode()),), b"hi"),
        ("cl-5000-digits", ((b"Content-Length", b"9" * 5000),), b""),
        ("cl-empty", ((b"Content-Length", b""),), b""),
        ("te-twice", (*chunked, *chunked), b"0\r\n\r\n"),
        ("te-chunked-chunked", ((b"Transfer-Encoding", b"chunked, chunked"),), b"0\r\n\r\n"),
        ("te-chunked-not-last", ((b"Transfer-Encoding", b"chunked, gzip"),), b"0\r\n\r\n"),
        ("te-identity", ((b"Transfer-Encoding", b"identity"),), b""),
        ("te-gzip-chunked", ((b"Transfer-Encoding", b"gzip, chunked"),), b"0\r\n\r\n"),
        ("te-xchunked", ((b"Transfer-Encoding", b"xchunked"),), b"0\r\n\r\n"),
        ("te-vertical-tab", ((b"Transfer-Encoding", b"chunked\x0b"),), b"0\r\n\r\n"),
        ("te-leading-space-name", ((b" Transfer-Encoding", b"chunked"),), b"0\r\n\r\n"),
        ("te-space-before-colon", ((b"Transfer-Encoding ", b"chunked"),), b"0\r\n\r\n"),
        ("chunk-size-not-hex", chunked, b"zz\r\nhello\r\n0\r\n\r\n"),
        ("chunk-size-negative", chunked, b"-1\r\nhello\r\n0\r\n\r\n"),
        ("chunk-size-0x", chunked, b"0x5\r\nhello\r\n0\r\n\r\n"),
        ("chunk-size-5000-digits", chunked, b"f" * 5000 + b"\r\nhello\r\n0\r\n\r\n"),
        ("chunk-size-overflow", chunked, b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
        ("chunk-ext-control", chunked, b"5;a=\x01\r\nhello\r\n0\r\n\r\n"),
        ("chunk-no-crlf-after-data", chunked, b"5\r\nhelloXX0\r\n\r\n"),
        ("chunk-lf-only", chunked, b"5\nhello\n0\n\n"),
        ("chunk-bare-cr", chunked, b"5\rhello\r0\r\r"),
        ("chunk-trailer-cl", chunked, b"0\r\nContent-Length: 5\r\n\r\n"),
        ("chunk-smuggled-request", chunked, b"0\r\n\r\n" + smuggled),
    ]:
        target = b"/v2/library/tiny/manifests/latest"
        yield Case(f"framing-{name}", request(target, headers=headers, body=body))
    # Pipelined: a good request, then a smuggled one; each answered on its own, nothing 5xx.
    two = request(b"/v2/", close=False) + request(b"/v2/_catalog")
    yield Case("framing-pipelined", two)


def _request_lines(bed: Bed) -> Iterator[Case]:
    decoy, v6 = bed.decoy(0), bed.decoy(3)
    for name, line in [
        ("absolute-form", f"GET http://{decoy}/v2/ HTTP/1.1"),
        ("absolute-form-manifest",
         f"GET http://{decoy}/v2/library/tiny/manifests/latest HTTP/1.1"),
        ("absolute-form-userinfo",
         f"GET http://user:pw@{bed.decoy(1)}/v2/library/tiny/manifests/latest HTTP/1.1"),
        ("absolute-form-ipv6", f"GET http://{v6}/v2/library/tiny/manifests/latest HTTP/1.1"),
        ("absolute-form-https", f"GET https://{decoy}/v2/ HTTP/1.1"),
        ("absolute-form-ftp", f"GET ftp://{decoy}/v2/ HTTP/1.1"),
        ("network-path", f"GET //{decoy}/v2/library/tiny/manifests/latest HTTP/1.1"),
        ("authority-form", f"CONNECT {decoy} HTTP/1.1"),
        ("authority-form-ipv6", f"CONNECT {v6} HTTP/1.1"),
        ("authority-form-userinfo", f"CONNECT user@{bed.decoy(1)} HTTP/1.1"),
        ("asterisk-options", "OPTIONS * HTTP/1.1"),
        ("asterisk-get", "GET * HTTP/1.1"),
        ("trace", "TRACE /v2/ HTTP/1.1"),
        ("track", "TRACK /v2/ HTTP/1.1"),
        ("propfind", "PROPFIND /v2/library/tiny/manifests/latest HTTP/1.1"),
        ("lowercase-method", "get /v2/ HTTP/1.1"),
        ("long-method", "G" * 200 + " /v2/ HTTP/1.1"),
        ("method-control", "G\x01T /v2/ HTTP/1.1"),
        ("http-2-line", "GET /v2/ HTTP/2.0"),
        ("http-1-2", "GET /v2/ HTTP/1.2"),
        ("http-9-9", "GET /v2/ HTTP/9.9"),
        ("http-lowercase", "GET /v2/ http/1.1"),
        ("version-junk", "GET /v2/ HTTP/1.1x"),
        ("double-space", "GET  /v2/  HTTP/1.1"),
        ("tab-separated", "GET\t/v2/\tHTTP/1.1"),
        ("fragment", "GET /v2/library/tiny/manifests/latest#frag HTTP/1.1"),
        ("raw-high-bytes", "GET /v2/caf\u00e9/manifests/latest HTTP/1.1"),
        ("raw-del", "GET /v2/a\x7fb/manifests/latest HTTP/1.1"),
    ]:  # fmt: skip
        data = line.encode("utf-8") + b"\r\nHost: mirror\r\nConnection: close\r\n\r\n"
        yield Case(f"line-{name}", data)
    yield Case("line-http-0-9", b"GET /v2/\r\n\r\n")
    yield Case("line-http-1-0-no-host", b"GET /v2/ HTTP/1.0\r\n\r\n")
    yield Case(
        "line-leading-crlf", b"\r\n\r\nGET /v2/ HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n"
    )
    yield Case("line-raw-nul", request(b"/v2/a\x00b/manifests/latest"))
    yield Case("line-raw-invalid-utf8", request(b"/v2/\xff\xfe/manifests/latest"))
    yield Case("line-path-8000", request("/v2/" + "a" * 8000 + "/manifests/latest"))
    yield Case("line-path-100k", request("/v2/" + "a" * 100_000 + "/manifests/latest"), BAD)
    yield Case("line-http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    yield Case("line-tls-hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64)
    yield Case("line-binary", bytes(range(256)))


def _headers(bed: Bed) -> Iterator[Case]:
    target = b"/v2/library/tiny/manifests/latest"
    for name, headers in [
        ("nul-value", ((b"X-A", b"a\x00b"),)),
        ("cr-in-value", ((b"X-A", b"a\rb"),)),
        ("escape-in-value", ((b"X-A", b"\x1b[2J\x1b[31mred"),)),
        ("del-in-value", ((b"X-A", b"a\x7fb"),)),
        ("obs-text-value", ((b"X-A", b"\xff\xfe"),)),
        ("space-in-name", ((b"X A", b"b"),)),
        ("empty-name", ((b"", b"b"),)),
        ("paren-in-name", ((b"X(A)", b"b"),)),
        ("nul-in-name", ((b"X\x00A", b"b"),)),
        ("obs-fold", ((b"X-A", b"a\r\n  folded"),)),
        ("value-9000", ((b"X-A", b"a" * 9000),)),
        ("name-9000", ((b"X" * 9000, b"a"),)),
        ("200-headers", tuple((b"X-%d" % i, b"v") for i in range(200))),
        ("2000-headers", tuple((b"X-%d" % i, b"v") for i in range(2000))),
        ("cookie-flood", tuple((b"Cookie", b"a=" + b"b" * 4000) for _ in range(20))),
        ("host-twice", ((b"Host", bed.decoy(0).encode()),)),
        ("x-forwarded-host", ((b"X-Forwarded-Host", bed.decoy(0).encode()),)),
        ("forwarded", ((b"Forwarded", b"host=" + bed.decoy(1).encode() + b";proto=http"),)),
        ("x-original-url", ((b"X-Original-URL", b"/admin/cache"), (b"X-Rewrite-URL", b"/m"))),
        ("expect-100", ((b"Expect", b"100-continue"), (b"Content-Length", b"5"))),
        ("expect-junk", ((b"Expect", b"200-ok"),)),
        ("upgrade-h2c", ((b"Connection", b"Upgrade, HTTP2-Settings"), (b"Upgrade", b"h2c"),
                         (b"HTTP2-Settings", b"AAMAAABkAARAAAAAAAIAAAAA"))),
        ("upgrade-websocket", ((b"Connection", b"Upgrade"), (b"Upgrade", b"websocket"),
                               (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
                               (b"Sec-WebSocket-Version", b"13"))),
        ("authorization-huge", ((b"Authorization", b"Bearer " + b"A" * 8000),)),
        ("authorization-basic-junk", ((b"Authorization", b"Basic \xff\xfe==="),)),
        ("if-range-junk", ((b"If-Range", b"\x01"), (b"Range", b"bytes=0-1"))),
        ("user-agent-crlf-escaped", ((b"User-Agent", b"a%0d%0aInjected: 1"),)),
    ]:  # fmt: skip
        yield Case(f"header-{name}", request(target, headers=headers))
    for name, host in [
        ("host-decoy", bed.decoy(0).encode()),
        ("host-userinfo", b"user@" + bed.decoy(1).encode()),
        ("host-ipv6", bed.decoy(3).encode()),
        ("host-path", b"a/b"),
        ("host-control", b"a\x01b"),
        ("host-empty", b""),
    ]:
        yield Case(f"header-{name}", request(target, host=host))
    yield Case("header-no-host", request(target, host=None))
    body_mismatch = request(target, headers=((b"Content-Length", b"100"),), body=b"short")
    yield Case("header-body-shorter-than-cl", body_mismatch)
    lf_only = b"GET /v2/ HTTP/1.1\nHost: m\nConnection: close\n\n"
    yield Case("header-lf-line-ends", lf_only)
    yield Case("header-mixed-line-ends", b"GET /v2/ HTTP/1.1\r\nHost: m\nConnection: close\r\n\n")
    yield Case("header-bare-cr-line-ends", b"GET /v2/ HTTP/1.1\rHost: m\rConnection: close\r\r")


def _traversal() -> Iterator[Case]:
    blob = f"sha256:{HEX}"
    targets = [
        "/v2/../../../etc/passwd",
        "/v2/library/../../../../etc/passwd/manifests/latest",
        "/v2/%2e%2e/%2e%2e/etc/passwd",
        "/v2/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd/manifests/latest",
        "/v2/library/tiny/manifests/..%2f..%2f..%2fetc%2fpasswd",
        "/v2/library/tiny/blobs/sha256:..%2f..%2f..%2fetc%2fpasswd",
        "/v2/.%2e/.%2e/tiny/manifests/latest",
        "/v2/%252e%252e/%252e%252e/tiny/manifests/latest",
        "/v2/library%252ftiny/manifests/latest",
        "/v2/library%2ftiny/manifests/latest",
        "/v2/library\\tiny/manifests/latest",
        "/v2/library%5ctiny/manifests/latest",
        "/v2/..\\..\\etc\\passwd/manifests/latest",
        "/v2/library/tiny%00/manifests/latest",
        "/v2/library/tiny/manifests/latest%00.json",
        "/v2/library/tiny/manifests/latest%00",
        "/v2/%c0%ae%c0%ae/%c0%ae%c0%ae/tiny/manifests/latest",
        "/v2/%ef%bc%8e%ef%bc%8e/tiny/manifests/latest",
        "/v2/library/tiny;/../../manifests/latest",
        "/v2/library/tiny/manifests/latest/..",
        "/v2/./library/./tiny/manifests/latest",
        "//v2//library//tiny//manifests//latest",
        "/v2/library/tiny/tags/list/../../manifests/latest",
        "/v2/_quarantine/tiny/manifests/latest",
        "/v2/_probe/readyz/manifests/latest",
        "/v2/.spool/x/manifests/latest",
        "/v2/docker.io/../registry.example/tiny/manifests/latest",
        "/admin/../v2/",
        "/metrics/../v2/library/tiny/manifests/latest",
        "/v2/library/tiny/blobs/uploads/../../manifests/latest",
        "/v2/%2fetc%2fpasswd/manifests/latest",
        "/v2/library/tiny/manifests/%2e%2e",
        "/v2/library/tiny/manifests/..",
        "/v2/library/tiny/manifests/.",
        f"/v2/library/tiny/blobs/sha256%3a{HEX}",
        f"/v2/library/tiny/blobs/{blob}%00",
        f"/v2/library/tiny/blobs/{blob}/..",
        f"/v2/library/tiny/blobs/{blob}/../../../../etc/passwd",
        "/%76%32/library/tiny/manifests/latest",
        "/V2/library/tiny/manifests/latest",
        "/v2/library/tiny/manifests/latest?../../../etc/passwd",
        "/v2/library/tiny/referrers/..%2f..%2f",
    ]
    for number, target in enumerate(targets):
        yield Case(f"traversal-{number:02d}", request(target), REFUSED | {200})


def _names_and_references() -> Iterator[Case]:
    def manifest(name: str, reference: str = "latest") -> bytes:
        return request(f"/v2/{name}/manifests/{reference}")

    for label, name in [
        ("name-255", "a" * 255),
        ("name-256", "a" * 256),
        ("name-7000", "a" * 7000),
        ("name-128-components", "/".join(["a"] * 128)),
        ("name-triple-underscore", "a___b"),
        ("name-uppercase", "Library/Tiny"),
        ("name-unicode", "caf%C3%A9"),
        ("name-emoji", "%F0%9F%90%B3"),
        ("name-leading-dash", "-a"),
        ("name-trailing-dot", "a."),
        ("name-leading-dot", ".a"),
        ("name-empty-component", "a//b"),
        ("name-space", "a%20b"),
        ("name-crlf", "a%0d%0aX-Injected:%201"),
    ]:
        yield Case(label, manifest(name), REFUSED | {404})
    for label, reference in [
        ("tag-128", "t" * 128),
        ("tag-129", "t" * 129),
        ("tag-7000", "t" * 7000),
        ("tag-dot", ".tag"),
        ("tag-dash", "-tag"),
        ("tag-space", "a%20b"),
        ("tag-crlf", "latest%0d%0aX-Injected:%201"),
        ("tag-at", "t@g"),
        ("tag-unicode", "caf%C3%A9"),
        ("tag-arabic-digit", "%D9%A3"),
    ]:
        yield Case(label, manifest("library/tiny", reference), REFUSED | {404})
    for label, digest in [
        ("digest-short", "sha256:abc"),
        ("digest-65", "sha256:" + "a" * 65),
        ("digest-upper", "sha256:" + "A" * 64),
        ("digest-sha512-64", "sha512:" + "a" * 64),
        ("digest-sha512-valid", "sha512:" + "a" * 128),
        ("digest-md5", "md5:" + "a" * 32),
        ("digest-empty", "sha256:"),
        ("digest-no-algorithm", ":" + "a" * 64),
        ("digest-double-colon", "sha256::" + "a" * 64),
        ("digest-two-parts", f"sha256:{HEX}:extra"),
        ("digest-algorithm-upper", "SHA256:" + HEX),
        ("digest-blake3", "blake3:" + HEX),
        ("digest-unknown", "sha256:" + "0" * 64),
        ("digest-5000", "sha256:" + "a" * 5000),
        ("digest-arabic", "sha256:" + "%D9%A0" * 64),
    ]:
        yield Case(label, manifest("library/tiny", digest), REFUSED | {404})
        blob = request(f"/v2/library/tiny/blobs/{digest}")
        yield Case(f"blob-{label}", blob, REFUSED | {404})
    yield Case("referrers-bad", request("/v2/library/tiny/referrers/sha256:zz"), REFUSED)


def _ranges(bed: Bed) -> Iterator[Case]:
    cached = f"/v2/{bed.repository}/blobs/{bed.cached_blob}"
    for number, value in enumerate([
        b"bytes=0-0", b"bytes=-1", b"bytes=0-", b"bytes=" + b"9" * 5000 + b"-",
        b"bytes=-" + b"9" * 5000, b"bytes=0-" + b"9" * 5000, "bytes=\u00b2-".encode(),
        "bytes=\u0663-".encode(), "bytes=\uff11-".encode(), b"bytes=1_0-", b"bytes= 0-1",
        b"bytes=0x10-", b"bytes=-", b"bytes=--1", b"bytes=1--2", b"bytes=0-1,2-3",
        b"bytes=0-1 , 2-3", b"BYTES=0-1", b"bytes=+1-", b"bytes=1e3-", b"bytes=1.0-",
        b"bytes=0-18446744073709551616", b"bytes=9223372036854775807-",
        b"bytes=" + b"0" * 3000 + b"1-" + b"0" * 3000 + b"2", b"", b"bytes=" + b"0-0," * 1500,
        b"items=0-1", b"bytes=5-2", b"bytes=4096-", b"bytes=-0", b"bytes=0-1\x0b",
    ]):  # fmt: skip
        headers = ((b"Range", value),)
        yield Case(f"range-{number:02d}", request(cached, headers=headers), RANGE_OK | BAD)
        if number % 5 == 0:
            head = request(cached, method=b"HEAD", headers=headers)
            yield Case(f"range-head-{number:02d}", head, RANGE_OK | BAD, head=True)
    cold = f"/v2/{bed.repository}/blobs/{bed.cold_blob}"
    for number, value in enumerate([b"bytes=" + b"9" * 5000 + b"-", b"bytes=-" + b"9" * 5000]):
        yield Case(f"range-cold-{number}", request(cold, headers=((b"Range", value),)), RANGE_OK)
    manifest = request("/v2/library/tiny/manifests/latest", headers=((b"Range", b"bytes=-1"),))
    yield Case("range-on-manifest", manifest)


def _queries() -> Iterator[Case]:
    tags = "/v2/library/tiny/tags/list?"
    for label, query in [
        ("n-superscript", "n=%C2%B2"),
        ("n-arabic", "n=%D9%A3"),
        ("n-fullwidth", "n=%EF%BC%91"),
        ("n-exponent", "n=1e3"),
        ("n-hex", "n=0x10"),
        ("n-negative", "n=-1"),
        ("n-plus", "n=%2B1"),
        ("n-space", "n=%201"),
        ("n-underscore", "n=1_000"),
        ("n-5000-digits", "n=" + "9" * 5000),
        ("n-leading-zeros", "n=" + "0" * 5000 + "1"),
        ("n-too-big", "n=10001"),
        ("n-empty", "n="),
        ("n-nul", "n=%00"),
        ("n-twice", "n=1&n=2"),
        ("last-300", "last=" + "a" * 300),
        ("last-nul", "last=%00"),
        ("last-crlf", "last=%0d%0aX-Injected:%201"),
        ("last-unicode", "last=%C3%BC%C3%B1"),
        ("last-traversal", "last=../../../etc/passwd"),
        ("bad-percent", "n=%zz&last=%"),
        ("raw-semicolon", "n=1;last=a"),
    ]:
        yield Case(f"query-{label}", request(tags + query), frozenset({200, 400, 404}))
    referrers = f"/v2/library/tiny/referrers/sha256:{HEX}?artifactType=%0d%0a%00"
    yield Case("query-referrers-artifact-type", request(referrers), frozenset({200, 404}))


def _hosts(bed: Bed) -> Iterator[Case]:
    """ns values and path prefixes naming hosts: only configured upstreams may be chosen."""
    d0, d1, d2, d3 = (bed.decoy(i) for i in range(4))
    port0 = d0.rsplit(":", 1)[1]
    names = [
        d0, d1, d2, d3, f"localhost:{d2.rsplit(':', 1)[1]}", "::1", f"2130706434:{port0}",
        f"0x7f000002:{port0}", f"0177.0.0.2:{port0}", f"127.2:{port0}", f"017700000002:{port0}",
        f"user@{d0}", f"user:pass@{d1}", f"http://{d0}", f"//{d0}", f"{d0}/v2", f"{d0}%23",
        f"{d0}%00.docker.io", f"docker.io@{d0}", f"[::ffff:127.0.0.2]:{port0}", f"0:{port0}",
        "169.254.169.254", "metadata.google.internal", "%31%32%37.0.0.2", "docker.io%0d%0aX:1",
        "docker.io:443", "docker.io.", "evil.example.com",
    ]  # fmt: skip
    for number, name in enumerate(names):
        ns = f"/v2/library/tiny/manifests/latest?ns={name}"
        yield Case(f"ns-{number:02d}", request(ns), REFUSED)
        prefix = f"/v2/{name}/library/tiny/manifests/latest"
        yield Case(f"prefix-{number:02d}", request(prefix), REFUSED)
    for number, target in enumerate([
        f"/v2/library/tiny/blobs/{bed.cached_blob}?ns={d0}",
        f"/v2/library/tiny/tags/list?ns={d1}",
        f"/v2/library/tiny/referrers/sha256:{HEX}?ns={d3}",
        f"/v2/registry.example/library/tiny/manifests/latest?ns={d0}",
        f"/v2/docker.io/{d0}/tiny/manifests/latest",
        f"/v2/{d0}/v2/library/tiny/manifests/latest",
        f"/v2/library/tiny/manifests/latest?ns={d0}&ns=docker.io",
        f"/v2/library/tiny/manifests/latest?ns=docker.io&ns={d0}",
    ]):  # fmt: skip
        yield Case(f"host-mixed-{number}", request(target))
    for label, ns in [("alias", "registry-1.docker.io"), ("upper", "DOCKER.IO")]:
        target = f"/v2/library/tiny/manifests/latest?ns={ns}"
        yield Case(f"ns-configured-{label}", request(target), frozenset({200, 404}))


def _accept() -> Iterator[Case]:
    target = b"/v2/library/tiny/manifests/latest"
    oci = b"application/vnd.oci.image.manifest.v1+json"
    for label, headers in [
        ("100-lines", tuple((b"Accept", oci) for _ in range(100))),
        ("8000-commas", ((b"Accept", b"," * 8000),)),
        ("8000-semicolons", ((b"Accept", oci + b";" * 8000),)),
        ("q-nan", ((b"Accept", oci + b";q=nan"),)),
        ("q-huge", ((b"Accept", oci + b";q=" + b"9" * 5000),)),
        ("wildcard-refused", ((b"Accept", b"*/*;q=0"),)),
        ("nul", ((b"Accept", oci + b"\x00"),)),
        ("unicode", ((b"Accept", "application/vnd.oci.image.manifest.v1+json\u00b2".encode()),)),
    ]:
        yield Case(f"accept-{label}", request(target, headers=headers))


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def _authorization(bed: Bed) -> Iterator[Case]:
    """Credentials a client-auth middleware must refuse cleanly (401 or 400), never a 5xx."""
    jwt_none = b"eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhZG1pbiJ9."
    values = [
        ("basic-no-value", b"Basic"),
        ("basic-not-base64", b"Basic !!!"),
        ("basic-no-colon", b"Basic " + _b64(b"alice")),
        ("basic-empty-user", b"Basic " + _b64(b":password")),
        ("basic-not-utf8", b"Basic " + _b64(b"\xff\xfe:\xfd")),
        ("basic-nul", b"Basic " + _b64(b"alice\x00:pw\x00")),
        ("basic-long-user", b"Basic " + _b64(b"u" * 3000 + b":pw")),
        ("basic-72-plus-password", b"Basic " + _b64(b"alice:" + b"p" * 4000)),
        ("bearer-empty", b"Bearer "),
        ("bearer-three-dots", b"Bearer a.b.c"),
        ("bearer-alg-none", b"Bearer " + jwt_none),
        ("bearer-8191", b"Bearer " + b"e" * 8184),
        ("digest", b'Digest username="alice", realm="x", nonce="1", response="2"'),
        ("scheme-only-space", b" "),
        ("latin1", b"Basic \xe9\xe9\xe9"),
    ]
    paths = ["/v2/", f"/v2/{bed.repository}/manifests/latest", "/admin/cache", "/auth/token"]
    for name, value in values:
        for index, path in enumerate(paths):
            headers = ((b"Authorization", value),)
            yield Case(f"authorization-{name}-{index}", request(path, headers=headers))
    twice = ((b"Authorization", b"Basic " + _b64(b"a:b")), (b"Authorization", b"Bearer x"))
    yield Case("authorization-twice", request(f"/v2/{bed.repository}/manifests/latest",
                                              headers=twice))  # fmt: skip


def _token_requests() -> Iterator[Case]:
    """The token endpoint's malformed requests: 400 (or 404 where token auth is off)."""
    form = ((b"Content-Type", b"application/x-www-form-urlencoded"),)
    for name, target in [
        ("scope-traversal", "/auth/token?service=s&scope=repository:../../etc/passwd:pull"),
        ("scope-registry", "/auth/token?service=s&scope=repository:evil.example/x:pull"),
        ("scope-empty", "/auth/token?scope=&scope=::&scope=repository::pull"),
        ("scope-many", "/auth/token?" + "&".join(["scope=repository:a:pull"] * 300)),
        ("scope-huge", "/auth/token?scope=repository:" + "a" * 6000 + ":pull"),
        ("scope-control", "/auth/token?scope=repository:a%00b%0d%0a:pull"),
        ("offline-junk", "/auth/token?offline_token=%ff&account=%00"),
    ]:
        yield Case(f"token-get-{name}", request(target))
    for name, headers, body in [
        ("no-content-type", (), b"grant_type=password"),
        ("json", ((b"Content-Type", b"application/json"),), b'{"grant_type":"password"}'),
        ("grant-unknown", form, b"grant_type=client_credentials"),
        ("password-no-user", form, b"grant_type=password&password=x"),
        ("refresh-garbage", form, b"grant_type=refresh_token&refresh_token=a.b.c"),
        ("not-utf8", form, b"grant_type=password&username=\xff&password=\xfe"),
        ("too-many-fields", form, b"&".join([b"a=b"] * 500)),
        ("form-20k", form, b"grant_type=password&username=" + b"a" * 20000),
    ]:
        sized = (*headers, (b"Content-Length", str(len(body)).encode()))
        data = request("/auth/token", method=b"POST", headers=sized, body=body)
        yield Case(f"token-post-{name}", data)
