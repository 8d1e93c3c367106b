"""The UI's pages: the overview, the repository listing, one repository, and live fills.

Each handler reads the view from ``request.app``, asks it for plain values
and renders a template; none of them touches the cache itself.
"""

from __future__ import annotations

import re

from aiohttp import web

from mirror.errors import MirrorError
from mirror.oci import validate_name, validate_tag
from mirror.ui import format as fmt
from mirror.ui.errors import PageError
from mirror.ui.keys import ACTIONS, ADDRESS, RENDERER, VIEW, VIEWER
from mirror.ui.model import FillProgress, RepositoryDetail, SortKey, TagDetail
from mirror.ui.pull_commands import MirrorAddress, PullCommand, mirror_address, pull_commands
from mirror.ui.query import parse_query, parse_tag_query

EVICTED_NEXT = 10  # objects listed under "evicted next"
# An upstream decides how many annotations a manifest has and how long they are.
MAX_ANNOTATIONS = 20
SORT_LABELS = {SortKey.SIZE: "size", SortKey.LAST_PULLED: "last pulled", SortKey.PULLS: "pulls",
               SortKey.NAME: "name"}  # fmt: skip
# Notices a page shows after an admin action redirected to it. The query string
# picks one and names its subject; the subject must look like an image reference.
NOTICES = {"purged": "Removed {} from the cache.", "pinned": "Pinned {}: eviction skips it.",
           "unpinned": "Unpinned {}."}  # fmt: skip
_SUBJECT_RE = re.compile(r"[A-Za-z0-9._:/@-]{1,400}")


def register(app: web.Application) -> None:
    """Add the page routes to the UI sub-application."""
    app.router.add_get("/", overview, name="ui.overview")
    app.router.add_get("/repositories", repositories, name="ui.repositories")
    app.router.add_get("/repositories/{upstream}/{name:.+}", repository, name="ui.repository")
    app.router.add_get("/fills.json", fills_json, name="ui.fills")


async def overview(request: web.Request) -> web.Response:
    """Upstreams, the cache budget with what goes next, and downloads in progress."""
    view = request.app[VIEW]
    return request.app[RENDERER].page(
        request, "overview.html", request.app[VIEWER](request), section="overview",
        upstreams=await view.upstreams(), budget=await view.budget(EVICTED_NEXT),
        fills=await view.fills(),
    )  # fmt: skip


async def repositories(request: web.Request) -> web.Response:
    """One page of the repositories matching ``q``, in the ``sort`` order."""
    query = parse_query(request.query)
    results = await request.app[VIEW].repositories(query)
    return request.app[RENDERER].page(
        request, "repositories.html", request.app[VIEWER](request), section="repositories",
        query=query, results=results, sort_labels=SORT_LABELS, notice=_notice(request),
    )  # fmt: skip


async def repository(request: web.Request) -> web.Response:
    """Tags, digests, platforms and sizes of one repository, and how to pull it."""
    upstream, name = request.match_info["upstream"], request.match_info["name"]
    try:
        validate_name(name)
    except MirrorError:
        raise PageError(404, "That is not a repository name.") from None
    detail = await request.app[VIEW].repository(upstream, name, parse_tag_query(request.query))
    if detail is None:
        raise PageError(404, "Nothing of this repository is in the cache.")
    tag = _chosen_tag(request, detail)
    commands: tuple[PullCommand, ...] = ()
    if tag is not None:
        commands = pull_commands(
            _address(request), upstream, detail.upstream_url, name, tag.tag,
            docker_hub_default=detail.docker_hub and detail.default_upstream,
        )  # fmt: skip
    viewer = request.app[VIEWER](request)
    return request.app[RENDERER].page(
        request, "repository.html", viewer, section="repositories", detail=detail,
        chosen=tag, commands=commands, notice=_notice(request), max_annotations=MAX_ANNOTATIONS,
        admin=viewer.can_admin and ACTIONS in request.app,
    )  # fmt: skip


async def fills_json(request: web.Request) -> web.Response:
    """Downloads in progress, for the overview's script to refresh its table."""
    fills = await request.app[VIEW].fills()
    return web.json_response({"fills": [_fill_json(fill) for fill in fills]})


def _fill_json(fill: FillProgress) -> dict[str, object]:
    # Formatted here, so the script only places text and never formats numbers itself.
    return {
        "id": fill.id, "upstream": fill.upstream, "repository": fill.repository,
        "digest": fill.digest, "short_digest": fmt.short_digest(fill.digest),
        "received": fill.received, "total": fill.total, "followers": fill.followers,
        "progress": fmt.size(fill.received) + (
            f" of {fmt.size(fill.total)}" if fill.total is not None else ""),
    }  # fmt: skip


def _chosen_tag(request: web.Request, detail: RepositoryDetail) -> TagDetail | None:
    """The tag the pull commands are for: ``?tag=``, else ``latest``, else the first.

    Only tags of the page shown count: the tag links carry their page.
    """
    by_name = {tag.tag: tag for tag in detail.tags}
    wanted = request.query.get("tag", "")
    try:
        validate_tag(wanted)
    except MirrorError:
        wanted = ""
    if wanted in by_name:
        return by_name[wanted]
    return by_name.get("latest", detail.tags[0] if detail.tags else None)


def _address(request: web.Request) -> MirrorAddress:
    if ADDRESS in request.app:
        return request.app[ADDRESS]
    return mirror_address(request.headers.get("Host"), request.secure)


def _notice(request: web.Request) -> str | None:
    text = NOTICES.get(request.query.get("notice", ""))
    subject = request.query.get("subject", "")
    if text is None or _SUBJECT_RE.fullmatch(subject) is None:
        return None
    return text.format(subject)
