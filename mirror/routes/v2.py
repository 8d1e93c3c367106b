"""The pull side of the OCI distribution API under ``/v2/``: one named route per endpoint.

Repository names have any number of components: aiohttp matches
``{name:.+}`` across slashes and backtracks to the endpoint's fixed tail
(``/manifests/{reference}``, ``/blobs/{digest}``, ...), which cannot contain
a slash. An encoded slash (``%2F``) is no separator: in a reference or a
digest it makes the path no API path. Push endpoints and ``_catalog`` answer
405 ``UNSUPPORTED``; any other path under ``/v2/`` 400 ``NAME_INVALID``.

Handlers take what they need from ``request.app[KEY]`` (:mod:`mirror.routes.keys`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from mirror.accept import parse_accept
from mirror.errors import MirrorError, NameInvalid, QueryInvalid, Unsupported
from mirror.numbers import parse_count
from mirror.oci import (
    API_VERSION,
    API_VERSION_HEADER,
    DIGEST_HEADER,
    NAMESPACE_HEADER,
    OCI_INDEX,
    parse_digest,
    parse_reference,
)
from mirror.proxy.listings import ListingAnswer
from mirror.proxy.manifests import ManifestAnswer
from mirror.proxy.tags import TagRequest
from mirror.routes.access import body_bytes
from mirror.routes.blobs import blob_headers, send_blob
from mirror.routes.keys import (
    ADMISSION,
    BLOBS,
    CACHE_RESULT,
    KIND,
    LISTINGS,
    MANIFESTS,
    METRICS,
    PULLS,
    REFERRERS,
    ROUTER,
    TAGS,
    TARGET,
    TRAFFIC,
)
from mirror.routing import Target

_READ_METHODS = ("GET", "HEAD")
_MAX_PAGE = 10000  # tags per page a client may ask for
_TALLIED = ("manifest", "blob")  # the requests an upstream's hit ratio counts

Endpoint = Callable[[web.Request, Target], Awaitable[web.StreamResponse]]


def add_routes(app: web.Application) -> None:
    """Add the ``/v2/`` routes to ``app``, most specific first."""
    add = app.router.add_route
    add("*", "/v2/", counted(api_version), name="api-version")
    add("*", "/v2", counted(api_version), name="api-version-bare")
    add("*", "/v2/_catalog", counted(catalog), name="catalog")
    add("*", "/v2/{name:.+}/blobs/uploads{upload:(/.*)?}", counted(blob_upload),
        name="blob-upload")  # fmt: skip
    add("*", "/v2/{name:.+}/manifests/{reference}", endpoint("manifest", manifest),
        name="manifest")  # fmt: skip
    add("*", "/v2/{name:.+}/blobs/{digest}", endpoint("blob", blob), name="blob")
    add("*", "/v2/{name:.+}/tags/list", endpoint("tags", tags), name="tags")
    add("*", "/v2/{name:.+}/referrers/{digest}", endpoint("referrers", referrers),
        name="referrers")  # fmt: skip
    add("*", "/v2/{path:.+}", counted(not_an_endpoint), name="no-endpoint")


def counted(handler: Handler) -> Handler:
    """``handler``, counting the requests it fails as ``result="error"``."""

    async def counting(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except MirrorError:
            request.app[METRICS].request(request.get(KIND, "other"), "error")
            raise

    return counting


def routed(request: web.Request) -> Target:
    """The upstream and repository a repository endpoint's name routes to (resolved once)."""
    target = request.get(TARGET)
    if target is None:
        target = request.app[ROUTER].resolve(request.match_info["name"], request.query.get("ns"))
        request[TARGET] = target
    return target


def endpoint(kind: str, handle: Endpoint) -> Handler:
    """A repository endpoint: read methods only, the name routed to an upstream."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.method not in _READ_METHODS:
            raise Unsupported("this mirror is pull-only: pushes are not accepted")
        if any("/" in v for k, v in request.match_info.items() if k != "name"):
            raise NameInvalid("not a distribution API path")  # an encoded slash
        target = routed(request)
        request[KIND] = kind
        response = await handle(request, target)
        if kind in _TALLIED:
            result = request.get(CACHE_RESULT, "-")
            sent = body_bytes(request, response)
            request.app[TRAFFIC].count(target.upstream.name, result, sent)
        response.headers[API_VERSION_HEADER] = API_VERSION
        if target.namespace is not None:
            response.headers[NAMESPACE_HEADER] = target.namespace
        return response

    return counted(handler)


async def api_version(request: web.Request) -> web.StreamResponse:
    """API version check: clients call it before anything else."""
    if request.method not in _READ_METHODS:
        raise Unsupported("this mirror is read-only")
    request[KIND] = "other"
    return web.json_response({}, headers={API_VERSION_HEADER: API_VERSION})


async def catalog(request: web.Request) -> web.StreamResponse:
    """The catalog lists a registry's repositories: a mirror has none of its own."""
    raise Unsupported("a mirror has no catalog")


async def blob_upload(request: web.Request) -> web.StreamResponse:
    """Pushes are not accepted."""
    raise Unsupported("this mirror is pull-only: pushes are not accepted")


async def not_an_endpoint(request: web.Request) -> web.StreamResponse:
    """A path under ``/v2/`` that names no endpoint."""
    raise NameInvalid("not a distribution API path")


async def manifest(request: web.Request, target: Target) -> web.StreamResponse:
    """GET/HEAD a manifest by tag or digest."""
    reference = parse_reference(request.match_info["reference"])
    head = request.method == "HEAD"
    if reference.digest is not None:
        answer = await request.app[MANIFESTS].get(target, reference.digest)
    else:
        accepted = parse_accept(request.headers.getall("Accept", []))
        tag_request = TagRequest(target, str(reference), accepted, head)
        answer = await request.app[TAGS].manifest(tag_request)
    tag = None if reference.digest is not None else str(reference)
    await request.app[ADMISSION].admit(target, answer, tag)
    if tag is not None:
        # A pull of the repository: every client resolves a tag first (containerd
        # with HEAD, the others with GET); the digests that follow are the same pull.
        # Counted once admitted: a refused pull is no pull.
        request.app[PULLS].record(target.upstream.name, target.repository)
    _count(request, "manifest", answer.result)
    headers = _manifest_headers(answer)
    if head or answer.body is None:
        return _head_response(headers, answer.size)
    source = "upstream" if answer.result == "miss" else "cache"
    request.app[METRICS].served(source, len(answer.body))
    return web.Response(body=answer.body, headers=headers)


async def blob(request: web.Request, target: Target) -> web.StreamResponse:
    """GET/HEAD a blob: from the cache, or following its download."""
    digest = parse_digest(request.match_info["digest"])
    store = request.app[BLOBS]
    if request.method == "HEAD":
        found = await store.head(target, digest)
        _count(request, "blob", found.result)
        return _head_response(blob_headers(found.digest), found.size)
    source = await store.get(target, digest)
    _count(request, "blob", source.result)
    return await send_blob(request, source, request.app[METRICS])


async def tags(request: web.Request, target: Target) -> web.StreamResponse:
    """GET the tag list, passed through with ``n`` and ``last``."""
    answer = await request.app[LISTINGS].tags(target, _listing_query(request))
    _count(request, "tags", answer.result)
    response = _listing_response(request, answer)
    response.content_type = "application/json"
    if answer.listing.link:
        response.headers["Link"] = answer.listing.link
    if answer.warning:
        response.headers["Warning"] = answer.warning
    return response


async def referrers(request: web.Request, target: Target) -> web.StreamResponse:
    """GET the referrers index of a manifest: from the cache, never a 404."""
    digest = parse_digest(request.match_info["digest"])
    artifact_type = request.query.get("artifactType")
    answer = await request.app[REFERRERS].answer(target, digest)
    _count(request, "referrers", answer.result)
    body = answer.index(artifact_type)
    request.app[METRICS].served("upstream" if answer.result == "miss" else "cache", len(body))
    response = web.Response(body=body, headers={"Content-Type": OCI_INDEX})
    if artifact_type is not None:
        response.headers["OCI-Filters-Applied"] = "artifactType"
    if answer.warning:
        response.headers["Warning"] = answer.warning
    return response


def _listing_response(request: web.Request, answer: ListingAnswer) -> web.Response:
    request.app[METRICS].served(answer.source, len(answer.listing.body))
    return web.Response(status=answer.listing.status, body=answer.listing.body)


def _count(request: web.Request, kind: str, result: str) -> None:
    request[CACHE_RESULT] = result
    request.app[METRICS].request(kind, result)


def _manifest_headers(answer: ManifestAnswer) -> dict[str, str]:
    headers = {
        DIGEST_HEADER: answer.digest,
        "ETag": f'"{answer.digest}"',
        "Content-Type": answer.media_type,
    }
    if answer.warning:
        headers["Warning"] = answer.warning
    return headers


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
