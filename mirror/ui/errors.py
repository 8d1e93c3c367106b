"""Errors inside ``/ui/`` are HTML pages in the UI's layout, never OCI JSON or a traceback."""

from __future__ import annotations

from aiohttp import web

from mirror.ui.keys import RENDERER, VIEWER

_TITLES = {400: "Bad request", 403: "Not allowed", 404: "Not found", 405: "Method not allowed",
           413: "Request too large", 500: "Internal error", 503: "Try again"}  # fmt: skip
_MESSAGES = {
    404: "There is no page at this address.",
    405: "This address does not take that method.",
    413: "The form sent is larger than the mirror accepts.",
    500: "The mirror failed to show this page; its log says why.",
}


class PageError(Exception):
    """A request the UI cannot answer with the page asked for; the message is shown."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_page(request: web.Request, status: int, message: str | None = None) -> web.Response:
    """An HTML error page; ``message`` None gives the usual one for ``status``."""
    text = message if message is not None else _MESSAGES.get(status, "The request failed.")
    viewer = request.app[VIEWER](request)
    return request.app[RENDERER].page(
        request, "error.html", viewer, status=status, title=_TITLES.get(status, "Error"),
        message=text,
    )  # fmt: skip
