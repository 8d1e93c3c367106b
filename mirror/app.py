"""The application factory: builds everything from a Config, nothing at import time."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from mirror.cache.fills import FillManager
from mirror.cache.manager import CacheManager, track
from mirror.config import Config
from mirror.lifecycle import ShutdownClock
from mirror.metrics import Metrics
from mirror.request_log import request_error_logger
from mirror.routes.admin import AdminHandlers
from mirror.routes.middleware import oci_errors
from mirror.routes.ops import OpsHandlers
from mirror.routes.v2 import V2Handlers
from mirror.routing import Router
from mirror.service import PullService
from mirror.storage.base import Storage, StorageError
from mirror.storage.factory import open_storage
from mirror.storage.memo import MemoStorage
from mirror.upstream.client import UpstreamClient
from mirror.upstream.egress import client_session

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", Config)
METRICS = web.AppKey("metrics", Metrics)
STORAGE = web.AppKey("storage", Storage)
SERVICE = web.AppKey("service", PullService)
FILLS = web.AppKey("fills", FillManager)
ROUTER = web.AppKey("router", Router)
CLIENTS = web.AppKey("clients", dict[str, UpstreamClient])
HANDLERS = web.AppKey("handlers", V2Handlers)
CACHE = web.AppKey("cache", CacheManager)
ADMIN = web.AppKey("admin", AdminHandlers)
OPS = web.AppKey("ops", OpsHandlers)
SHUTDOWN = web.AppKey("shutdown", ShutdownClock)


def spool_dir(config: Config) -> Path:
    """Where fills keep spool files when the backend has no local partials."""
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
    clients = {u.name: UpstreamClient(u, session, metrics) for u in config.upstreams}
    fills = FillManager(storage, spool_dir(config), config.fill, metrics)
    service = PullService(
        storage, fills, metrics, offline=config.offline,
        redirect_blobs=config.storage.backend == "s3" and config.storage.s3.redirect,
    )  # fmt: skip
    router = Router(config, clients)
    cache = CacheManager(storage, config, metrics, busy=fills.is_filling)
    app[CACHE] = cache
    if ADMIN in app:
        app[ADMIN].bind(cache, router)
    cache.start()
    app[STORAGE], app[CLIENTS], app[FILLS], app[SERVICE], app[ROUTER] = (
        storage, clients, fills, service, router,
    )  # fmt: skip
    app[HANDLERS].bind(router, service, storage, metrics)
    app[OPS].bind(backend, clients)  # the probe key stays out of the cache index
    metrics.upstreams_configured(clients)
    try:
        yield
    finally:
        await fills.close(app[SHUTDOWN].remaining())
        await cache.close()  # after the fills: their last commits may start a pass
        await service.close()
        for client in clients.values():
            await client.close()
        await session.close()
        await storage.close()


def create_app(config: Config, metrics: Metrics | None = None) -> web.Application:
    """A ready-to-run mirror application for ``config``."""
    app = web.Application(
        middlewares=[oci_errors],
        client_max_size=1024,
        # Malformed HTTP is logged as one short line, rate-limited (not ERROR + traceback).
        handler_args={"logger": request_error_logger()},
    )
    app[CONFIG] = config
    app[METRICS] = metrics or Metrics()
    app[SHUTDOWN] = ShutdownClock(config.shutdown_grace)
    app[HANDLERS] = V2Handlers()
    app[HANDLERS].register(app)
    if config.admin_token:
        app[ADMIN] = AdminHandlers(config.admin_token)
        app[ADMIN].register(app)
    app[OPS] = OpsHandlers(app[METRICS], offline=config.offline)
    app[OPS].register(app)
    app.cleanup_ctx.append(_resources)
    if config.metrics_listen is not None:
        app.cleanup_ctx.append(app[OPS].separate_listener(*config.metrics_listen))
    return app
