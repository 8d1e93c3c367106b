"""What the UI's handlers read from ``request.app``, and how they learn who is asking."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from mirror.ui.model import CacheActions, CacheView, Viewer
from mirror.ui.pull_commands import MirrorAddress
from mirror.ui.render import Renderer


class ViewerLookup(Protocol):
    """Who made a request: the client-auth layer knows, the UI only asks."""

    def __call__(self, request: web.Request) -> Viewer:
        """The viewer of ``request``."""
        ...


VIEW = web.AppKey("ui_view", CacheView)
ACTIONS = web.AppKey("ui_actions", CacheActions)  # absent: a UI without admin actions
VIEWER = web.AppKey("ui_viewer", ViewerLookup)
RENDERER = web.AppKey("ui_renderer", Renderer)
ADDRESS = web.AppKey("ui_address", MirrorAddress)  # absent: pull commands use the Host header
