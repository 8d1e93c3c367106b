"""How long the UI's pages take on a cache of 100,000 objects.

Serves the UI over the in-memory view-model of tests/support/ui_data.py
(``--objects`` objects in ``--repositories`` repositories) on loopback and
requests each page ``--rounds`` times. The server time is the UI's own
``Server-Timing`` figure: from the request reaching the UI to the rendered
page (view-model queries and template rendering); the wall time adds HTTP
on loopback. Both grow with whatever else the machine runs; the CPU time
(of this process, which is both the server and its client) does not. The
first request of each page (the in-memory repository summaries and LRU
order built) is reported apart.

    python bench/ui_pages.py --objects 100000 --repositories 3000

With ``--live`` the pages come from the mirror itself (``create_app``, its
real view over the cache index and catalog), over a disk cache of as many
real-format objects written first (bench/ui_disk_cache.py); the start-up
index rebuild and the catalog's first read are timed apart.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ui_disk_cache import UPSTREAMS, build
from mirror.app import UI
from mirror.config import build_config
from mirror.ui.keys import VIEW
from mirror.ui.model import RepositoryQuery, SortKey
from tests.support.mirror_app import run_mirror
from tests.support.ui_data import synthetic_cache
from tests.support.ui_server import ADMIN_TOKEN, serve_ui


async def timed(http: aiohttp.ClientSession, url: str) -> tuple[float, float, int]:
    """Server milliseconds, wall milliseconds and body bytes of one GET."""
    started = time.perf_counter()
    async with http.get(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as response:
        body = await response.read()
        assert response.status == 200, (url, response.status)
        match = re.fullmatch(r"app;dur=([0-9.]+)", response.headers["Server-Timing"])
        assert match is not None
    return float(match.group(1)), (time.perf_counter() - started) * 1000, len(body)


async def measure(objects: int, repositories: int, rounds: int) -> None:
    """Print one markdown row per page, over the in-memory test cache."""
    started = time.perf_counter()
    cache = synthetic_cache(objects=objects, repositories=repositories)
    print(f"cache: {len(cache.objects):,} objects, {len(cache.repos):,} repositories, "
          f"{sum(len(r.tags) for r in cache.repos.values()):,} tags "
          f"(built in {time.perf_counter() - started:.1f} s)\n")  # fmt: skip
    largest = (await cache.repositories(RepositoryQuery(sort=SortKey.SIZE))).items[0]
    most_tags = max(cache.repos.values(), key=lambda r: len(r.tags))
    async with serve_ui(cache, cache) as base:
        await table(base, pages((largest.upstream, largest.name, largest.tags),
                                (most_tags.upstream, most_tags.name, len(most_tags.tags))),
                    rounds)  # fmt: skip


async def measure_live(objects: int, repositories: int, rounds: int) -> None:
    """The same pages served by the mirror itself over a disk cache it opens at start."""
    with tempfile.TemporaryDirectory(prefix="ui-bench-") as tmp:
        started = time.perf_counter()
        disk = build(Path(tmp) / "cache", objects, repositories)
        print(f"disk cache: {disk.objects:,} objects, {len(disk.repositories):,} repositories, "
              f"{disk.tags:,} tags (written in {time.perf_counter() - started:.1f} s)")  # fmt: skip
        config = build_config({
            "offline": True, "storage": {"path": str(disk.root)},
            "admin": {"token": ADMIN_TOKEN}, "cache": {"max_size": "2000GiB"},
            "upstreams": [{"url": url} for _, url, _ in UPSTREAMS],
        })  # fmt: skip
        started = time.perf_counter()
        async with run_mirror(config) as mirror:
            print(f"mirror started (index rebuilt) in {time.perf_counter() - started:.1f} s")
            view = mirror.app[UI][VIEW]
            started = time.perf_counter()
            largest = (await view.repositories(RepositoryQuery(sort=SortKey.SIZE))).items[0]
            print(f"catalog read (every manifest and tag record, once) in "
                  f"{time.perf_counter() - started:.1f} s\n")  # fmt: skip
            hot = disk.repositories[0]
            hot_tags = (await view.repositories(RepositoryQuery(text=hot[1]))).items[0].tags
            await table(mirror.url, pages((largest.upstream, largest.name, largest.tags),
                                          (*hot, hot_tags)), rounds)  # fmt: skip


def pages(largest: tuple[str, str, int], most_tags: tuple[str, str, int]) -> dict[str, str]:
    """The pages measured: label -> path."""
    return {
        "overview `/ui/`": "/ui/",
        "listing, by size": "/ui/repositories",
        "listing, substring `q=core`": "/ui/repositories?q=core",
        "listing, glob `q=*/redis*`, by pulls": "/ui/repositories?q=*/redis*&sort=pulls",
        "listing, last page, by last pulled": "/ui/repositories?sort=last-pulled&page=60",
        f"repository, largest ({largest[2]} tags)": f"/ui/repositories/{largest[0]}/{largest[1]}",
        f"repository, most tags ({most_tags[2]:,})":
            f"/ui/repositories/{most_tags[0]}/{most_tags[1]}",
        "`fills.json`": "/ui/fills.json",
    }  # fmt: skip


async def table(base: str, paths: dict[str, str], rounds: int) -> None:
    """Request each page ``rounds`` times; print a markdown row per page."""
    print("| page | first request, server ms | server ms, median | p95 | max | wall ms, median "
          "| CPU ms | KiB |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")  # fmt: skip
    async with aiohttp.ClientSession() as http:
        for label, path in paths.items():
            first, _, _ = await timed(http, base + path)
            cpu = time.process_time()
            runs = [await timed(http, base + path) for _ in range(rounds)]
            cpu = (time.process_time() - cpu) * 1000 / rounds
            server = sorted(r[0] for r in runs)
            wall = statistics.median(r[1] for r in runs)
            p95 = server[min(len(server) - 1, int(len(server) * 0.95))]
            kib = runs[0][2] / 1024
            print(f"| {label} | {first:.1f} | {statistics.median(server):.1f} | {p95:.1f} | "
                  f"{server[-1]:.1f} | {wall:.1f} | {cpu:.1f} | {kib:.0f} |")  # fmt: skip


def main() -> None:
    """Parse the arguments and measure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--repositories", type=int, default=3_000)
    parser.add_argument("--rounds", type=int, default=100)
    live_help = "serve the pages from the mirror itself, over a disk cache"
    parser.add_argument("--live", action="store_true", help=live_help)
    args = parser.parse_args()
    run = measure_live if args.live else measure
    asyncio.run(run(args.objects, args.repositories, args.rounds))


if __name__ == "__main__":
    main()
