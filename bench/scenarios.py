"""The scenarios (a)-(d); each records one value per peer per repetition.

Results are ``{metric: {peer: [value per repetition]}}``; the metric names
are listed in :data:`bench.report.METRICS`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bench.load import ACCEPT_MANIFEST, fetch_concurrently, fetch_one, run_wrk
from bench.peers import Peer
from bench.seed import BlobFile, SmallImage, push_blob
from tests.support.registry import UpstreamRegistry

log = logging.getLogger("bench")

Results = dict[str, dict[str, list[float]]]
MIB = 1024 * 1024


@dataclass
class Setup:
    """Everything the scenarios need: servers, content, knobs."""

    upstream: UpstreamRegistry
    peers: dict[str, Peer]  # by name; "upstream" is the registry itself
    proxies: list[str]  # peers that pull through from the upstream
    workdir: Path
    size: int
    warm_blob: BlobFile
    image: SmallImage
    concurrency: int = 16
    herd: int = 50
    wrk_seconds: float = 5.0
    results: Results = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))

    def record(self, metric: str, peer: str, value: float) -> None:
        """Keep one value of one repetition."""
        self.results[metric][peer].append(value)

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
        many = fetch_concurrently(url, setup.concurrency, setup.size)
        setup.record("a16_mibs", name, many.mib_per_s)
        setup.record("a16_failures", name, many.failures(setup.size))
        log.info("(a) %-12s 1 client %7.0f MiB/s, %d clients %7.0f MiB/s",
                 name, setup.size / MIB / one.total, setup.concurrency, many.mib_per_s)  # fmt: skip


def cold_pull(setup: Setup) -> None:
    """(b) a fresh blob: directly from the upstream, then cold through each proxy."""
    blob = push_blob(setup.upstream, setup.workdir / "blobs", setup.size)
    for name in ["upstream", *setup.proxies]:
        transfer = fetch_one(setup.url(name, blob.url_path()), setup.size)
        setup.record("b_ttfb_ms", name, transfer.first_byte * 1000)
        setup.record("b_total_s", name, transfer.total)
        log.info("(b) %-12s first byte %6.1f ms, total %6.2f s",
                 name, transfer.first_byte * 1000, transfer.total)  # fmt: skip
        setup.peers[name].wait_cached(blob.digest[7:], setup.size)


def thundering_herd(setup: Setup) -> None:
    """(c) ``herd`` clients ask each proxy for one fresh blob at the same moment."""
    blob = push_blob(setup.upstream, setup.workdir / "blobs", setup.size)
    for name in setup.proxies:
        mark = setup.upstream.log_mark()
        batch = fetch_concurrently(setup.url(name, blob.url_path()), setup.herd, setup.size)
        gets = [
            entry
            for entry in setup.upstream.requests(mark)
            if entry.method == "GET" and entry.path == blob.url_path()
        ]
        setup.record("c_wall_s", name, batch.wall)
        setup.record("c_upstream_gets", name, len(gets))
        setup.record("c_upstream_mib", name, sum(e.size for e in gets) / MIB)
        setup.record("c_failures", name, batch.failures(setup.size))
        log.info("(c) %-12s %d clients in %6.2f s, %d upstream GETs, %.0f MiB from upstream, "
                 "%d failed", name, setup.herd, batch.wall, len(gets),
                 sum(e.size for e in gets) / MIB, batch.failures(setup.size))  # fmt: skip
        setup.peers[name].wait_cached(blob.digest[7:], setup.size)


def manifests(setup: Setup, order: list[str]) -> None:
    """(d) a cached manifest by digest and by tag under wrk, 64 connections."""
    for name in order:
        for kind, reference in (("digest", setup.image.manifest.digest), ("tag", setup.image.tag)):
            url = setup.url(name, setup.image.url_path(reference))
            result = run_wrk(url, setup.wrk_seconds)
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
    """(e) VmHWM of each server so far (it covers (a)-(c) when called after them)."""
    for name, peer in setup.peers.items():
        setup.record("e_rss_mib", name, peer.peak_rss_mib())
        log.info("(e) %-12s peak RSS %6.1f MiB (pids %s)", name, peer.peak_rss_mib(), peer.pids())
