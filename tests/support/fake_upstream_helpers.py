"""Building blocks of :mod:`tests.support.fake_upstream`: fault rules, request
records, a connection-counting site and small HTTP helpers."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import math
import re
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

# Endpoint kinds that a global fault (``match=None``) applies to: content, not
# the ``/v2/`` ping or the token endpoint, so a global 503 still lets a client
# authenticate and a test can target those two explicitly when it wants to.
CONTENT_KINDS = frozenset({"manifest", "blob", "tags", "cdn", "referrers"})

_DEFAULT_CODES = {
    401: ("UNAUTHORIZED", "authentication required"),
    403: ("DENIED", "requested access to the resource is denied"),
    405: ("UNSUPPORTED", "the operation is unsupported"),
    416: ("BLOB_UNKNOWN", "requested range not satisfiable"),
    429: ("TOOMANYREQUESTS", "too many requests"),
    500: ("UNKNOWN", "unknown error"),
}
_NOT_FOUND = {
    "manifest": ("MANIFEST_UNKNOWN", "manifest unknown"),
    "blob": ("BLOB_UNKNOWN", "blob unknown to registry"),
    "cdn": ("BLOB_UNKNOWN", "blob unknown to registry"),
    "tags": ("NAME_UNKNOWN", "repository name not known to registry"),
    "referrers": ("NAME_UNKNOWN", "repository name not known to registry"),
}


def oci_error(status: int, kind: str) -> bytes:
    """The OCI distribution error body a registry sends for ``status`` on ``kind``."""
    if status == 404:
        code, message = _NOT_FOUND.get(kind, ("NAME_UNKNOWN", "not found"))
    elif status in _DEFAULT_CODES:
        code, message = _DEFAULT_CODES[status]
    else:
        code, message = ("UNAVAILABLE", "service unavailable") if status >= 500 else ("UNKNOWN", "")
    return json.dumps({"errors": [{"code": code, "message": message, "detail": None}]}).encode()


@dataclass
class Fault:
    """A fault rule; add it with ``FakeUpstream.add_fault``.

    ``match``: ``None`` = every manifest/blob/tags/CDN request; a ``str`` = path suffix
    *or* the request's target digest (blob digest, CDN digest, or the digest a
    manifest tag resolves to); an ``re.Pattern`` = searched in the path.
    ``method`` restricts to one HTTP method. ``times`` = apply to the first N
    matching requests only (``hits`` counts them). Rules are tried in insertion
    order; the first active match is used. A rule with only body knobs is neither
    applied to nor used up by responses without a content body (HEAD, 404, 307).
    """

    match: str | re.Pattern[str] | None = None
    method: str | None = None
    times: int | None = None
    #: seconds before the status line (``math.inf``: until the server stops)
    first_byte_delay: float = 0.0
    #: body bytes per second
    rate: float | None = None
    #: seconds between body chunks of ``chunk_size`` (default 1024) bytes
    chunk_delay: float | None = None
    chunk_size: int | None = None
    #: send this many body bytes of the announced length, then close the socket
    cut_after: int | None = None
    #: send the right length with one flipped byte, and the correct digest header
    corrupt: bool = False
    #: answer with this status and an OCI error body instead
    status: int | None = None
    #: ``Retry-After`` value added to the response (meant for 429 / 503)
    retry_after: str | int | None = None
    #: send this many body bytes, then go silent until the server stops
    stall_after: int | None = None
    #: send the body with chunked transfer encoding, without a Content-Length
    chunked: bool = False
    #: extra response headers
    headers: Mapping[str, str] = field(default_factory=dict)
    #: answer with these bytes instead (a captive portal's page, a proxy's error page)
    body: bytes | None = None
    hits: int = 0

    @property
    def active(self) -> bool:
        """Whether the rule still applies (``times`` not used up)."""
        return self.times is None or self.hits < self.times

    @property
    def shapes_body(self) -> bool:
        """Whether the rule changes how a content body is sent."""
        return bool(self.rate or self.chunk_delay or self.corrupt or self.chunked) or (
            self.cut_after,
            self.stall_after,
        ) != (None, None)

    @property
    def shapes_response(self) -> bool:
        """Whether the rule affects any response, body or not."""
        return bool(
            self.status is not None
            or self.first_byte_delay
            or self.headers
            or self.retry_after is not None
            or self.body is not None
        )

    def matches(self, method: str, path: str, kind: str, digest: str | None) -> bool:
        """Whether the rule selects this request."""
        if self.method is not None and method != self.method:
            return False
        if self.match is None:
            return kind in CONTENT_KINDS
        if isinstance(self.match, re.Pattern):
            return self.match.search(path) is not None
        return path.endswith(self.match) or self.match == digest


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDictProxy[str]
    #: ``time.monotonic()`` when the handler started
    time: float
    #: peer ``(host, port)``: requests with equal ``remote`` shared a connection
    remote: tuple[str, int] | None
    #: arrived on the CDN listener rather than the registry one
    cdn: bool = False

    @property
    def accept(self) -> list[str]:
        """Every ``Accept`` header line, unsplit, in order."""
        return self.headers.getall("Accept", [])

    @property
    def authorization(self) -> str | None:
        """The ``Authorization`` header, if any."""
        return self.headers.get("Authorization")


class CountingSite(web.BaseSite):
    """A TCP site on ``host`` (a free port) that counts accepted connections.

    Counting in the protocol factory sees every TCP accept, even connections
    that never send a request, so "the mirror made no connection" is checkable.
    With ``ssl_context`` it speaks HTTPS.
    """

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str = "127.0.0.1",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self.host = host
        self.accepted = 0
        self.port = 0

    @property
    def scheme(self) -> str:
        """``https`` when the site has an SSL context, else ``http``."""
        return "http" if self._ssl_context is None else "https"

    @property
    def name(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None

        def factory() -> asyncio.Protocol:
            self.accepted += 1
            return server()

        loop = asyncio.get_running_loop()
        listener = await loop.create_server(factory, self.host, 0, ssl=self._ssl_context)
        self._server = listener
        self.port = listener.sockets[0].getsockname()[1]


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """``(start, stop)`` for a single-range ``Range`` header.

    Returns ``None`` for headers to ignore (not a single byte range: serve 200);
    raises ``ValueError`` for an unsatisfiable range (serve 416).
    """
    m = _RANGE.fullmatch(header.strip())
    if m is None or m[1] == m[2] == "":
        return None
    if m[1] == "":  # suffix range: the last N bytes
        start, stop = max(0, size - int(m[2])), size
    else:
        start = int(m[1])
        stop = size if m[2] == "" else min(size, int(m[2]) + 1)
    if start >= size or start >= stop:
        raise ValueError(header)
    return start, stop


async def sleep_unless(stopping: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds``; return ``False`` at once if ``stopping`` gets set.

    Every delay in the fake goes through here, so stopping the server ends
    stalls and slow sends promptly instead of waiting out the aiohttp shutdown
    timeout.
    """
    try:
        async with asyncio.timeout(None if math.isinf(seconds) else seconds):
            await stopping.wait()
    except TimeoutError:
        return True
    return False


def basic_matches(header: str, username: str, password: str) -> bool:
    """Whether an ``Authorization`` header carries exactly these Basic credentials."""
    scheme, _, encoded = header.partition(" ")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    return scheme.lower() == "basic" and decoded == f"{username}:{password}"


@dataclass
class Reply:
    """A response before faults and sending: what the registry would answer."""

    status: int
    kind: str
    body: bytes = b""
    headers: CIMultiDict[str] = field(default_factory=CIMultiDict)
    content: bool = False  # body is manifest/blob content (body-shaping faults apply)
    digest: str | None = None
    name: str | None = None


def accepts(request: web.Request, media_type: str) -> bool:
    """Whether the request's ``Accept`` lines (all of them) allow ``media_type``."""
    accepted = {
        part.split(";")[0].strip()
        for line in request.headers.getall("Accept", [])
        for part in line.split(",")
    }
    return media_type in accepted or "*/*" in accepted


async def send_shaped(
    request: web.Request,
    resp: web.StreamResponse,
    body: bytes,
    fault: Fault,
    stopping: asyncio.Event,
) -> bool:
    """Send ``body`` as ``fault`` says; ``False`` if the connection was ended."""
    if fault.corrupt and body:
        i = len(body) // 2  # one flipped byte mid-body: only a digest check notices
        body = body[:i] + bytes([body[i] ^ 0xFF]) + body[i + 1 :]
    end = len(body)
    for limit in (fault.cut_after, fault.stall_after):
        if limit is not None:
            end = min(end, limit)
    if fault.chunk_size:
        size = fault.chunk_size
    elif fault.rate:
        size = max(1, int(fault.rate / 20))  # ~20 writes per second
    else:
        size = 1024 if fault.chunk_delay else max(end, 1)
    delay = (fault.chunk_delay or 0.0) + (size / fault.rate if fault.rate else 0.0)
    pos = 0
    while pos < end:
        await resp.write(body[pos : pos + min(size, end - pos)])
        pos = min(pos + size, end)
        if delay and pos < end and not await sleep_unless(stopping, delay):
            abort(request)
            return False
    if end == len(body):
        return True
    if end == fault.stall_after and (fault.cut_after is None or fault.cut_after > end):
        await sleep_unless(stopping, math.inf)
        abort(request)
    elif request.transport is not None:
        # close(), not abort(): it flushes what was written, so the client
        # gets exactly cut_after bytes and then EOF before Content-Length.
        request.transport.close()
    return False


def abort(request: web.Request) -> web.StreamResponse:
    """Drop the connection without finishing the response."""
    if request.transport is not None:
        request.transport.abort()
    return web.StreamResponse()


def referrers_index(
    manifests: Iterable[tuple[bytes, str]], subject: str, artifact_type: str | None
) -> tuple[bytes, bool]:
    """The referrers API's index of the manifests whose ``subject`` is ``subject``.

    Returns the body and whether the ``artifactType`` filter was applied.
    """
    entries = []
    for body, media_type in manifests:
        doc = json.loads(body)
        named = doc.get("subject") if isinstance(doc, dict) else None
        if not isinstance(named, dict) or named.get("digest") != subject:
            continue
        config = doc.get("config") or {}
        entry = {
            "mediaType": media_type,
            "digest": "sha256:" + hashlib.sha256(body).hexdigest(),
            "size": len(body),
            "artifactType": doc.get("artifactType") or config.get("mediaType"),
        }
        if doc.get("annotations"):
            entry["annotations"] = doc["annotations"]
        if artifact_type is None or entry["artifactType"] == artifact_type:
            entries.append(entry)
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": entries}  # fmt: skip
    return json.dumps(index).encode(), artifact_type is not None
