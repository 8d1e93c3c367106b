"""The application factory: builds everything from a Config, nothing at import time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from mirror.cache.manager import CacheManager, track
from mirror.config import Config, UpstreamConfig
from mirror.lifecycle import ShutdownClock
from mirror.metrics import Metrics
from mirror.proxy.admission import Admission
from mirror.proxy.blobs import BlobStore
from mirror.proxy.downloads import Downloads
from mirror.proxy.freshness import FreshnessPolicy
from mirror.proxy.links import RepositoryLinks
from mirror.proxy.listings import Listings
from mirror.proxy.manifests import ManifestStore
from mirror.proxy.referrers import Referrers
from mirror.proxy.signatures import SignatureStores
from mirror.proxy.tag_records import TagRecords
from mirror.proxy.tags import TagService
from mirror.readiness import ReadinessChecks
from mirror.request_log import request_error_logger
from mirror.routes import admin, admin_import, front_door, ops, v2
from mirror.routes.keys import (
    ADMISSION,
    BLOBS,
    CACHE,
    CONFIG,
    LISTINGS,
    MANIFESTS,
    METRICS,
    PULLS,
    READINESS,
    REFERRERS,
    ROUTER,
    TAGS,
    TRAFFIC,
)
from mirror.routes.middleware import oci_errors
from mirror.routing import Router
from mirror.stats.flusher import Intervals, keep_pull_stats
from mirror.stats.pulls import PullStats
from mirror.stats.traffic import Traffic
from mirror.storage.base import Storage, StorageError
from mirror.storage.factory import open_storage
from mirror.storage.memo import MemoStorage
from mirror.trust import TrustVerifier
from mirror.ui.keys import ACTIONS, VIEW
from mirror.ui.live import LiveActions, LiveView
from mirror.ui.signatures import signature_lookup
from mirror.ui.site import create_ui_app, mount_ui
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
UI = web.AppKey("ui", web.Application)  # the web UI, mounted at /ui/
PULL_STATS_INTERVALS = web.AppKey("pull_stats_intervals", Intervals)


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
    health = {n: u.health for n, u in upstreams.items() if isinstance(u, UpstreamClient)}
    app[READINESS] = ReadinessChecks(
        backend, upstreams, health,  # the bare backend: the probe key stays out of the index
        offline=config.offline, require_upstream=config.readiness_require_upstream,
    )  # fmt: skip
    await _load_pins(cache)
    cache.start()
    metrics.upstreams_configured(upstreams)
    try:
        yield
    finally:
        await downloads.close(app[SHUTDOWN].remaining())
        await cache.close()  # after the downloads: their last commits may start a pass
        await app[REFERRERS].close()
        await app[TAGS].close()
        await app[MANIFESTS].close()
        for upstream in upstreams.values():
            await upstream.close()
        await session.close()
        await storage.close()


async def _load_pins(cache: CacheManager) -> None:
    try:
        await cache.load_pins()
    except StorageError as exc:
        log.warning("cannot read the pins set from the web UI: %s", exc)


async def _pull_stats(app: web.Application) -> AsyncIterator[None]:
    """Pull counts: loaded at start, kept in storage by a background task, flushed at stop.

    The web UI's view is bound here too, and reads the cache's manifests and tag
    records once in the background, so that its first page need not wait as long.
    """
    stats = PullStats(app[CACHE].storage.inner)  # under the tracker: "_stats/" is not cached
    try:
        await stats.load()
    except StorageError as exc:
        log.warning("cannot read pull counts (counting from zero meanwhile): %s", exc)
    app[PULLS] = stats
    catalog = _bind_ui(app).catalog
    tasks = [asyncio.create_task(keep_pull_stats(stats, app[METRICS], app[PULL_STATS_INTERVALS])),
             asyncio.create_task(catalog.refresh())]  # fmt: skip
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if not await stats.flush():
            app[METRICS].pull_stats_error("flush")


def _bind_ui(app: web.Application) -> LiveView:
    """The web UI's view of what was just built; admin actions only where admins can exist."""
    view = LiveView(
        app[CONFIG], app[CACHE], app[FILLS], app[METRICS], app[TRAFFIC], app[PULLS],
        signature_lookup(app[ADMISSION]),
    )  # fmt: skip
    app[UI][VIEW] = view
    config = app[CONFIG]
    if config.admin_token or front_door.grants_admin(config.security.auth):
        app[UI][ACTIONS] = LiveActions(app[CACHE])
    return view


def _add_proxy(
    app: web.Application,
    storage: Storage,
    downloads: Downloads,
    policies: dict[str, FreshnessPolicy],
) -> None:
    """The proxy's stores, one per resource, for the handlers."""
    config, metrics = app[CONFIG], app[METRICS]
    redirect = config.storage.backend == "s3" and config.storage.s3.redirect
    links = RepositoryLinks(storage)  # blob access follows repositories
    app[BLOBS] = BlobStore(storage, downloads, links, redirect=redirect)
    app[MANIFESTS] = ManifestStore(storage, metrics, links)
    records = TagRecords(storage)
    app[TAGS] = TagService(records, app[MANIFESTS], policies)
    app[LISTINGS] = Listings(records, policies)
    app[REFERRERS] = Referrers(records, app[MANIFESTS], app[TAGS], policies)
    # The verifier reads signature blobs itself: from a store that never redirects.
    signature_blobs = BlobStore(storage, downloads, links, redirect=False)
    stores = SignatureStores(app[TAGS], app[MANIFESTS], signature_blobs, app[REFERRERS], records)
    app[ADMISSION] = Admission(TrustVerifier(config.trust), stores, metrics)


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
    if config.admin_token or front_door.grants_admin(config.security.auth):
        admin.add_routes(app)
        admin_import.add_routes(app)
    ops.add_routes(app)
    app[TRAFFIC] = Traffic()
    app[PULL_STATS_INTERVALS] = Intervals()
    gate = front_door.build_gate(config, app[METRICS])
    app[UI] = create_ui_app(None, front_door.ui_viewer(gate, config.admin_token))
    mount_ui(app, app[UI])
    # Client authentication and the rate limit, inside oci_errors ([auth], [rate_limit]).
    app.middlewares.extend(front_door.install(app, config, app[METRICS], gate))
    app.cleanup_ctx.append(_resources)
    app.cleanup_ctx.append(_pull_stats)  # after: it writes to the storage opened there
    if config.metrics_listen is not None:
        app.cleanup_ctx.append(ops.separate_listener(*config.metrics_listen))
    return app
