"""The admin API under ``/admin/``: off unless ``admin.token`` is set.

Every request needs ``Authorization: Bearer <admin.token>``; anything else
gets a 401 OCI error. Endpoints:

``GET /admin/cache[?upstream=&repository=]``
    totals, then each repository with its tags, sizes and last access.
``DELETE /admin/cache?[upstream=]&repository=[&tag=]`` or ``?[upstream=&repository=]&digest=``
    purge a repository, a tag, or one manifest or blob; blobs that no
    remaining cached manifest uses go too. 404 when nothing matched.
``POST /admin/gc``
    evict down to the low watermark now.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import TypeVar

from aiohttp import web

from mirror.cache.eviction import EvictionReport
from mirror.docker_hub import official_repository
from mirror.errors import ManifestUnknown, NameUnknown, QueryInvalid, Unauthorized
from mirror.oci import Digest, parse_digest, validate_name, validate_tag
from mirror.routes.keys import CACHE, CONFIG, ROUTER
from mirror.upstream.base import Upstream

T = TypeVar("T")


def add_routes(app: web.Application) -> None:
    """Add the admin routes to ``app`` (only when ``admin.token`` is set)."""
    app.router.add_get("/admin/cache", list_cache, name="admin-cache")
    app.router.add_delete("/admin/cache", purge, name="admin-purge")
    app.router.add_post("/admin/gc", gc, name="admin-gc")


def _authorize(request: web.Request) -> None:
    token = (request.app[CONFIG].admin_token or "").encode()
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # Constant-time compare: the answer time must not reveal how much matched.
    if (
        not token
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(given.strip().encode(), token)
    ):
        raise Unauthorized("the admin API needs its bearer token")


async def list_cache(request: web.Request) -> web.Response:
    """What the cache holds."""
    _authorize(request)
    upstream = _named_upstream(request)
    repository = _repository(request, upstream)
    name = upstream.name if upstream is not None else None
    return web.json_response(await request.app[CACHE].describe(name, repository))


async def purge(request: web.Request) -> web.Response:
    """Remove a repository, tag or digest from the cache."""
    _authorize(request)
    upstream = _named_upstream(request) or request.app[ROUTER].default
    repository = _repository(request, upstream)
    tag = _optional(request, "tag", validate_tag)
    digest: Digest | None = _optional(request, "digest", parse_digest)
    if repository is None and digest is None:
        raise QueryInvalid("purge needs repository (with an optional tag) or digest")
    if tag is not None and repository is None:
        raise QueryInvalid("tag needs repository")
    report = await request.app[CACHE].purge(upstream.name, repository, tag, digest)
    if not report.keys and not report.tags:
        raise ManifestUnknown("nothing cached matches")
    return web.json_response({"removed": report.as_dict()})


async def gc(request: web.Request) -> web.Response:
    """Enforce the budget now."""
    _authorize(request)
    return web.json_response(gc_summary(await request.app[CACHE].gc()))


def _named_upstream(request: web.Request) -> Upstream | None:
    """The upstream the query names, if it names one."""
    name = request.query.get("upstream")
    if name is None:
        return None
    upstream = request.app[ROUTER].upstream_named(name)
    if upstream is None:
        raise NameUnknown(f"upstream {name[:100]!r} is not configured")
    return upstream


def _repository(request: web.Request, upstream: Upstream | None) -> str | None:
    repository = _optional(request, "repository", validate_name)
    if repository is None or upstream is None:
        return repository
    return official_repository(repository, docker_hub=upstream.config.is_docker_hub)


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
