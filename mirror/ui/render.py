"""Templates and static assets of the UI, loaded once per application.

Templates are Jinja2 with autoescaping on for every template, so every value
a page shows is HTML-escaped unless a template says otherwise (none does);
:class:`jinja2.StrictUndefined` turns a misspelt variable into an error
instead of an empty string. Static assets are read into memory at start and
served under a path holding a hash of their content, so they can be cached
forever: a new version has a new URL.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jinja2
from aiohttp import web
from markupsafe import Markup

from mirror.ui import format as fmt
from mirror.ui.model import Viewer

_CONTENT_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}


@dataclass(frozen=True, slots=True)
class Asset:
    """A static file: its bytes, content type and content hash."""

    body: bytes
    content_type: str
    version: str


def load_assets() -> dict[str, Asset]:
    """Every file of ``mirror/ui/static``, by name."""
    assets = {}
    for entry in resources.files("mirror.ui").joinpath("static").iterdir():
        suffix = entry.name[entry.name.rfind(".") :]
        if suffix not in _CONTENT_TYPES:
            continue
        body = entry.read_bytes()
        version = hashlib.sha256(body).hexdigest()[:16]
        assets[entry.name] = Asset(body, _CONTENT_TYPES[suffix], version)
    return assets


def template_environment() -> jinja2.Environment:
    """The Jinja2 environment of the pages: autoescaped, strict, with the UI's filters."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("mirror.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(size=fmt.size, count=fmt.count, percent=fmt.percent, iso=fmt.iso,
                       short_digest=fmt.short_digest)  # fmt: skip
    env.tests["safe_url"] = fmt.is_web_url
    return env


class Renderer:
    """Renders pages with what every page needs: URLs, assets, the viewer, the time."""

    def __init__(self) -> None:
        self.env = template_environment()
        # Compiled now, so that no page request pays for it (and a broken one fails at start).
        for name in self.env.list_templates(extensions=["html"]):
            self.env.get_template(name)
        self.assets = load_assets()

    def page(
        self, request: web.Request, template: str, viewer: Viewer, status: int = 200,
        **context: Any,
    ) -> web.Response:  # fmt: skip
        """A rendered page as an HTML response."""
        html = self.env.get_template(template).render(self._globals(request, viewer), **context)
        return web.Response(status=status, text=html, content_type="text/html", charset="utf-8")

    def _globals(self, request: web.Request, viewer: Viewer) -> Mapping[str, Any]:
        router = request.app.router
        now = time.time()

        def url(route: str, query: Mapping[str, str | int] | None = None, /, **parts: str) -> str:
            built = router[route].url_for(**parts)
            return str(built.with_query(query) if query else built)

        def asset(name: str) -> str:
            return url("ui.static", version=self.assets[name].version, name=name)

        def when(timestamp: float | None) -> Markup:
            # Markup.format escapes its arguments.
            if timestamp is None:
                return Markup("never")
            iso = fmt.iso(timestamp)
            return Markup('<time datetime="{}" title="{}">{}</time>').format(
                iso, iso, fmt.ago(timestamp, now)
            )

        return {"url": url, "asset": asset, "time": when, "viewer": viewer, "section": None}
