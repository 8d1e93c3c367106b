"""The UI as an aiohttp sub-application: routes, headers, HTML errors, static assets.

:func:`create_ui_app` takes what the pages read (a :class:`CacheView`), what
admins may change (:class:`CacheActions`, or None for a read-only UI) and how
to tell who is asking (a :class:`ViewerLookup`); :func:`mount_ui` adds it to
the mirror under ``/ui/``. Handlers read all three from ``request.app``.

Every answer carries a Content-Security-Policy that allows scripts, styles,
images and fetches from the mirror itself only, and no inline script or
style, so text an upstream controls cannot run even if a template forgot to
escape it. Pages and their JSON are ``no-store`` (they change, and they may
show what only an admin should see); static assets are immutable under a
path that holds their hash. Errors inside ``/ui/`` are HTML pages, not the
OCI JSON documents of the registry API.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from mirror.ui import actions, pages
from mirror.ui.errors import PageError, error_page
from mirror.ui.keys import ACTIONS, ADDRESS, RENDERER, VIEW, VIEWER, ViewerLookup
from mirror.ui.model import CacheActions, CacheView
from mirror.ui.pull_commands import MirrorAddress
from mirror.ui.render import Renderer

log = logging.getLogger(__name__)

PREFIX = "/ui"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
IMMUTABLE = "public, max-age=31536000, immutable"


def create_ui_app(
    view: CacheView | None, viewer: ViewerLookup, admin_actions: CacheActions | None = None,
    *, address: MirrorAddress | None = None,
) -> web.Application:  # fmt: skip
    """The UI sub-application; ``address`` overrides the request's Host in pull commands.

    ``view`` None: set ``app[VIEW]`` (and ``app[ACTIONS]``) before the first
    request, as the mirror does once it has opened its cache at start.
    """
    app = web.Application(middlewares=[ui_answers])
    if view is not None:
        app[VIEW] = view
    app[VIEWER] = viewer
    app[RENDERER] = Renderer()
    if admin_actions is not None:
        app[ACTIONS] = admin_actions
    if address is not None:
        app[ADDRESS] = address
    pages.register(app)
    actions.register(app)
    app.router.add_get("/static/{version}/{name}", static_asset, name="ui.static")
    return app


def mount_ui(app: web.Application, ui: web.Application) -> None:
    """Serve ``ui`` under ``/ui/`` of the mirror (``/ui`` redirects there)."""
    # Before the sub-application: its prefix would take "/ui" too, and answer 404.
    app.router.add_get(PREFIX, _to_index, name="ui.bare")
    app.add_subapp(PREFIX, ui)


async def _to_index(request: web.Request) -> web.Response:
    return web.Response(status=308, headers={"Location": f"{PREFIX}/"})


async def static_asset(request: web.Request) -> web.Response:
    """A static file, if the version in its path is its current hash."""
    asset = request.app[RENDERER].assets.get(request.match_info["name"])
    if asset is None or asset.version != request.match_info["version"]:
        raise PageError(404, "There is no such file.")
    return web.Response(body=asset.body, content_type=asset.content_type,
                        headers={"Cache-Control": IMMUTABLE})  # fmt: skip


@web.middleware
async def ui_answers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Security headers on every answer; HTML pages for errors; server time."""
    started = time.perf_counter()
    try:
        response = await handler(request)
    except PageError as exc:
        response = error_page(request, exc.status, exc.message)
    except web.HTTPException as exc:  # aiohttp's own: no such route, method, body too large
        response = error_page(request, exc.status)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        response = error_page(request, 500)
    response.headers.update(SECURITY_HEADERS)
    response.headers.setdefault("Cache-Control", "no-store")
    elapsed = (time.perf_counter() - started) * 1000
    response.headers["Server-Timing"] = f"app;dur={elapsed:.1f}"
    return response
