"""Who is looking at the UI without ``[auth]``: the holder of the admin token is an admin.

A request that carries ``Authorization: Bearer <admin.token>`` is an admin;
any other is a read-only viewer. With ``[auth]``,
:func:`mirror.routes.front_door.ui_viewer` adds the users the access rules
make admins.
"""

from __future__ import annotations

from aiohttp import web

from mirror.security.challenge import carries_bearer
from mirror.ui.keys import ViewerLookup
from mirror.ui.model import READ_ONLY, Viewer

ADMIN = Viewer("admin", can_admin=True)


def admin_token_viewer(token: str | None) -> ViewerLookup:
    """A lookup that makes the holder of ``token`` an admin (nobody when it is None)."""

    def lookup(request: web.Request) -> Viewer:
        return ADMIN if carries_bearer(request.headers.get("Authorization"), token) else READ_ONLY

    return lookup
