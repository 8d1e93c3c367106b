"""``PUT /admin/import``: an OCI image layout, as a tar stream, into the running mirror's cache.

The admin API's bearer token is required (``registry-mirror import SRC
--mirror URL`` sends it). The body is a tar stream, plain, gzip or zstd, as
``registry-mirror export`` writes it (any tar of a layout works: members that
come before the manifests naming them are spooled to ``$TMPDIR``). It is read
once, as it arrives: every object is hashed and checked before the cache's
storage writer commits it, exactly as the ``import`` command does, through
the mirror's own tracked storage, so its index, eviction and metrics see
every object at once. Query parameters: ``upstream`` and ``repository`` (how
to name entries without the mirror's annotations), ``allow_evict=1``.

The body is bounded by ``cache.max_size`` when a budget is set: an import can
never be larger. One import runs at a time, and a client that sends nothing
for ``fill.idle_timeout`` is cut (its body ends as a broken stream): the tar
reader waits for the body in a worker thread, and worker threads are what
every disk read of the mirror runs in. Answers: 200 with the import's report
(its ``ok`` says whether every image was imported); 400
``BLOB_UPLOAD_INVALID`` for a body that is no layout, or a delta whose base
the cache lacks; 413 ``SIZE_INVALID`` for an import past the budget (without
``allow_evict``) or a body past the bound; 429 ``TOOMANYREQUESTS`` while
another import runs; 503 ``UNAVAILABLE`` when the cache's storage refuses a
manifest or tag record (a blob it refuses is named in the report instead).
"""

from __future__ import annotations

import asyncio
import io
import weakref
from typing import Any

from aiohttp import StreamReader, web

from mirror.airgap.commands import ImportRequest, import_into_cache
from mirror.airgap.errors import AirgapError, BudgetExceeded, CacheFailed
from mirror.airgap.names import Defaults
from mirror.airgap.reader import TarLayout
from mirror.errors import (
    CacheUnavailable,
    ImportTooLarge,
    LayoutInvalid,
    NameUnknown,
    TooManyRequests,
)
from mirror.oci import validate_name
from mirror.progress import make_reporter
from mirror.routes.admin import authorize
from mirror.routes.keys import CACHE, CONFIG

_READ = 1024 * 1024
# One lock per app: an import holds a worker thread while it waits for the body.
_RUNNING: weakref.WeakKeyDictionary[web.Application, asyncio.Lock] = weakref.WeakKeyDictionary()


def add_routes(app: web.Application) -> None:
    """Add ``PUT /admin/import`` (with the other admin routes)."""
    app.router.add_put("/admin/import", import_layout, name="admin-layouts")


async def import_layout(request: web.Request) -> web.Response:
    """Import the body's layout, one import at a time; the import's report as JSON."""
    authorize(request)
    wanted = ImportRequest("request body", _defaults(request), _flag(request, "allow_evict"))
    running = _RUNNING.setdefault(request.app, asyncio.Lock())
    if running.locked():
        raise TooManyRequests("another import is running; send this one when it has ended", 60)
    async with running:
        return await _import(request, wanted)


async def _import(request: web.Request, wanted: ImportRequest) -> web.Response:
    config = request.app[CONFIG]
    loop = asyncio.get_running_loop()
    body = _BodyReader(request.content, loop, config.cache.max_size, config.fill.idle_timeout)
    layout = TarLayout("request body", io.BufferedReader(body, _READ), None)
    reporter = make_reporter(quiet=True)  # problems go to the mirror's standard error
    storage = request.app[CACHE].storage
    try:
        report = await import_into_cache(storage, config, layout, wanted, reporter)
    except AirgapError as exc:
        if body.too_large:
            raise ImportTooLarge(body.too_large) from None
        if isinstance(exc, BudgetExceeded):
            raise ImportTooLarge(str(exc)) from None
        if isinstance(exc, CacheFailed):
            raise CacheUnavailable(str(exc)) from None
        raise LayoutInvalid(str(exc)) from None
    if body.too_large:
        raise ImportTooLarge(body.too_large, report.to_json())
    return web.json_response(report.to_json())


def _defaults(request: web.Request) -> Defaults:
    upstream = request.query.get("upstream")
    if upstream is not None and request.app[CONFIG].upstream(upstream) is None:
        raise NameUnknown(f"upstream {upstream[:100]!r} is not configured")
    repository = request.query.get("repository")
    return Defaults(upstream, validate_name(repository) if repository is not None else None)


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true", "yes")


class _BodyReader(io.RawIOBase):
    """The request body as a file the tar reader reads in its worker threads.

    Each read waits, from the worker thread, for the next bytes the event loop
    receives. Past ``limit`` bytes (when set) the body ends as a broken
    stream: what arrived whole imports, the rest is missing by name.
    """

    def __init__(
        self, content: StreamReader, loop: asyncio.AbstractEventLoop, limit: int, idle: float
    ) -> None:
        self.content = content
        self.loop = loop
        self.limit = limit
        self.idle = idle
        self.received = 0
        #: why the body was cut, when it passed ``limit``
        self.too_large = ""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        reading = asyncio.wait_for(self.content.read(len(view)), self.idle)
        future = asyncio.run_coroutine_threadsafe(reading, self.loop)
        try:
            chunk = future.result()
        except Exception as exc:  # the client went away or went quiet: a "broken stream"
            raise EOFError(f"the request body ended: {exc or type(exc).__name__}") from None
        self.received += len(chunk)
        if self.limit and self.received > self.limit:
            self.too_large = f"the body is larger than cache.max_size ({self.limit} bytes)"
            raise EOFError(self.too_large)
        view[: len(chunk)] = chunk
        return len(chunk)
