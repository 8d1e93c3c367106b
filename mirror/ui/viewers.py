"""Who is looking at the UI, until the front door (issue 15) says so: the admin token.

A request that carries ``Authorization: Bearer <admin.token>`` is an admin;
any other is a read-only viewer. This is the :class:`ViewerLookup` the
mirror mounts the UI with; once client authentication knows its callers,
a lookup of its own takes this one's place (``create_ui_app`` takes any).
"""

from __future__ import annotations

import hmac

from aiohttp import web

from mirror.ui.keys import ViewerLookup
from mirror.ui.model import READ_ONLY, Viewer

ADMIN = Viewer("admin", can_admin=True)


def admin_token_viewer(token: str | None) -> ViewerLookup:
    """A lookup that makes the holder of ``token`` an admin (nobody when it is None)."""
    expected = token.encode() if token else None

    def lookup(request: web.Request) -> Viewer:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if expected is None or scheme.lower() != "bearer":
            return READ_ONLY
        # Constant time: the answer must not tell how much of a guess matched.
        return ADMIN if hmac.compare_digest(given.strip().encode(), expected) else READ_ONLY

    return lookup
