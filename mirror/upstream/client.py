"""Requests to one upstream registry: auth, redirects, retries and error mapping.

Every upstream answer that is not a success becomes an exception from
:mod:`mirror.errors`, so callers only handle the good path. Idempotent
requests (all of ours) are retried with exponential backoff and jitter on
connection errors and 502/503/504, before any body byte is handed out. A 429
is never retried here: its ``Retry-After`` goes back to the client.

Redirects (Docker Hub sends blobs to a CDN) are followed by hand so that the
upstream's ``Authorization`` is sent only to the upstream's own origin.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from urllib.parse import urljoin, urlsplit

import aiohttp
from multidict import CIMultiDict

from mirror.config import UpstreamConfig
from mirror.errors import (
    MirrorError,
    UpstreamDenied,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnauthorized,
    UpstreamUnavailable,
)
from mirror.metrics import Metrics
from mirror.numbers import parse_count
from mirror.oci import DIGEST_HEADER
from mirror.upstream.auth import Authenticator

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # distribution's own limit
MAX_LISTING_BYTES = 16 * 1024 * 1024
_MAX_REDIRECTS = 5
_RETRY_STATUSES = frozenset({502, 503, 504})
_BACKOFF_BASE = 0.2
_BACKOFF_CAP = 5.0
_RATELIMIT_RE = re.compile(r"[ \t]*([0-9]+)")


@dataclass(frozen=True, slots=True)
class ManifestHead:
    """What a manifest HEAD (or GET) tells about a manifest."""

    media_type: str | None
    digest: str | None
    size: int | None


@dataclass(frozen=True, slots=True)
class ManifestBody:
    """A manifest GET: its bytes and the upstream's headers about it."""

    body: bytes
    media_type: str | None
    digest: str | None


@dataclass(frozen=True, slots=True)
class Listing:
    """A tags/list or referrers answer passed through to the client."""

    status: int
    body: bytes
    content_type: str
    link: str | None
    headers: dict[str, str]


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


class UpstreamClient:
    """HTTP access to one configured upstream registry."""

    def __init__(
        self, config: UpstreamConfig, session: aiohttp.ClientSession, metrics: Metrics
    ) -> None:
        self.config = config
        self._session = session
        self._metrics = metrics
        self.auth = Authenticator(config, session)
        self._origin = _origin(config.url)
        # Authenticators for registries the upstream redirected us to, by origin.
        self._foreign: dict[tuple[str, str, int | None], Authenticator] = {}

    @property
    def name(self) -> str:
        """The upstream's configured name (``docker.io``, ``ghcr.io``, ...)."""
        return self.config.name

    # ------------------------------------------------------------ public calls

    async def head_manifest(
        self, repository: str, reference: str, accept: Sequence[str], not_found: type[MirrorError]
    ) -> ManifestHead:
        """HEAD a manifest: free against Docker Hub's pull limit."""
        path = f"/v2/{repository}/manifests/{reference}"
        async with self.request("HEAD", repository, path, _accept(accept), not_found) as resp:
            return ManifestHead(
                resp.headers.get("Content-Type"),
                resp.headers.get(DIGEST_HEADER),
                resp.content_length,
            )

    async def get_manifest(
        self, repository: str, reference: str, accept: Sequence[str], not_found: type[MirrorError]
    ) -> ManifestBody:
        """GET a manifest's bytes (at most 4 MiB, as distribution allows)."""
        path = f"/v2/{repository}/manifests/{reference}"
        async with self.request("GET", repository, path, _accept(accept), not_found) as resp:
            body = await _read_limited(resp, MAX_MANIFEST_BYTES)
            self._metrics.fetched(self.name, len(body))
            return ManifestBody(
                body, resp.headers.get("Content-Type"), resp.headers.get(DIGEST_HEADER)
            )

    async def head_blob(
        self, repository: str, digest: str, not_found: type[MirrorError]
    ) -> int | None:
        """The size of a blob, from a HEAD."""
        path = f"/v2/{repository}/blobs/{digest}"
        async with self.request("HEAD", repository, path, CIMultiDict(), not_found) as resp:
            return resp.content_length

    @asynccontextmanager
    async def open_blob(
        self,
        repository: str,
        digest: str,
        offset: int,
        not_found: type[MirrorError],
        idle_timeout: float | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET a blob from ``offset`` on; the response's body is not yet read.

        An upstream that ignores ``Range`` answers 200 with the whole blob:
        the caller must then skip ``offset`` bytes itself.
        ``idle_timeout`` bounds the wait for each read of the body.
        """
        headers: CIMultiDict[str] = CIMultiDict()
        if offset:
            headers["Range"] = f"bytes={offset}-"
        path = f"/v2/{repository}/blobs/{digest}"
        async with self.request(
            "GET", repository, path, headers, not_found,
            read_timeout=idle_timeout or self.config.read_timeout,
        ) as resp:  # fmt: skip
            yield resp

    async def get_listing(
        self, repository: str, path: str, query: dict[str, str], not_found: type[MirrorError]
    ) -> Listing:
        """GET a small JSON listing (tags/list, referrers)."""
        async with self.request(
            "GET", repository, path, CIMultiDict(), not_found, query=query
        ) as resp:
            body = await _read_limited(resp, MAX_LISTING_BYTES)
            self._metrics.fetched(self.name, len(body))
            extra = {k: v for k, v in resp.headers.items() if k.lower().startswith("oci-")}
            return Listing(
                resp.status,
                body,
                resp.headers.get("Content-Type", "application/json"),
                resp.headers.get("Link"),
                extra,
            )

    async def ping(self) -> int:
        """GET /v2/ and return the status (401 counts as reachable)."""
        timeout = aiohttp.ClientTimeout(total=self.config.connect_timeout)
        try:
            async with self._session.get(
                self.config.url + "/v2/", timeout=timeout, allow_redirects=False
            ) as resp:
                return resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamTimeout(f"{self.name} unreachable: {type(exc).__name__}") from exc

    # ---------------------------------------------------------------- machinery

    @asynccontextmanager
    async def request(
        self,
        method: str,
        repository: str,
        path: str,
        headers: CIMultiDict[str],
        not_found: type[MirrorError],
        *,
        query: dict[str, str] | None = None,
        read_timeout: float | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A successful (2xx) response, after auth, redirects and retries.

        With ``read_timeout`` the response is a stream: no overall deadline,
        only one per read; without it the whole exchange has a deadline.
        """
        scope = f"repository:{repository}:pull"
        attempt = 0
        while True:
            try:
                resp = await self._send_authenticated(
                    method, path, headers, scope, query, read_timeout
                )
            except UpstreamError as exc:
                if not self._should_retry(exc, attempt):
                    raise
                attempt += 1
                await asyncio.sleep(_backoff(attempt))
                continue
            try:
                if resp.status in _RETRY_STATUSES and attempt < self.config.retries:
                    attempt += 1
                    await asyncio.sleep(_backoff(attempt))
                    continue
                self._note_ratelimit(resp)  # a 429 carries "remaining: 0" too
                self._check_status(resp, not_found)
                yield resp
                return
            finally:
                resp.release()

    def _should_retry(self, exc: UpstreamError, attempt: int) -> bool:
        return isinstance(exc, UpstreamTimeout) and attempt < self.config.retries

    async def _send_authenticated(
        self,
        method: str,
        path: str,
        headers: CIMultiDict[str],
        scope: str,
        query: dict[str, str] | None,
        read_timeout: float | None,
    ) -> aiohttp.ClientResponse:
        """Send, answering 401 challenges from the upstream and from hosts it redirects to.

        A registry may redirect to another registry that wants its own token
        (registry.k8s.io sends clients to Artifact Registry). Each origin gets
        tokens from its own challenge; the upstream's credentials are used only
        for the upstream's own challenge.
        """
        await self._authorize(self._origin, scope, None)
        answered: set[tuple[str, str, int | None]] = set()
        while True:
            resp = await self._send_following(method, self.config.url + path, headers, scope,
                                              query, read_timeout)  # fmt: skip
            if resp.status != 401:
                return resp
            origin = _origin(str(resp.url))
            challenge = resp.headers.get("WWW-Authenticate")
            resp.release()
            if not challenge:
                raise UpstreamUnauthorized("upstream answered 401 without a challenge")
            if origin in answered:
                raise UpstreamUnauthorized("upstream refused the mirror's credentials")
            answered.add(origin)
            await self._authorize(origin, scope, challenge)

    async def _authorize(
        self, origin: tuple[str, str, int | None], scope: str, challenge: str | None
    ) -> None:
        """Get ``origin`` a header for ``scope``: prefetched, or answering ``challenge``."""
        authenticator = self._authenticator(origin)
        current = authenticator.header_for(scope)
        if challenge is None:
            if current is None:
                await authenticator.prefetch(scope)
            return
        await authenticator.answer(challenge, scope, rejected=current)

    def _authenticator(self, origin: tuple[str, str, int | None]) -> Authenticator:
        if origin == self._origin:
            return self.auth
        found = self._foreign.get(origin)
        if found is None:
            # Another registry we were redirected to: anonymous tokens only,
            # never the upstream's credentials.
            anonymous = replace(self.config, username=None, password=None)
            found = self._foreign[origin] = Authenticator(anonymous, self._session)
        return found

    async def _send_following(
        self,
        method: str,
        url: str,
        headers: CIMultiDict[str],
        scope: str,
        query: dict[str, str] | None,
        read_timeout: float | None,
    ) -> aiohttp.ClientResponse:
        for _ in range(_MAX_REDIRECTS + 1):
            send = CIMultiDict(headers)
            auth = self._header_for(_origin(url), scope)
            if auth is not None:
                send["Authorization"] = auth
            resp = await self._send_once(method, url, send, query, read_timeout)
            location = resp.headers.get("Location")
            if resp.status not in (301, 302, 303, 307, 308) or not location:
                return resp
            resp.release()
            url = urljoin(url, location)
            query = None  # the Location carries its own query
            if urlsplit(url).scheme not in ("http", "https"):
                raise UpstreamUnavailable("upstream redirected to a non-HTTP URL")
        raise UpstreamUnavailable("upstream redirected too many times")

    def _header_for(self, origin: tuple[str, str, int | None], scope: str) -> str | None:
        """Only what this origin itself asked for: a CDN that never challenged gets nothing."""
        if origin == self._origin:
            return self.auth.header_for(scope)
        foreign = self._foreign.get(origin)
        return foreign.header_for(scope) if foreign is not None else None

    async def _send_once(
        self,
        method: str,
        url: str,
        headers: CIMultiDict[str],
        query: dict[str, str] | None,
        read_timeout: float | None,
    ) -> aiohttp.ClientResponse:
        if read_timeout is None:
            timeout = aiohttp.ClientTimeout(
                total=self.config.read_timeout + self.config.connect_timeout,
                connect=self.config.connect_timeout,
                sock_read=self.config.read_timeout,
            )
        else:
            timeout = aiohttp.ClientTimeout(
                total=None, connect=self.config.connect_timeout, sock_read=read_timeout
            )
        started = time.monotonic()
        try:
            resp = await self._session.request(
                method, url, headers=headers, params=query, timeout=timeout,
                allow_redirects=False, auto_decompress=False,
            )  # fmt: skip
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._metrics.upstream_response(self.name, method, 0, time.monotonic() - started)
            raise UpstreamTimeout(f"{self.name} unreachable: {type(exc).__name__}") from exc
        self._metrics.upstream_response(self.name, method, resp.status, time.monotonic() - started)
        return resp

    def _check_status(self, resp: aiohttp.ClientResponse, not_found: type[MirrorError]) -> None:
        status = resp.status
        if 200 <= status < 300:
            return
        if status == 404:
            raise not_found(f"not found at upstream {self.name}")
        if status == 403:
            raise UpstreamDenied(f"upstream {self.name} denied access")
        if status == 429:
            raise UpstreamRateLimited(
                f"upstream {self.name} is rate limiting the mirror", resp.headers.get("Retry-After")
            )
        raise UpstreamUnavailable(f"upstream {self.name} answered {status}")

    def _note_ratelimit(self, resp: aiohttp.ClientResponse) -> None:
        limit = _ratelimit_value(resp.headers.get("ratelimit-limit"))
        remaining = _ratelimit_value(resp.headers.get("ratelimit-remaining"))
        if limit is not None or remaining is not None:
            self._metrics.upstream_ratelimit(self.name, limit, remaining)


def _accept(accept: Sequence[str]) -> CIMultiDict[str]:
    # One header line per type: distribution reads every line, and some
    # proxies fold or drop repeated lines only when asked to.
    return CIMultiDict(("Accept", value) for value in accept)


def _ratelimit_value(header: str | None) -> int | None:
    if not header:
        return None
    # "100;w=21600": the count comes first; a number too long to be one is ignored.
    match = _RATELIMIT_RE.match(header)
    return parse_count(match.group(1)) if match else None


def _backoff(attempt: int) -> float:
    """Exponential backoff with full jitter."""
    return random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt))


async def _read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise UpstreamUnavailable(f"upstream answer of {resp.content_length} bytes is too large")
    chunks: list[bytes] = []
    total = 0
    try:
        async for chunk in resp.content.iter_any():
            total += len(chunk)
            if total > limit:
                raise UpstreamUnavailable("upstream answer is too large")
            chunks.append(chunk)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UpstreamTimeout(f"upstream answer broke off: {type(exc).__name__}") from exc
    return b"".join(chunks)
