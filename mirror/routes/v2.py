"""The pull side of the OCI distribution API under ``/v2/``.

Repository names may have any number of components, so one catch-all route
takes the path apart here. Push endpoints answer 405 ``UNSUPPORTED``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from mirror.accept import parse_accept
from mirror.errors import MirrorError, NameInvalid, QueryInvalid, Unsupported
from mirror.metrics import Metrics
from mirror.numbers import parse_count
from mirror.oci import (
    API_VERSION,
    API_VERSION_HEADER,
    DIGEST_HEADER,
    NAMESPACE_HEADER,
    parse_digest,
    parse_reference,
)
from mirror.proxy.service import ManifestAnswer, PullService
from mirror.routes import blobs
from mirror.routes.keys import CACHE_RESULT, KIND
from mirror.routing import Router, Target
from mirror.storage.base import Storage

PATH_RE = re.compile(
    r"/v2/(?P<name>.+?)/(?:"
    r"manifests/(?P<reference>[^/]+)"
    r"|blobs/uploads(?:/.*)?"
    r"|blobs/(?P<digest>[^/]+)"
    r"|(?P<tags>tags/list)"
    r"|referrers/(?P<referrers>[^/]+)"
    r")"
)
_READ_METHODS = ("GET", "HEAD")
_MAX_PAGE = 10000  # tags per page a client may ask for


class V2Handlers:
    """Request handlers. Routes are registered when the app is built; what the
    handlers use (opened in the app's cleanup context) is bound at start-up."""

    _router: Router
    _service: PullService
    _storage: Storage
    _metrics: Metrics

    def bind(
        self, router: Router, service: PullService, storage: Storage, metrics: Metrics
    ) -> None:
        """Give the handlers the app's running resources."""
        self._router = router
        self._service = service
        self._storage = storage
        self._metrics = metrics

    def register(self, app: web.Application) -> None:
        """Add the routes to ``app``."""
        app.router.add_route("*", "/v2", self.counting_errors(self.base))
        app.router.add_route("*", "/v2/", self.counting_errors(self.base))
        app.router.add_route("*", "/v2/{tail:.+}", self.counting_errors(self.dispatch))

    def counting_errors(
        self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """``handler``, counting the requests it fails as ``result="error"``."""

        async def counted(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except MirrorError:
                self._metrics.request(request.get(KIND, "other"), "error")
                raise

        return counted

    async def base(self, request: web.Request) -> web.StreamResponse:
        """API version check: clients call it before anything else."""
        if request.method not in _READ_METHODS:
            raise Unsupported("this mirror is read-only")
        request[KIND] = "other"
        return web.json_response({}, headers={API_VERSION_HEADER: API_VERSION})

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """Route ``/v2/<name>/...`` by its last components."""
        match = PATH_RE.fullmatch(request.path)
        if match is None:
            if request.path == "/v2/_catalog":
                raise Unsupported("a mirror has no catalog")
            raise NameInvalid("not a distribution API path")
        if request.method not in _READ_METHODS:
            raise Unsupported("this mirror is pull-only: pushes are not accepted")
        target = self._router.resolve(match.group("name"), request.query.get("ns"))
        handler = self._handler_for(match)
        response = await handler(request, target, match)
        response.headers[API_VERSION_HEADER] = API_VERSION
        if target.namespace is not None:
            response.headers[NAMESPACE_HEADER] = target.namespace
        return response

    def _handler_for(
        self, match: re.Match[str]
    ) -> Callable[[web.Request, Target, re.Match[str]], Awaitable[web.StreamResponse]]:
        if match.group("reference") is not None:
            return self.manifest
        if match.group("digest") is not None:
            return self.blob
        if match.group("tags") is not None:
            return self.tags
        if match.group("referrers") is not None:
            return self.referrers
        raise Unsupported("this mirror is pull-only: pushes are not accepted")

    async def manifest(
        self, request: web.Request, target: Target, match: re.Match[str]
    ) -> web.StreamResponse:
        """GET/HEAD a manifest by tag or digest."""
        request[KIND] = "manifest"
        reference = parse_reference(match.group("reference"))
        accepted = parse_accept(request.headers.getall("Accept", []))
        answer = await self._service.manifest(
            target, reference, accepted, head=request.method == "HEAD"
        )
        self._count(request, "manifest", answer.result)
        if answer.body is not None:
            source = "upstream" if answer.result == "miss" else "cache"
            self._metrics.served(source, len(answer.body))
        return _manifest_response(answer)

    async def blob(
        self, request: web.Request, target: Target, match: re.Match[str]
    ) -> web.StreamResponse:
        """GET/HEAD a blob: from the cache, or following its download."""
        request[KIND] = "blob"
        digest = parse_digest(match.group("digest"))
        head = request.method == "HEAD"
        answer = await self._service.blob(target, digest, head=head)
        if answer.path is not None:
            handle = blobs.open_cached(answer.path)
            if handle is None:  # evicted between lookup and open: fetch again
                answer = await self._service.blob(target, digest, head=head)
            else:
                self._count(request, "blob", answer.result)
                try:
                    return await blobs.send_file(request, answer, handle, self._metrics)
                finally:
                    os.close(handle)
        self._count(request, "blob", answer.result)
        if head:
            return _head_response(blobs.blob_headers(answer), answer.size)
        if answer.redirect is not None:
            raise web.HTTPTemporaryRedirect(answer.redirect, headers=blobs.blob_headers(answer))
        if answer.key is not None:
            return await blobs.send_stored(request, answer, self._storage, self._metrics)
        return await blobs.send_fill(request, answer, self._metrics)

    async def tags(
        self, request: web.Request, target: Target, match: re.Match[str]
    ) -> web.StreamResponse:
        """GET the tag list, passed through with ``n`` and ``last``."""
        request[KIND] = "tags"
        query = _listing_query(request)
        listing = await self._service.tags(target, query)
        self._count(request, "tags", "miss")
        self._metrics.served("cache" if self._service.offline else "upstream", len(listing.body))
        response = web.Response(status=listing.status, body=listing.body)
        response.content_type = "application/json"
        if listing.link:
            response.headers["Link"] = listing.link
        return response

    async def referrers(
        self, request: web.Request, target: Target, match: re.Match[str]
    ) -> web.StreamResponse:
        """GET the referrers index of a manifest, passed through."""
        request[KIND] = "referrers"
        digest = parse_digest(match.group("referrers"))
        query = {k: v for k, v in request.query.items() if k == "artifactType"}
        listing = await self._service.referrers(target, digest, query)
        self._count(request, "referrers", "miss")
        self._metrics.served("upstream", len(listing.body))
        response = web.Response(status=listing.status, body=listing.body, headers=listing.headers)
        response.content_type = listing.content_type.split(";", 1)[0]
        return response

    def _count(self, request: web.Request, kind: str, result: str) -> None:
        request[CACHE_RESULT] = result
        self._metrics.request(kind, result)


def _manifest_response(answer: ManifestAnswer) -> web.StreamResponse:
    headers = {
        DIGEST_HEADER: answer.digest,
        "ETag": f'"{answer.digest}"',
        "Content-Type": answer.media_type,
    }
    if answer.warning:
        headers["Warning"] = answer.warning
    if answer.body is None:
        return _head_response(headers, answer.size)
    return web.Response(body=answer.body, headers=headers)


def _head_response(headers: dict[str, str], size: int | None) -> web.StreamResponse:
    # A StreamResponse, because web.Response insists on computing
    # Content-Length from a body that a HEAD answer does not have.
    response = web.StreamResponse(headers=headers)
    if size is not None:
        response.content_length = size
    return response


def _listing_query(request: web.Request) -> dict[str, str]:
    query: dict[str, str] = {}
    if "n" in request.query:
        n = parse_count(request.query["n"], max_digits=5)
        if n is None or n > _MAX_PAGE:
            raise QueryInvalid(f"n must be a whole number up to {_MAX_PAGE}, "
                               f"got {request.query['n'][:20]!r}")  # fmt: skip
        query["n"] = str(n)
    if "last" in request.query:
        last = request.query["last"]
        if len(last) > 256:
            raise QueryInvalid("last is too long")
        query["last"] = last
    return query
