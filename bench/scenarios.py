"""The scenarios (a), (c), (d) and (e); each records one value per peer per repetition.

The cold scenarios (b), (f), (g) and (h) are in :mod:`bench.cold`.

Results are ``{metric: {peer: [value per repetition]}}``; the metric names
are listed in :data:`bench.report.METRICS`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bench.load import ACCEPT_MANIFEST, fetch_concurrently, fetch_one, run_wrk
from bench.memory import settle
from bench.peers import Peer
from bench.seed import BlobFile, SmallImage, drop_blob, push_blob
from tests.support.registry import UpstreamRegistry

log = logging.getLogger("bench")

Results = dict[str, dict[str, list[float]]]
MIB = 1024 * 1024


@dataclass(frozen=True)
class Knobs:
    """Sizes, counts and durations of one run (``python -m bench --help``)."""

    size: int = 200 * MIB  # the blob of (a)-(c)
    big_size: int = 1024 * MIB  # (f)
    concurrency: int = 16  # (a)
    herd: int = 50  # (c)
    small_count: int = 500  # (g): 4 KiB blobs per repetition
    tag_count: int = 500  # (h): fresh tags per repetition
    small_clients: int = 8  # (g) and (h)
    settle_seconds: float = 1.0  # pause after ``sync`` before each cold measurement
    wrk_seconds: float = 5.0  # (d)
    scenarios: str = "abcdefgh"


@dataclass
class Setup:
    """Everything the scenarios need: servers, content, knobs."""

    upstream: UpstreamRegistry
    peers: dict[str, Peer]  # by name; "upstream" is the registry itself
    proxies: list[str]  # peers that pull through from the upstream
    workdir: Path
    warm_blob: BlobFile
    image: SmallImage
    knobs: Knobs = Knobs()
    results: Results = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))

    def record(self, metric: str, peer: str, value: float) -> None:
        """Keep one value of one repetition."""
        self.results[metric][peer].append(value)

    def settle(self, writes: int = 0) -> None:
        """Write back every dirty page, then pause: the next peer starts on a quiet machine.

        Without it, the page-cache writeback of the previous peer's download
        (200 MiB or more) runs into the next peer's measurement. ``writes``:
        how much the next pull will store; that much free memory is warmed
        (:mod:`bench.memory` says why).
        """
        settle(self.knobs.settle_seconds, writes)

    @property
    def size(self) -> int:
        """The blob size of (a)-(c)."""
        return self.knobs.size

    def url(self, peer: str, path: str) -> str:
        """``path`` on ``peer``."""
        return self.peers[peer].url + path


def cached_throughput(setup: Setup, order: list[str]) -> None:
    """(a) a cached blob, 1 client, then ``concurrency`` clients at once."""
    for name in order:
        path = "/blob" if name == "nginx" else setup.warm_blob.url_path()
        url = setup.url(name, path)
        one = fetch_one(url, setup.size)
        setup.record("a1_mibs", name, setup.size / MIB / one.total)
        many = fetch_concurrently(url, setup.knobs.concurrency, setup.size)
        setup.record("a16_mibs", name, many.mib_per_s)
        setup.record("a16_failures", name, many.failures(setup.size))
        log.info("(a) %-12s 1 client %7.0f MiB/s, %d clients %7.0f MiB/s", name,
                 setup.size / MIB / one.total, setup.knobs.concurrency, many.mib_per_s)  # fmt: skip


def thundering_herd(setup: Setup) -> None:
    """(c) ``herd`` clients ask each proxy for one fresh blob at the same moment."""
    blob = push_blob(setup.upstream, setup.workdir / "blobs", setup.size, keep=False)
    for name in setup.proxies:
        setup.settle(writes=setup.size)
        setup.peers[name].reset_peak()
        mark = setup.upstream.log_mark()
        batch = fetch_concurrently(setup.url(name, blob.url_path()), setup.knobs.herd, setup.size)
        # Published first: a store in the background (distribution's) makes a GET of its own.
        setup.peers[name].wait_cached([blob.digest[7:]], setup.size)
        gets = [
            entry
            for entry in setup.upstream.requests(mark)
            if entry.method == "GET" and entry.path == blob.url_path()
        ]
        setup.record("c_wall_s", name, batch.wall)
        setup.record("c_upstream_gets", name, len(gets))
        setup.record("c_upstream_mib", name, sum(e.size for e in gets) / MIB)
        setup.record("c_failures", name, batch.failures(setup.size))
        setup.record("c_rss_mib", name, setup.peers[name].scenario_peak_rss_mib())
        log.info("(c) %-12s %d clients in %6.2f s, %d upstream GETs, %.0f MiB from upstream, "
                 "%d failed, peak RSS %.0f MiB", name, setup.knobs.herd, batch.wall, len(gets),
                 sum(e.size for e in gets) / MIB, batch.failures(setup.size),
                 setup.peers[name].scenario_peak_rss_mib())  # fmt: skip
        forget = setup.peers[name].forget
        if forget is not None:  # as in (b) and (f)
            forget(blob.digest[7:])
    drop_blob(setup.upstream, blob.digest)


def manifests(setup: Setup, order: list[str]) -> None:
    """(d) a cached manifest by digest and by tag under wrk, 64 connections."""
    for name in order:
        for kind, reference in (("digest", setup.image.manifest.digest), ("tag", setup.image.tag)):
            url = setup.url(name, setup.image.url_path(reference))
            result = run_wrk(url, setup.knobs.wrk_seconds)
            setup.record(f"d_{kind}_rps", name, result.rps)
            setup.record(f"d_{kind}_p99_ms", name, result.p99_ms)
            setup.record(f"d_{kind}_errors", name, result.errors)
            log.info("(d) %-12s by %-6s %8.0f req/s, p99 %6.1f ms, %d errors",
                     name, kind, result.rps, result.p99_ms, result.errors)  # fmt: skip


def warm_manifests(setup: Setup) -> None:
    """Pull the manifest by tag and by digest once through every proxy."""
    accept = (f"Accept: {ACCEPT_MANIFEST}",)
    for name in setup.proxies:
        for reference in (setup.image.tag, setup.image.manifest.digest):
            url = setup.url(name, setup.image.url_path(reference))
            transfer = fetch_concurrently(url, 1, headers=accept)
            if transfer.transfers[0].status != 200:
                raise RuntimeError(f"{name} cannot serve manifest {reference}")


def peak_memory(setup: Setup) -> None:
    """(e) each server's peak VmHWM so far (over every blob scenario when called after them)."""
    for name, peer in setup.peers.items():
        setup.record("e_rss_mib", name, peer.peak_rss_mib())
        log.info("(e) %-12s peak RSS %6.1f MiB (pids %s)", name, peer.peak_rss_mib(), peer.pids())
