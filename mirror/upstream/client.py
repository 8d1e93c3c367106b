"""Requests to one upstream registry: auth, redirects, retries and error mapping.

Every upstream answer that is not a success becomes an exception from
:mod:`mirror.errors` (:mod:`mirror.upstream.answers`), so callers only handle
the good path. Idempotent
requests (all of ours) are retried before any body byte is handed out, as
:mod:`mirror.upstream.retry` decides: backoff with jitter on connection errors
and 502/503/504, the upstream's own ``Retry-After`` on 503 and 429 when it is
short enough; otherwise that ``Retry-After`` goes back to the client.

Redirects (Docker Hub sends blobs to a CDN) are followed by hand, so that the
upstream's ``Authorization`` is sent only to the upstream's own origin and
every hop passes the redirect policy of :mod:`mirror.upstream.egress`.

Each public method knows what it fetches (a :class:`_Resource`): its path,
the error a 404 means, and whether redirects are routine for it (blobs).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict

from mirror.config import UpstreamConfig
from mirror.errors import (
    BlobUnknown,
    ClientError,
    ManifestUnknown,
    NameUnknown,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnauthorized,
    UpstreamUnavailable,
)
from mirror.metrics import Metrics
from mirror.oci import DIGEST_HEADER
from mirror.upstream.answers import raise_for_status, ratelimit
from mirror.upstream.auth import Authenticators
from mirror.upstream.base import Listing, ManifestBody, ManifestHead
from mirror.upstream.blobs import BlobResponse
from mirror.upstream.egress import Egress, Origin, origin
from mirror.upstream.retry import backoff, retry_delay

log = logging.getLogger(__name__)

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # distribution's own limit
MAX_LISTING_BYTES = 16 * 1024 * 1024
_MAX_REDIRECTS = 5


@dataclass(frozen=True, slots=True)
class _Resource:
    """What one request fetches."""

    repository: str
    path: str
    unknown: type[ClientError]  # what a 404 from the upstream means
    blob: bool = False  # blob redirects are routine (CDNs); others need redirects = "all"


def _manifest(repository: str, reference: str) -> _Resource:
    return _Resource(repository, f"/v2/{repository}/manifests/{reference}", ManifestUnknown)


def _blob(repository: str, digest: str) -> _Resource:
    return _Resource(repository, f"/v2/{repository}/blobs/{digest}", BlobUnknown, blob=True)


class UpstreamClient:
    """HTTP access to one configured upstream registry."""

    def __init__(
        self, config: UpstreamConfig, session: aiohttp.ClientSession, metrics: Metrics
    ) -> None:
        self.config = config
        self._metrics = metrics
        self._egress = Egress(config, session, metrics)
        self._auth = Authenticators(config, self._egress)

    @property
    def name(self) -> str:
        """The upstream's configured name (``docker.io``, ``ghcr.io``, ...)."""
        return self.config.name

    async def close(self) -> None:
        """Release what the client opened itself (the session for redirect targets)."""
        await self._egress.close()

    # ------------------------------------------------------------ public calls

    async def head_manifest(
        self, repository: str, reference: str, accept: Sequence[str]
    ) -> ManifestHead:
        """HEAD a manifest: free against Docker Hub's pull limit."""
        resource = _manifest(repository, reference)
        async with self._request("HEAD", resource, _accept(accept)) as resp:
            return ManifestHead(
                resp.headers.get("Content-Type"),
                resp.headers.get(DIGEST_HEADER),
                resp.content_length,
            )

    async def get_manifest(
        self, repository: str, reference: str, accept: Sequence[str]
    ) -> ManifestBody:
        """GET a manifest's bytes (at most 4 MiB, as distribution allows)."""
        resource = _manifest(repository, reference)
        async with self._request("GET", resource, _accept(accept)) as resp:
            body = await _read_limited(resp, MAX_MANIFEST_BYTES)
            self._metrics.fetched(self.name, len(body))
            return ManifestBody(
                body, resp.headers.get("Content-Type"), resp.headers.get(DIGEST_HEADER)
            )

    async def head_blob(self, repository: str, digest: str) -> int | None:
        """The size of a blob, from a HEAD."""
        async with self._request("HEAD", _blob(repository, digest), CIMultiDict()) as resp:
            return resp.content_length

    @asynccontextmanager
    async def open_blob(
        self, repository: str, digest: str, offset: int, *, idle_timeout: float, read_size: int
    ) -> AsyncIterator[BlobResponse]:
        """GET a blob from ``offset`` on; its body is read through the answer.

        ``idle_timeout`` bounds the wait for each read of the body.
        """
        headers: CIMultiDict[str] = CIMultiDict()
        if offset:
            headers["Range"] = f"bytes={offset}-"
        resource = _blob(repository, digest)
        async with self._request("GET", resource, headers, read_timeout=idle_timeout) as resp:
            yield BlobResponse(resp, offset, read_size)

    async def tags(self, repository: str, query: dict[str, str]) -> Listing:
        """GET the repository's tag list."""
        path = f"/v2/{repository}/tags/list"
        return await self._listing(_Resource(repository, path, NameUnknown), query)

    async def referrers(self, repository: str, digest: str, query: dict[str, str]) -> Listing:
        """GET the referrers index of a manifest."""
        path = f"/v2/{repository}/referrers/{digest}"
        return await self._listing(_Resource(repository, path, ManifestUnknown), query)

    async def _listing(self, resource: _Resource, query: dict[str, str]) -> Listing:
        """GET a small JSON listing, passed through."""
        async with self._request("GET", resource, CIMultiDict(), query=query) as resp:
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
            async with self._egress.direct.get(
                self.config.url + "/v2/", timeout=timeout, allow_redirects=False
            ) as resp:
                return resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamTimeout(f"{self.name} unreachable: {type(exc).__name__}") from exc

    # ---------------------------------------------------------------- machinery

    @asynccontextmanager
    async def _request(
        self,
        method: str,
        resource: _Resource,
        headers: CIMultiDict[str],
        *,
        query: dict[str, str] | None = None,
        read_timeout: float | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A successful (2xx) response, after auth, redirects and retries.

        With ``read_timeout`` the response is a stream: no overall deadline,
        only one per read; without it the whole exchange has a deadline.
        """
        scope = f"repository:{resource.repository}:pull"
        path, blob = resource.path, resource.blob
        deadline = time.monotonic() + self.config.read_timeout
        attempt = 0
        while True:
            try:
                resp = await self._send_authenticated(
                    method, path, headers, scope, query, read_timeout, blob
                )
            except UpstreamError as exc:
                if not self._should_retry(exc, attempt):
                    raise
                attempt += 1
                await asyncio.sleep(backoff(attempt))
                continue
            try:
                delay = self._retry_delay(resp, attempt, deadline)
                if delay is not None:
                    resp.release()  # free the connection while waiting
                    attempt += 1
                    await asyncio.sleep(delay)
                    continue
                limit, remaining = ratelimit(resp)  # a 429 carries "remaining: 0" too
                if limit is not None or remaining is not None:
                    self._metrics.upstream_ratelimit(self.name, limit, remaining)
                raise_for_status(resp, self.name, resource.unknown)
                yield resp
                return
            finally:
                resp.release()

    def _retry_delay(
        self, resp: aiohttp.ClientResponse, attempt: int, deadline: float
    ) -> float | None:
        """Seconds to wait before the next try, or ``None`` to answer with ``resp``.

        A ``Retry-After`` wait must end before ``deadline`` (``read_timeout`` after
        the first try), so a client is never held longer than one slow answer.
        """
        delay = retry_delay(
            resp.status, resp.headers.get("Retry-After"),
            attempt=attempt, retries=self.config.retries,
            cap=self.config.retry_after_max, time_left=deadline - time.monotonic(),
        )  # fmt: skip
        if delay is not None:
            log.debug("upstream %s answered %d, retry in %.1fs", self.name, resp.status, delay)
        return delay

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
        blob: bool,
    ) -> aiohttp.ClientResponse:
        """Send, answering 401 challenges from the upstream and from hosts it redirects to.

        Each origin gets tokens from its own challenge (see :class:`Authenticators`).
        """
        await self._auth.authorize(self._egress.origin, scope, None)
        answered: set[Origin] = set()
        while True:
            resp = await self._send_following(method, self.config.url + path, headers, scope,
                                              query, read_timeout, blob)  # fmt: skip
            if resp.status != 401:
                return resp
            challenged = origin(str(resp.url))
            challenge = resp.headers.get("WWW-Authenticate")
            resp.release()
            if not challenge:
                raise UpstreamUnauthorized("upstream answered 401 without a challenge")
            if challenged in answered:
                raise UpstreamUnauthorized("upstream refused the mirror's credentials")
            answered.add(challenged)
            await self._auth.authorize(challenged, scope, challenge)

    async def _send_following(
        self,
        method: str,
        url: str,
        headers: CIMultiDict[str],
        scope: str,
        query: dict[str, str] | None,
        read_timeout: float | None,
        blob: bool,
    ) -> aiohttp.ClientResponse:
        session = self._egress.direct
        for _ in range(_MAX_REDIRECTS + 1):
            send = CIMultiDict(headers)
            auth = self._auth.header_for(origin(url), scope)
            if auth is not None:
                send["Authorization"] = auth
            resp = await self._send_once(session, method, url, send, query, read_timeout)
            location = resp.headers.get("Location")
            if resp.status not in (301, 302, 303, 307, 308) or not location:
                return resp
            resp.release()
            url, session = self._egress.follow(url, location, blob=blob)
            query = None  # the Location carries its own query
        raise UpstreamUnavailable("upstream redirected too many times")

    async def _send_once(
        self,
        session: aiohttp.ClientSession,
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
            resp = await session.request(
                method, url, headers=headers, params=query, timeout=timeout,
                allow_redirects=False, auto_decompress=False,
            )  # fmt: skip
        except (aiohttp.ClientError, TimeoutError) as exc:
            refused = self._egress.refused_at_connect(exc, "redirect")
            if refused is not None:
                raise refused from exc
            self._metrics.upstream_response(self.name, method, 0, time.monotonic() - started)
            raise UpstreamTimeout(f"{self.name} unreachable: {type(exc).__name__}") from exc
        self._metrics.upstream_response(self.name, method, resp.status, time.monotonic() - started)
        return resp


def _accept(accept: Sequence[str]) -> CIMultiDict[str]:
    # One header line per type: distribution reads every line, and some
    # proxies fold or drop repeated lines only when asked to.
    return CIMultiDict(("Accept", value) for value in accept)


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
