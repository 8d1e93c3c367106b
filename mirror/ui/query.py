"""Searching, sorting and paging the repository listing.

A search text with ``*``, ``?`` or ``[`` is a glob (``*`` also crosses
``/``) that must match the whole name, with or without its upstream:
``library/*``, ``ghcr.io/*``, ``*/nginx*``. Any other text is a substring
of ``<upstream>/<name>``. Both ignore case. The query string is read
leniently, as a browser's address bar may hold anything: an unknown sort
is the default one, a page that is not a number is the first.

:func:`select_repositories` is the whole listing logic over plain
summaries, for :class:`mirror.ui.model.CacheView` implementations that keep
their summaries in memory.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from mirror.numbers import parse_count
from mirror.ui.model import RepositoryQuery, RepositoryResults, RepositorySummary, SortKey

MAX_TEXT = 256  # longer than any repository name with its upstream
MAX_PAGE = 1_000_000
_GLOB_CHARS = frozenset("*?[")

Matcher = Callable[[RepositorySummary], bool]


def parse_query(params: Mapping[str, str], per_page: int = 50) -> RepositoryQuery:
    """The query of ``/ui/repositories?q=&sort=&page=``; never fails."""
    text = params.get("q", "").strip()[:MAX_TEXT]
    try:
        sort = SortKey(params.get("sort", SortKey.SIZE.value))
    except ValueError:
        sort = SortKey.SIZE
    page = parse_count(params.get("page", "1"), max_digits=7) or 1
    return RepositoryQuery(text=text, sort=sort, page=min(page, MAX_PAGE), per_page=per_page)


def is_glob(text: str) -> bool:
    """Whether a search text is a glob rather than a substring."""
    return not _GLOB_CHARS.isdisjoint(text)


def matcher(text: str) -> Matcher:
    """A test of one summary against a search text (everything matches an empty one)."""
    needle = text.lower()
    if not needle:
        return lambda _summary: True
    if is_glob(needle):
        pattern = re.compile(fnmatch.translate(needle))
        return lambda s: bool(pattern.match(s.name) or pattern.match(f"{s.upstream}/{s.name}"))
    return lambda s: needle in f"{s.upstream}/{s.name}"


def _sort_key(sort: SortKey) -> Callable[[RepositorySummary], Any]:
    # Ties always fall back to the name, so pages are stable from one request to the next.
    if sort is SortKey.SIZE:
        return lambda s: (-s.size, s.name, s.upstream)
    if sort is SortKey.LAST_PULLED:
        # Never pulled sorts after every pulled repository.
        return lambda s: (s.last_pulled is None, -(s.last_pulled or 0.0), s.name, s.upstream)
    if sort is SortKey.PULLS:
        return lambda s: (-s.pulls, s.name, s.upstream)
    return lambda s: (s.name, s.upstream)


def select_repositories(
    summaries: Iterable[RepositorySummary], query: RepositoryQuery
) -> RepositoryResults:
    """Filter, sort and cut one page; a page past the end gives the last page."""
    matches = matcher(query.text)
    found = sorted(filter(matches, summaries), key=_sort_key(query.sort))
    pages = max(1, -(-len(found) // query.per_page))
    page = min(max(query.page, 1), pages)
    start = (page - 1) * query.per_page
    items = tuple(found[start : start + query.per_page])
    return RepositoryResults(items=items, total=len(found), page=page, pages=pages)
