"""Typed per-request storage shared by the routes, the middleware and the access log."""

from __future__ import annotations

from aiohttp import web

# What the request was about (manifest, blob, tags, referrers, other).
KIND = web.RequestKey("kind", str)
# How the cache answered it (hit, miss, stale, revalidated, error).
CACHE_RESULT = web.RequestKey("cache_result", str)
# Body bytes a blob sender wrote itself (sendfile bypasses aiohttp's own count).
BODY_BYTES = web.RequestKey("body_bytes", int)
