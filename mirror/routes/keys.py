"""Typed keys: what the app holds for the handlers, and what a request carries.

Handlers read their dependencies with ``request.app[KEY]``; the app builds
them in its cleanup context (:mod:`mirror.app`), before the first request.
"""

from __future__ import annotations

from aiohttp import web

from mirror.cache.manager import CacheManager
from mirror.config import Config
from mirror.metrics import Metrics
from mirror.proxy.admission import Admission
from mirror.proxy.blobs import BlobStore
from mirror.proxy.listings import Listings
from mirror.proxy.manifests import ManifestStore
from mirror.proxy.referrers import Referrers
from mirror.proxy.tags import TagService
from mirror.readiness import ReadinessChecks
from mirror.routing import Router, Target
from mirror.stats.pulls import PullStats
from mirror.stats.traffic import Traffic

CONFIG = web.AppKey("config", Config)
METRICS = web.AppKey("metrics", Metrics)
ROUTER = web.AppKey("router", Router)
BLOBS = web.AppKey("blobs", BlobStore)
MANIFESTS = web.AppKey("manifests", ManifestStore)
TAGS = web.AppKey("tags", TagService)
LISTINGS = web.AppKey("listings", Listings)
REFERRERS = web.AppKey("referrers", Referrers)
ADMISSION = web.AppKey("admission", Admission)
CACHE = web.AppKey("cache", CacheManager)
READINESS = web.AppKey("readiness", ReadinessChecks)
PULLS = web.AppKey("pulls", PullStats)  # pull counts per repository (the web UI's)
TRAFFIC = web.AppKey("traffic", Traffic)  # requests, hits, bytes saved per upstream

# What the request was about (manifest, blob, tags, referrers, other).
KIND = web.RequestKey("kind", str)
# How the cache answered it (hit, miss, stale, revalidated, error).
CACHE_RESULT = web.RequestKey("cache_result", str)
# Where a repository endpoint's name routes (set once: by the client-auth gate, or the handler).
TARGET = web.RequestKey("target", Target)
# Body bytes a blob sender wrote itself (sendfile bypasses aiohttp's own count).
BODY_BYTES = web.RequestKey("body_bytes", int)
