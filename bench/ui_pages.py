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
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mirror.ui.model import RepositoryQuery, SortKey
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
    """Print one markdown row per page."""
    started = time.perf_counter()
    cache = synthetic_cache(objects=objects, repositories=repositories)
    print(f"cache: {len(cache.objects):,} objects, {len(cache.repos):,} repositories, "
          f"{sum(len(r.tags) for r in cache.repos.values()):,} tags "
          f"(built in {time.perf_counter() - started:.1f} s)\n")  # fmt: skip
    largest = (await cache.repositories(RepositoryQuery(sort=SortKey.SIZE))).items[0]
    most_tags = max(cache.repos.values(), key=lambda r: len(r.tags))
    pages = {
        "overview `/ui/`": "/ui/",
        "listing, by size": "/ui/repositories",
        "listing, substring `q=core`": "/ui/repositories?q=core",
        "listing, glob `q=*/redis*`, by pulls": "/ui/repositories?q=*/redis*&sort=pulls",
        "listing, last page, by last pulled": "/ui/repositories?sort=last-pulled&page=60",
        f"repository, largest ({largest.tags} tags)":
            f"/ui/repositories/{largest.upstream}/{largest.name}",
        f"repository, most tags ({len(most_tags.tags)})":
            f"/ui/repositories/{most_tags.upstream}/{most_tags.name}",
        "`fills.json`": "/ui/fills.json",
    }  # fmt: skip
    print("| page | first request, server ms | server ms, median | p95 | max | wall ms, median "
          "| CPU ms | KiB |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")  # fmt: skip
    async with serve_ui(cache, cache) as base, aiohttp.ClientSession() as http:
        for label, path in pages.items():
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
    args = parser.parse_args()
    asyncio.run(measure(args.objects, args.repositories, args.rounds))


if __name__ == "__main__":
    main()
