"""The application factory: builds everything from a Config, nothing at import time."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from mirror.cache.manager import CacheManager, track
from mirror.config import Config, UpstreamConfig
from mirror.lifecycle import ShutdownClock
from mirror.metrics import Metrics
from mirror.proxy.blobs import BlobStore
from mirror.proxy.downloads import Downloads
from mirror.proxy.freshness import FreshnessPolicy
from mirror.proxy.listings import Listings
from mirror.proxy.manifests import ManifestStore
from mirror.proxy.tag_records import TagRecords
from mirror.proxy.tags import TagService
from mirror.readiness import ReadinessChecks
from mirror.request_log import request_error_logger
from mirror.routes import admin, ops, v2
from mirror.routes.keys import (
    BLOBS,
    CACHE,
    CONFIG,
    LISTINGS,
    MANIFESTS,
    METRICS,
    READINESS,
    ROUTER,
    TAGS,
)
from mirror.routes.middleware import oci_errors
from mirror.routing import Router
from mirror.storage.base import Storage, StorageError
from mirror.storage.factory import open_storage
from mirror.storage.memo import MemoStorage
from mirror.upstream.base import Upstream
from mirror.upstream.client import UpstreamClient
from mirror.upstream.egress import client_session
from mirror.upstream.offline import OfflineUpstream

__all__ = ["CACHE", "CONFIG", "FILLS", "METRICS", "SHUTDOWN", "STORAGE", "create_app"]

log = logging.getLogger(__name__)

# Keys the handlers do not read (theirs are in mirror.routes.keys): for the
# server's shutdown and for tests.
STORAGE = web.AppKey("storage", Storage)  # the tracked storage the proxy uses
FILLS = web.AppKey("fills", Downloads)  # the running downloads ("fills")
SHUTDOWN = web.AppKey("shutdown", ShutdownClock)


def spool_dir(config: Config) -> Path:
    """Where downloads keep spool files when the backend has no local partials."""
    return config.storage.path / ".spool"


async def _sweep(storage: Storage) -> None:
    try:
        swept = await storage.sweep_partials()
    except StorageError as exc:
        # A cache that is down at start must not stop the mirror: pulls are served through.
        log.warning("cannot sweep partial objects: %s", exc)
        return
    if swept:
        log.info("removed %d partial objects left by an earlier run", swept)


def _upstream(
    config: Config, upstream: UpstreamConfig, session: aiohttp.ClientSession, metrics: Metrics
) -> tuple[Upstream, FreshnessPolicy]:
    """How the proxy reaches one upstream, and how long it trusts that upstream's tags.

    Offline, the upstream answers nothing and every cached record is trusted.
    """
    if config.offline:
        return OfflineUpstream(upstream), FreshnessPolicy.offline()
    return UpstreamClient(upstream, session, metrics), FreshnessPolicy.of(upstream)


async def _resources(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    metrics = app[METRICS]
    backend = await open_storage(config, metrics)  # instrumented: timed and counted
    await _sweep(backend)
    # Everything below reads and writes through the tracked storage, so the
    # cache index sees every commit, hit and delete.
    # Small objects are also kept in memory; the memo sits under the tracker
    # so that every delete (eviction, purge) goes through it and forgets the key,
    # and above the instrumented backend, so a memory hit is not a storage operation.
    storage = await track(MemoStorage(backend, config.cache.memory), config, metrics)
    session = client_session()  # for the configured upstreams' own origins
    wired = {u.name: _upstream(config, u, session, metrics) for u in config.upstreams}
    upstreams = {name: upstream for name, (upstream, _) in wired.items()}
    policies = {name: policy for name, (_, policy) in wired.items()}
    downloads = Downloads(storage, spool_dir(config), config.fill, metrics)
    cache = CacheManager(storage, config, metrics, busy=downloads.is_downloading)
    app[STORAGE], app[FILLS], app[CACHE] = storage, downloads, cache
    app[ROUTER] = Router(config, upstreams)
    _add_proxy(app, storage, downloads, policies)
    app[READINESS] = ReadinessChecks(backend, upstreams, offline=config.offline)  # bare backend
    cache.start()
    metrics.upstreams_configured(upstreams)
    try:
        yield
    finally:
        await downloads.close(app[SHUTDOWN].remaining())
        await cache.close()  # after the downloads: their last commits may start a pass
        await app[TAGS].close()
        await app[MANIFESTS].close()
        for upstream in upstreams.values():
            await upstream.close()
        await session.close()
        await storage.close()


def _add_proxy(
    app: web.Application,
    storage: Storage,
    downloads: Downloads,
    policies: dict[str, FreshnessPolicy],
) -> None:
    """The proxy's stores, one per resource, for the handlers."""
    config, metrics = app[CONFIG], app[METRICS]
    redirect = config.storage.backend == "s3" and config.storage.s3.redirect
    app[BLOBS] = BlobStore(storage, downloads, redirect=redirect)
    app[MANIFESTS] = ManifestStore(storage, metrics)
    records = TagRecords(storage)
    app[TAGS] = TagService(records, app[MANIFESTS], policies)
    app[LISTINGS] = Listings(records, policies)


def create_app(config: Config) -> web.Application:
    """A ready-to-run mirror application for ``config``."""
    app = web.Application(
        middlewares=[oci_errors],
        client_max_size=1024,
        # Malformed HTTP is logged as one short line, rate-limited (not ERROR + traceback).
        handler_args={"logger": request_error_logger()},
    )
    app[CONFIG] = config
    app[METRICS] = Metrics()
    app[SHUTDOWN] = ShutdownClock(config.shutdown_grace)
    v2.add_routes(app)
    if config.admin_token:
        admin.add_routes(app)
    ops.add_routes(app)
    app.cleanup_ctx.append(_resources)
    if config.metrics_listen is not None:
        app.cleanup_ctx.append(ops.separate_listener(*config.metrics_listen))
    return app
