"""The admin API under ``/admin/``: off unless ``admin.token`` is set or a rule grants ``admin``.

Every request needs ``Authorization: Bearer <admin.token>``, or (with
``[auth]``) the credentials of an identity the access rules give ``admin``,
which the client-auth middleware checks (:mod:`mirror.routes.front_door`);
anything else gets a 401 OCI error. Endpoints:

``GET /admin/cache[?upstream=&repository=]``
    totals, then each repository with its tags, sizes and last access; under a
    ``require`` or ``warn`` trust policy, each tag's ``trust``: whether the
    image is signed (from the signatures the cache holds) and by which keys.
``DELETE /admin/cache?[upstream=]&repository=[&tag=]`` or ``?[upstream=&repository=]&digest=``
    purge a repository, a tag, or one manifest or blob; blobs that no
    remaining cached manifest uses go too. 404 when nothing matched.
``POST /admin/gc``
    evict down to the low watermark now.
``POST /admin/cache/reindex``
    re-read the cache's listing into the index, after ``registry-mirror gc``
    or ``verify`` changed the cache beside the running mirror (they call it
    with ``--mirror URL``).

``repository`` is read as a client names an image (:meth:`Router.resolve`):
``medium`` is ``library/medium`` when the default upstream is Docker Hub, and
``ghcr.io/org/app`` names its upstream unless ``upstream`` does. A purge that
names no repository and no digest is a 400 ``UNSUPPORTED``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from mirror.cache.eviction import EvictionReport
from mirror.errors import ManifestUnknown, NameUnknown, QueryInvalid, SelectorRequired, Unauthorized
from mirror.oci import Digest, parse_digest, validate_tag
from mirror.routes.keys import ADMISSION, CACHE, CONFIG, ROUTER
from mirror.routing import Target
from mirror.security.challenge import carries_bearer
from mirror.security.gate import ADMIN_GRANTED
from mirror.upstream.base import Upstream

T = TypeVar("T")


def add_routes(app: web.Application) -> None:
    """Add the admin routes to ``app`` (only when ``admin.token`` is set)."""
    app.router.add_get("/admin/cache", list_cache, name="admin-cache")
    app.router.add_delete("/admin/cache", purge, name="admin-purge")
    app.router.add_post("/admin/gc", gc, name="admin-gc")
    app.router.add_post("/admin/cache/reindex", reindex, name="admin-reindex")


def authorize(request: web.Request) -> None:
    """Raise 401 unless the request is an admin's: the admin token, or an admin of the rules."""
    if request.get(ADMIN_GRANTED, False):
        return  # the client-auth middleware found an identity with the admin action
    if not carries_bearer(request.headers.get("Authorization"), request.app[CONFIG].admin_token):
        raise Unauthorized("the admin API needs its bearer token")


async def list_cache(request: web.Request) -> web.Response:
    """What the cache holds."""
    authorize(request)
    upstream, repository = _selection(request)
    name = upstream.name if upstream is not None else None
    listing = await request.app[CACHE].describe(name, repository)
    await _add_trust(request, listing)
    return web.json_response(listing)


async def _add_trust(request: web.Request, listing: dict[str, Any]) -> None:
    """Each tag's signature status under its trust policy (none under ``allow``)."""
    admission, router = request.app[ADMISSION], request.app[ROUTER]
    for entry in listing["repositories"]:
        upstream = router.upstream_named(entry["upstream"])
        if upstream is None:
            continue  # an upstream the configuration no longer names: no policy applies
        target = Target(upstream, entry["repository"], None)
        for tag in entry["tags"]:
            found = [await admission.cached_status(target, d, tag["tag"]) for d in tag["digests"]]
            statuses = [status for status in found if status is not None]
            if statuses:
                tag["trust"] = statuses


async def purge(request: web.Request) -> web.Response:
    """Remove a repository, tag or digest from the cache."""
    authorize(request)
    selected, repository = _selection(request)
    upstream = selected or request.app[ROUTER].default
    tag = _optional(request, "tag", validate_tag)
    digest: Digest | None = _optional(request, "digest", parse_digest)
    if repository is None and digest is None:
        raise SelectorRequired(
            "purge needs repository (with an optional tag) or digest: "
            "DELETE /admin/cache?repository=NAME[&tag=TAG] or ?digest=DIGEST",
            {"parameters": ["upstream", "repository", "tag", "digest"]},
        )
    if tag is not None and repository is None:
        raise QueryInvalid("tag needs repository")
    report = await request.app[CACHE].purge(upstream.name, repository, tag, digest)
    if not report.keys and not report.tags:
        raise ManifestUnknown("nothing cached matches")
    return web.json_response({"removed": report.as_dict()})


async def gc(request: web.Request) -> web.Response:
    """Enforce the budget now."""
    authorize(request)
    return web.json_response(gc_summary(await request.app[CACHE].gc()))


async def reindex(request: web.Request) -> web.Response:
    """Reconcile the index with the storage: what changed, and what the cache holds now."""
    authorize(request)
    cache = request.app[CACHE]
    result = await cache.reindex()
    index = cache.storage.index
    return web.json_response(
        {"removed": result.removed, "added": result.added,
         "entries": len(index), "size": index.size}
    )  # fmt: skip


def _named_upstream(request: web.Request) -> Upstream | None:
    """The upstream the query names, if it names one."""
    name = request.query.get("upstream")
    if name is None:
        return None
    upstream = request.app[ROUTER].upstream_named(name)
    if upstream is None:
        raise NameUnknown(f"upstream {name[:100]!r} is not configured")
    return upstream


def _selection(request: web.Request) -> tuple[Upstream | None, str | None]:
    """The upstream and repository the query names, by the rule pulls follow."""
    upstream = _named_upstream(request)
    name = request.query.get("repository")
    if name is None:
        return upstream, None
    target = request.app[ROUTER].resolve(name, upstream.name if upstream is not None else None)
    return target.upstream, target.repository


def _optional(request: web.Request, name: str, parse: Callable[[str], T]) -> T | None:
    value = request.query.get(name)
    return parse(value) if value is not None else None


def gc_summary(report: EvictionReport) -> dict[str, int]:
    """An eviction report as the admin API and the CLI give it."""
    return {
        "removed": len(report.removed),
        "removed_bytes": report.removed_bytes,
        "kept_pinned_or_in_use": report.kept,
        "failed": report.failed,
        "size_before": report.size_before,
        "size_after": report.size_after,
    }
