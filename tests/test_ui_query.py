"""The UI's pure parts: search, sort and paging; pull commands; how values read."""

from __future__ import annotations

import pytest

from mirror.ui import format as fmt
from mirror.ui.model import (
    PinState,
    RepositoryQuery,
    RepositorySummary,
    SignatureStatus,
    SortKey,
    TagDetail,
    TagQuery,
)
from mirror.ui.pull_commands import PLACEHOLDER_HOST, MirrorAddress, mirror_address, pull_commands
from mirror.ui.query import (
    is_glob,
    parse_query,
    parse_tag_query,
    select_repositories,
    select_tags,
)


def repo(upstream: str, name: str, size: int = 0, pulls: int = 0,
         last: float | None = None) -> RepositorySummary:  # fmt: skip
    return RepositorySummary(upstream, name, size, 1, last, pulls)


REPOS = [
    repo("docker.io", "library/alpine", size=5, pulls=40, last=100.0),
    repo("docker.io", "library/nginx", size=60, pulls=7, last=300.0),
    repo("docker.io", "bitnami/nginx", size=80, pulls=0),
    repo("ghcr.io", "acme/web-app", size=25, pulls=7, last=200.0),
    repo("quay.io", "prometheus/node-exporter", size=20, pulls=1, last=50.0),
]


def select(**query: object) -> list[str]:
    results = select_repositories(REPOS, RepositoryQuery(**query))  # type: ignore[arg-type]
    return [f"{r.upstream}/{r.name}" for r in results.items]


@pytest.mark.parametrize(
    ("text", "found"),
    [("", 5), ("nginx", 2), ("NGINX", 2), ("ghcr.io/", 1), ("library/*", 2), ("*/nginx", 2),
     ("docker.io/*", 3), ("*node*", 1), ("lib?ary/alpine", 1), ("[ab]*/nginx", 1), ("alpine*", 0),
     ("library", 2), ("zzz", 0)],
)  # fmt: skip
def test_search_is_a_substring_or_a_whole_name_glob(text: str, found: int) -> None:
    assert len(select(text=text)) == found


def test_each_sort_has_its_direction_and_a_stable_tie_break() -> None:
    assert select(sort=SortKey.SIZE)[0] == "docker.io/bitnami/nginx"
    assert select(sort=SortKey.PULLS)[:3] == ["docker.io/library/alpine", "ghcr.io/acme/web-app",
                                              "docker.io/library/nginx"]  # fmt: skip
    assert select(sort=SortKey.LAST_PULLED)[0] == "docker.io/library/nginx"
    assert select(sort=SortKey.LAST_PULLED)[-1] == "docker.io/bitnami/nginx"  # never pulled
    assert select(sort=SortKey.NAME)[0] == "ghcr.io/acme/web-app"


def test_pages_cut_the_sorted_list_and_clamp_past_the_end() -> None:
    pages = [select_repositories(REPOS, RepositoryQuery(sort=SortKey.NAME, page=n, per_page=2))
             for n in (1, 2, 3, 99)]  # fmt: skip
    assert [len(p.items) for p in pages] == [2, 2, 1, 1]
    assert {p.pages for p in pages} == {3}
    assert pages[3].page == 3
    assert pages[3].items == pages[2].items
    empty = select_repositories([], RepositoryQuery())
    assert (empty.total, empty.pages, empty.page, empty.items) == (0, 1, 1, ())


@pytest.mark.parametrize(
    ("params", "expected"),
    [({}, RepositoryQuery()),
     ({"q": "  nginx ", "sort": "pulls", "page": "3"}, RepositoryQuery("nginx", SortKey.PULLS, 3)),
     ({"sort": "evil", "page": "-1"}, RepositoryQuery()),
     ({"page": "²"}, RepositoryQuery()), ({"page": "0"}, RepositoryQuery()),
     ({"page": "9" * 5000}, RepositoryQuery()),
     ({"q": "x" * 5000}, RepositoryQuery("x" * 256))],
)  # fmt: skip
def test_the_query_string_is_read_leniently(
    params: dict[str, str], expected: RepositoryQuery
) -> None:
    assert parse_query(params) == expected


def test_glob_detection() -> None:
    assert is_glob("library/*")
    assert is_glob("a?c")
    assert is_glob("[ab]c")
    assert not is_glob("library/alpine")


def test_pull_commands_name_the_mirror_and_the_upstream() -> None:
    address = MirrorAddress("mirror.example:5000", secure=False)
    listed = pull_commands(
        address, "ghcr.io", "https://ghcr.io", "acme/app", "1.0", docker_hub_default=False
    )
    commands = {c.client: c for c in listed}
    assert list(commands) == ["docker", "podman", "ctr-hosts", "ctr-direct"]
    assert commands["docker"].text == "docker pull mirror.example:5000/ghcr.io/acme/app:1.0"
    assert "insecure-registries" in commands["docker"].note
    assert commands["podman"].text == (
        "podman pull --tls-verify=false mirror.example:5000/ghcr.io/acme/app:1.0"
    )
    assert commands["ctr-hosts"].text == (
        "# /etc/containerd/certs.d/ghcr.io/hosts.toml\n"
        'server = "https://ghcr.io"\n\n'
        '[host."http://mirror.example:5000"]\n'
        '  capabilities = ["pull", "resolve"]\n\n'
        "ctr images pull --hosts-dir /etc/containerd/certs.d ghcr.io/acme/app:1.0"
    )  # fmt: skip
    assert commands["ctr-direct"].text == (
        "ctr images pull --plain-http mirror.example:5000/ghcr.io/acme/app:1.0"
    )


def test_docker_hub_as_default_adds_the_registry_mirrors_command() -> None:
    address = MirrorAddress("mirror.example", secure=True)
    commands = {c.client: c for c in pull_commands(
        address, "docker.io", "https://registry-1.docker.io", "library/alpine", "3.20",
        docker_hub_default=True)}  # fmt: skip
    assert commands["docker-mirror"].text == "docker pull alpine:3.20"
    assert '"registry-mirrors": ["https://mirror.example"]' in commands["docker-mirror"].note
    assert commands["podman"].text == "podman pull mirror.example/docker.io/library/alpine:3.20"
    assert commands["docker"].note == ""
    assert "--plain-http" not in commands["ctr-direct"].text


@pytest.mark.parametrize(
    ("host", "expected"),
    [("mirror.example:5000", "mirror.example:5000"), ("127.0.0.1:5000", "127.0.0.1:5000"),
     ("[::1]:5000", "[::1]:5000"), (None, PLACEHOLDER_HOST), ("a b", PLACEHOLDER_HOST),
     ('x"><script>', PLACEHOLDER_HOST), ("host:5000/path", PLACEHOLDER_HOST)],
)  # fmt: skip
def test_the_mirror_address_comes_from_a_plain_host_only(host: str | None, expected: str) -> None:
    assert mirror_address(host, secure=False).host == expected


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1 KiB"), (1536, "1.5 KiB"), (5 * 1024**2, "5 MiB"),
     (int(1.46 * 1024**3), "1.46 GiB"), (1000 * 1024**2, "1000 MiB"), (3 * 1024**5, "3 PiB"),
     (5000 * 1024**5, "5000 PiB")],
)  # fmt: skip
def test_sizes_read_in_binary_units(value: int, text: str) -> None:
    assert fmt.size(value) == text


def test_times_ratios_digests_and_links() -> None:
    assert fmt.ago(None, 1000.0) == "never"
    assert fmt.ago(990.0, 1000.0) == "just now"
    assert fmt.ago(1000.0 - 61, 1000.0) == "1 minute ago"
    assert fmt.ago(1000.0 - 3 * 3600, 1000.0) == "3 hours ago"
    assert fmt.ago(0.0, 400 * 86400.0) == "1 year ago"
    assert fmt.iso(0.0) == "1970-01-01T00:00:00+00:00"
    assert fmt.percent(None) == "\N{EN DASH}"
    assert fmt.percent(0.875) == "87.5 %"
    assert fmt.count(1234567) == "1,234,567"
    assert fmt.short_digest("sha256:" + "ab" * 32) == "sha256:abababababab"
    assert fmt.is_web_url("https://github.com/acme/app")
    for text in ("javascript:alert(1)", "JAVASCRIPT:alert(1)", "data:text/html,x", "//evil",
                 "https://", "https://a b", "http://x\u0000y", "ftp://host/file"):  # fmt: skip
        assert not fmt.is_web_url(text)


def test_tags_are_listed_most_recently_pulled_first() -> None:
    tags = [TagDetail(name, "sha256:" + "0" * 64, "", 0, last, PinState.UNPINNED, (),
                      SignatureStatus(), ())
            for name, last in (("b", 5.0), ("a", 5.0), ("never", None), ("new", 9.0))]  # fmt: skip
    shown, page, pages = select_tags(tags, TagQuery(page=1, per_page=3))
    assert [t.tag for t in shown] == ["new", "a", "b"]
    assert (page, pages) == (1, 2)
    shown, page, _ = select_tags(tags, TagQuery(page=7, per_page=3))
    assert ([t.tag for t in shown], page) == (["never"], 2)
    assert parse_tag_query({"tag_page": "2"}) == TagQuery(page=2)
    assert parse_tag_query({"tag_page": "two"}) == TagQuery()
