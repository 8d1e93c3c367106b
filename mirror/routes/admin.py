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
from mirror.cache.manager import CacheManager
from mirror.docker_hub import official_repository
from mirror.errors import ManifestUnknown, NameUnknown, QueryInvalid, Unauthorized
from mirror.oci import Digest, parse_digest, validate_name, validate_tag
from mirror.routing import Router
from mirror.upstream.client import UpstreamClient

T = TypeVar("T")


class AdminHandlers:
    """Admin request handlers, bound to the app's cache once it has started."""

    _cache: CacheManager
    _router: Router

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def bind(self, cache: CacheManager, router: Router) -> None:
        """Give the handlers the running cache."""
        self._cache = cache
        self._router = router

    def register(self, app: web.Application) -> None:
        """Add the admin routes to ``app``."""
        app.router.add_get("/admin/cache", self.list_cache)
        app.router.add_delete("/admin/cache", self.purge)
        app.router.add_post("/admin/gc", self.gc)

    def _authorize(self, request: web.Request) -> None:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # Constant-time compare: the answer time must not reveal how much matched.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                                 self._token):  # fmt: skip
            raise Unauthorized("the admin API needs its bearer token")

    async def list_cache(self, request: web.Request) -> web.Response:
        """What the cache holds."""
        self._authorize(request)
        upstream = self._upstream(request, required=False)
        repository = self._repository(request, upstream)
        name = upstream.name if upstream is not None else None
        return web.json_response(await self._cache.describe(name, repository))

    async def purge(self, request: web.Request) -> web.Response:
        """Remove a repository, tag or digest from the cache."""
        self._authorize(request)
        upstream = self._upstream(request, required=True)
        assert upstream is not None
        repository = self._repository(request, upstream)
        tag = _optional(request, "tag", validate_tag)
        digest: Digest | None = _optional(request, "digest", parse_digest)
        if repository is None and digest is None:
            raise QueryInvalid("purge needs repository (with an optional tag) or digest")
        if tag is not None and repository is None:
            raise QueryInvalid("tag needs repository")
        report = await self._cache.purge(upstream.name, repository, tag, digest)
        if not report.keys and not report.tags:
            raise ManifestUnknown("nothing cached matches")
        return web.json_response({"removed": report.as_dict()})

    async def gc(self, request: web.Request) -> web.Response:
        """Enforce the budget now."""
        self._authorize(request)
        return web.json_response(gc_summary(await self._cache.gc()))

    def _upstream(self, request: web.Request, *, required: bool) -> UpstreamClient | None:
        name = request.query.get("upstream")
        if name is None:
            return self._router.upstream_named(self._cache.default_upstream) if required else None
        upstream = self._router.upstream_named(name)
        if upstream is None:
            raise NameUnknown(f"upstream {name[:100]!r} is not configured")
        return upstream

    def _repository(self, request: web.Request, upstream: UpstreamClient | None) -> str | None:
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
