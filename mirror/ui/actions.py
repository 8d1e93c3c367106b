"""Admin actions from the UI: purge a tag or a whole repository, pin or unpin a tag.

Forms POST here and get a 303 back to a page that says what happened (so a
reload does not repeat the action). Before anything changes, in order:

1. the form came from a page of this mirror: a browser sends
   ``Sec-Fetch-Site`` (or, older ones, ``Origin``) with every POST, so a form
   another site makes a browser send with its credentials is refused
   (cross-site request forgery); a client that sends neither is not a
   browser and has no ambient credentials to abuse;
2. the viewer may administer the cache, and the UI was given actions;
3. the fields name a configured upstream, a valid repository and tag.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from yarl import URL

from mirror.errors import MirrorError
from mirror.oci import validate_name, validate_tag
from mirror.ui.errors import PageError
from mirror.ui.keys import ACTIONS, VIEW, VIEWER
from mirror.ui.model import CacheActions, TagQuery

Form = Mapping[str, object]  # a parsed form body (a MultiDictProxy)


def register(app: web.Application) -> None:
    """Add the action routes to the UI sub-application."""
    app.router.add_post("/actions/purge", purge, name="ui.purge")
    app.router.add_post("/actions/pin", pin, name="ui.pin")


async def purge(request: web.Request) -> web.Response:
    """Purge a tag (``tag`` set) or a whole repository (``confirm=yes`` needed)."""
    actions = _admin_actions(request)
    form = await request.post()
    upstream, repository = await _repository(request, form)
    tag = _tag(form) if _field(form, "tag") else None
    if tag is None and _field(form, "confirm") != "yes":
        raise PageError(400, "Purging a whole repository needs its confirmation box ticked.")
    outcome = await actions.purge(upstream, repository, tag)
    if outcome.tags == 0 and outcome.objects == 0:
        raise PageError(404, "Nothing of that is in the cache.")
    subject = f"{upstream}/{repository}" + (f":{tag}" if tag is not None else "")
    left = await request.app[VIEW].repository(upstream, repository, TagQuery(per_page=1))
    if tag is not None and left is not None:
        return _see_repository(request, upstream, repository, "purged", subject)
    target = request.app.router["ui.repositories"].url_for()
    return _see_other(target.with_query(notice="purged", subject=subject))


async def pin(request: web.Request) -> web.Response:
    """Pin a tag (``pinned=true``) or unpin it (``pinned=false``)."""
    actions = _admin_actions(request)
    form = await request.post()
    upstream, repository = await _repository(request, form)
    tag = _tag(form)
    pinned = _field(form, "pinned")
    if pinned not in ("true", "false"):
        raise PageError(400, "pinned must be true or false.")
    await actions.set_pinned(upstream, repository, tag, pinned == "true")
    notice = "pinned" if pinned == "true" else "unpinned"
    return _see_repository(request, upstream, repository, notice, f"{repository}:{tag}")


def cross_site(request: web.Request) -> bool:
    """Whether a browser sent this request from a page of another origin."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site not in ("same-origin", "none")  # "none": typed or bookmarked by the user
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    url = URL(origin)
    # "null" (a sandboxed or file page) has no host: never this mirror.
    return url.host is None or url.authority != request.host


def _admin_actions(request: web.Request) -> CacheActions:
    if cross_site(request):
        raise PageError(403, "This form was sent from a page of another site.")
    if not request.app[VIEWER](request).can_admin:
        raise PageError(403, "Only an admin can change the cache.")
    if ACTIONS not in request.app:
        raise PageError(403, "This mirror's UI is read-only.")
    return request.app[ACTIONS]


async def _repository(request: web.Request, form: Form) -> tuple[str, str]:
    upstream, repository = _field(form, "upstream"), _field(form, "repository")
    if upstream not in {u.name for u in await request.app[VIEW].upstreams()}:
        raise PageError(400, "That upstream is not configured.")
    try:
        return upstream, validate_name(repository)
    except MirrorError:
        raise PageError(400, "That is not a repository name.") from None


def _tag(form: Form) -> str:
    try:
        return validate_tag(_field(form, "tag"))
    except MirrorError:
        raise PageError(400, "That is not a tag.") from None


def _field(form: Form, name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


def _see_repository(
    request: web.Request, upstream: str, repository: str, notice: str, subject: str
) -> web.Response:
    target = request.app.router["ui.repository"].url_for(upstream=upstream, name=repository)
    return _see_other(target.with_query(notice=notice, subject=subject))


def _see_other(location: URL) -> web.Response:
    return web.Response(status=303, headers={"Location": str(location)})
