"""The cold scenarios: content no peer has seen, pulled once through each.

* **(b)** and **(f)**: one fresh blob (``--blob-mib``, ``--big-mib``) pulled
  by one client: time to first byte, total time, and the server's CPU
  seconds per GiB from ``/proc/PID/stat`` (from the request until the blob is
  published in the cache, so a commit or an upload after the last byte
  counts). (f) also records each server's peak RSS during its pull.
* **(g)**: ``small_count`` fresh 4 KiB blobs, ``small_clients`` clients at once
  (each fetching its share one after the other on one connection): blobs per
  second, and the server's CPU per blob.
* **(h)**: ``tag_count`` fresh tags, each naming a manifest of its own, pulled
  by ``small_clients`` clients the same way: every request is a miss for every
  proxy (distribution must HEAD the tag and GET the manifest upstream, our
  mirror GETs it by tag).

Every peer of a repetition pulls the same content: each proxy has a cache of
its own, so the content is cold for each of them. Before each peer's turn
:meth:`Setup.settle` flushes dirty pages (``sync``), pauses, so the page-cache
writeback of the previous peer's download does not run into the next
measurement, and warms as much free memory as the pull will store: on this
VM writing into memory the kernel had not used for a while cost ten times as
much CPU as into pages just freed (``bench/memory.py``), a cost that falls
on whichever server writes its cache on the client's path. After its turn in
(b) and (f) the peer's stored copy of the blob is deleted (:attr:`Peer.forget`;
no later scenario asks for it), and after every peer's turn the upstream's
(:func:`bench.seed.drop_blob`): kept, five repetitions leave 7 GiB of page
cache behind.
"""

from __future__ import annotations

import logging
import os

from bench.load import ACCEPT_MANIFEST, fetch_many, fetch_one
from bench.scenarios import MIB, Setup
from bench.seed import drop_blob, push_blob, push_blobs, push_tagged_manifests

log = logging.getLogger("bench")

GIB = 1024 * MIB
SMALL_BLOB = 4096


def cold_pull(setup: Setup, order: list[str], size: int, scenario: str) -> None:
    """(b) / (f): a fresh blob of ``size`` bytes, pulled once through each peer in ``order``."""
    blob = push_blob(setup.upstream, setup.workdir / "blobs", size, keep=False)
    for name in order:
        peer = setup.peers[name]
        setup.settle(writes=size)
        peer.reset_peak()
        cpu = peer.cpu_seconds()
        transfer = fetch_one(setup.url(name, blob.url_path()), size)
        peer.wait_cached([blob.digest[7:]], size)
        cpu = peer.cpu_seconds() - cpu
        if peer.forget is not None:
            peer.forget(blob.digest[7:])
        setup.record(f"{scenario}_ttfb_ms", name, transfer.first_byte * 1000)
        setup.record(f"{scenario}_total_s", name, transfer.total)
        setup.record(f"{scenario}_cpu_s_per_gib", name, cpu / (size / GIB))
        setup.record(f"{scenario}_rss_mib", name, peer.scenario_peak_rss_mib())
        log.info("(%s) %-12s first byte %6.1f ms, total %6.2f s, CPU %5.2f s, peak RSS %5.0f MiB",
                 scenario, name, transfer.first_byte * 1000, transfer.total, cpu,
                 peer.scenario_peak_rss_mib())  # fmt: skip
    drop_blob(setup.upstream, blob.digest)


def small_blobs(setup: Setup, order: list[str]) -> None:
    """(g) ``small_count`` fresh 4 KiB blobs, ``small_clients`` clients at once."""
    blobs = push_blobs(setup.upstream, setup.workdir / "blobs", setup.knobs.small_count, SMALL_BLOB)
    paths = [blob.url_path() for blob in blobs]
    for name in order:
        peer = setup.peers[name]
        setup.settle()
        cpu = peer.cpu_seconds()
        batch = fetch_many([setup.url(name, path) for path in paths], setup.knobs.small_clients)
        peer.wait_cached([blob.digest[7:] for blob in blobs], SMALL_BLOB)
        cpu = peer.cpu_seconds() - cpu
        failed = batch.failures(SMALL_BLOB)
        setup.record("g_blobs_per_s", name, len(paths) / batch.wall)
        setup.record("g_cpu_ms_per_blob", name, cpu * 1000 / len(paths))
        setup.record("g_failures", name, failed)
        log.info("(g) %-12s %d blobs by %d clients in %6.2f s: %6.0f blobs/s, CPU %.2f s, "
                 "%d failed", name, len(paths), setup.knobs.small_clients, batch.wall,
                 len(paths) / batch.wall, cpu, failed)  # fmt: skip


def cold_tags(setup: Setup, order: list[str]) -> None:
    """(h) ``tag_count`` fresh tags, each a manifest of its own, ``small_clients`` at once."""
    run = os.urandom(4).hex()
    tags = [f"cold-{run}-{number}" for number in range(setup.knobs.tag_count)]
    push_tagged_manifests(setup.upstream, setup.image, tags)
    accept = (f"Accept: {ACCEPT_MANIFEST}",)
    for name in order:
        setup.settle()
        urls = [setup.url(name, setup.image.url_path(tag)) for tag in tags]
        batch = fetch_many(urls, setup.knobs.small_clients, headers=accept)
        failed = sum(1 for transfer in batch.transfers if transfer.status != 200)
        setup.record("h_tags_per_s", name, len(tags) / batch.wall)
        setup.record("h_failures", name, failed)
        log.info("(h) %-12s %d fresh tags by %d clients in %6.2f s: %6.0f req/s, %d failed",
                 name, len(tags), setup.knobs.small_clients, batch.wall, len(tags) / batch.wall,
                 failed)  # fmt: skip
