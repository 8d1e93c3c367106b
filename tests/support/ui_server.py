"""Serve the UI on a real loopback socket, inside an app like the mirror's.

The parent application has the mirror's OCI error middleware, as the real
one will, so the tests see how the UI's own HTML errors and headers hold up
under it. Who is asking is told by a bearer token, as a client-auth layer
would: :data:`ADMIN_TOKEN` is an admin, :data:`PULL_TOKEN` a pull user, no
token is anonymous (read-only).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from mirror.routes.middleware import oci_errors
from mirror.ui.model import READ_ONLY, CacheActions, CacheView, Viewer
from mirror.ui.site import create_ui_app, mount_ui

ADMIN_TOKEN = "admin-token"
PULL_TOKEN = "pull-token"
_VIEWERS = {ADMIN_TOKEN: Viewer("ops", can_admin=True), PULL_TOKEN: Viewer("ci", can_admin=False)}


def viewer_by_token(request: web.Request) -> Viewer:
    """The viewer a request's bearer token names; read-only without one."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return _VIEWERS.get(token, READ_ONLY) if scheme.lower() == "bearer" else READ_ONLY


def ui_parent_app(view: CacheView, actions: CacheActions | None) -> web.Application:
    """An application with the mirror's error middleware and the UI under /ui/."""
    app = web.Application(middlewares=[oci_errors], client_max_size=1024)
    mount_ui(app, create_ui_app(view, viewer_by_token, actions))
    return app


@asynccontextmanager
async def serve_ui(view: CacheView, actions: CacheActions | None = None) -> AsyncIterator[str]:
    """The UI on 127.0.0.1; yields the base URL (``http://127.0.0.1:PORT``)."""
    runner = web.AppRunner(ui_parent_app(view, actions), handle_signals=False, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()
