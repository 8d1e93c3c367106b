"""Searching, sorting and paging the repository listing.

A search text with ``*``, ``?`` or ``[`` is a glob (``*`` also crosses
``/``) that must match the whole name, with or without its upstream:
``library/*``, ``ghcr.io/*``, ``*/nginx*``. Any other text is a substring
of ``<upstream>/<name>``. Both ignore case. The query string is read
leniently, as a browser's address bar may hold anything: an unknown sort
is the default one, a page that is not a number is the first.

:func:`select_repositories` and :func:`select_tags` are the whole listing
logic over plain values, for :class:`mirror.ui.model.CacheView`
implementations that keep them in memory.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from mirror.numbers import parse_count
from mirror.ui.model import (
    RepositoryQuery,
    RepositoryResults,
    RepositorySummary,
    SortKey,
    TagDetail,
    TagQuery,
)

MAX_TEXT = 256  # longer than any repository name with its upstream
MAX_PAGE = 1_000_000
_GLOB_CHARS = frozenset("*?[")

Matcher = Callable[[RepositorySummary], bool]
T = TypeVar("T")


def parse_query(params: Mapping[str, str], per_page: int = 50) -> RepositoryQuery:
    """The query of ``/ui/repositories?q=&sort=&page=``; never fails."""
    text = params.get("q", "").strip()[:MAX_TEXT]
    try:
        sort = SortKey(params.get("sort", SortKey.SIZE.value))
    except ValueError:
        sort = SortKey.SIZE
    page = parse_count(params.get("page", "1"), max_digits=7) or 1
    return RepositoryQuery(text=text, sort=sort, page=min(page, MAX_PAGE), per_page=per_page)


def parse_tag_query(params: Mapping[str, str], per_page: int = 100) -> TagQuery:
    """The ``tag_page`` of a repository page; never fails."""
    page = parse_count(params.get("tag_page", "1"), max_digits=7) or 1
    return TagQuery(page=min(page, MAX_PAGE), per_page=per_page)


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


def cut_page(items: Sequence[T], page: int, per_page: int) -> tuple[tuple[T, ...], int, int]:
    """``(the page's items, the page, how many pages)``; past the end gives the last page."""
    pages = max(1, -(-len(items) // per_page))
    page = min(max(page, 1), pages)
    start = (page - 1) * per_page
    return tuple(items[start : start + per_page]), page, pages


def select_repositories(
    summaries: Iterable[RepositorySummary], query: RepositoryQuery
) -> RepositoryResults:
    """Filter, sort and cut one page."""
    found = sorted(filter(matcher(query.text), summaries), key=_sort_key(query.sort))
    items, page, pages = cut_page(found, query.page, query.per_page)
    return RepositoryResults(items=items, total=len(found), page=page, pages=pages)


def select_tags(
    tags: Iterable[TagDetail], query: TagQuery
) -> tuple[tuple[TagDetail, ...], int, int]:
    """One page of tags, most recently pulled first (then by name): ``(tags, page, pages)``."""
    ordered = sorted(tags, key=lambda t: (t.last_pulled is None, -(t.last_pulled or 0.0), t.tag))
    return cut_page(ordered, query.page, query.per_page)
