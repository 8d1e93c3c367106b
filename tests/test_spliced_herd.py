"""A herd of clients following one cold download whose body is spliced into the spool.

A spliced body is never in memory: plain-TCP clients are sent spans of the
spool with ``sendfile``, TLS clients read it in blocks that followers at the
same place share (:mod:`mirror.proxy.download`). Each herd is four clients
asking for the whole blob and one asking for a ``Range``, all at once, on an
upstream slow enough (plain HTTP, about a second) for every client to follow
the one download. Each must get exactly its bytes, the body must have been
spliced (the transfer's "splicing" debug record) and the blob cached exact.

TLS clients need the mirror serving https: a mirror process (as in
:mod:`tests.test_tls_serve`), whose debug log is read for the record.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mirror.oci import parse_digest
from mirror.storage import layout
from mirror.storage.disk import DiskStorage
from tests.support import fault_clients
from tests.support.fake_upstream import FakeUpstream, Fault
from tests.support.fault_matrix import CLIENT_LIMIT
from tests.support.mirror_app import mirror_config, run_mirror
from tests.support.mirror_process import MirrorProcess, start_mirror_process
from tests.support.pki import PrivateCA
from tests.support.processes import free_port
from tests.support.pulls import Pulled, blob_url, is_cached, pull, wait_for, wait_idle
from tests.support.watchdog import HealthWatch
from tests.test_splice_fill import splice_counts, splices

REPO = "team/app"
MIB = 1024 * 1024
BLOB_SIZE = 6 * MIB + 321
RANGE = (1000, 2_999_999)
CUT = 12 * MIB  # where the upstream breaks off the 16 MiB blob, for good


def slow(digest: str) -> Fault:
    """24 chunks of 256 KiB, 40 ms apart: the download lasts about a second."""
    return Fault(digest, method="GET", chunk_size=256 * 1024, chunk_delay=0.04)


async def herd(session: aiohttp.ClientSession, url: str) -> tuple[list[Pulled], Pulled]:
    """Four whole pulls and one ranged pull of ``url``, all at once."""
    ranged = pull(session, url, {"Range": "bytes={}-{}".format(*RANGE)})
    *whole, part = await asyncio.gather(*(pull(session, url) for _ in range(4)), ranged)
    return whole, part


def assert_herd_served(whole: list[Pulled], ranged: Pulled, data: bytes) -> None:
    """Each whole pull got every byte; the ranged one exactly its range, as a 206."""
    for pulled in whole:
        assert (pulled.status, pulled.error) == (200, None)
        assert pulled.body == data
    assert (ranged.status, ranged.error) == (206, None)
    assert ranged.headers["Content-Range"] == f"bytes {RANGE[0]}-{RANGE[1]}/{len(data)}"
    assert ranged.body == data[RANGE[0] : RANGE[1] + 1]


def followers(metrics_text: str) -> float:
    """``mirror_fill_followers_total`` in a /metrics page."""
    for line in metrics_text.splitlines():
        if line.startswith("mirror_fill_followers_total "):
            return float(line.split()[1])
    raise AssertionError("mirror_fill_followers_total not exported")


async def test_plain_clients_follow_a_spliced_download_with_spool_spans(
    up: FakeUpstream, session: aiohttp.ClientSession, tmp_path: Path,
    storage_settings: dict[str, Any], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG, logger="mirror.proxy.transfer")
    data = os.urandom(BLOB_SIZE)
    digest = up.add_blob(data)
    up.add_fault(slow(digest))
    config = mirror_config(tmp_path / "cache", up.url, storage=storage_settings)
    async with run_mirror(config) as mirror:
        url = blob_url(mirror.url, REPO, digest)
        whole, ranged = await herd(session, url)
        assert_herd_served(whole, ranged, data)
        async with session.get(mirror.url + "/metrics") as resp:
            assert followers(await resp.text()) == 4  # one download, four joined it
        await wait_idle(mirror.app)
        assert await is_cached(mirror.app, up.host, digest)
        assert (await pull(session, url)).body == data  # from the cache
    assert up.count("GET", f"/blobs/{digest}") == 1
    (count,) = splices(caplog, digest)
    assert len(data) - MIB < count <= len(data)


# -- TLS clients: a mirror process serving https ---------------------------------


@pytest.fixture
def private_ca(tmp_path: Path) -> PrivateCA:
    """The CA of the mirror's certificate."""
    return PrivateCA.create(tmp_path / "pki")


@pytest.fixture
async def tls_session(private_ca: PrivateCA) -> AsyncIterator[aiohttp.ClientSession]:
    """One TLS connection per request, trusting ``private_ca``."""
    context = ssl.create_default_context(cafile=private_ca.root_path)
    connector = aiohttp.TCPConnector(limit=0, force_close=True, ssl=context)
    async with aiohttp.ClientSession(connector=connector) as client:
        yield client


def serve_https(tmp_path: Path, up: FakeUpstream, ca: PrivateCA, **settings: Any) -> MirrorProcess:
    """A mirror process of ``up`` serving https, logging at debug; ``settings`` added."""
    ca.issue_server("127.0.0.1").write(tmp_path / "tls.crt", tmp_path / "tls.key")
    table = {"log": {"level": "debug"}, "storage": {"path": str(tmp_path / "cache")},
             "upstreams": [{"url": up.url, "retries": 1, "read_timeout": 10}],
             "tls": {"cert": str(tmp_path / "tls.crt"), "key": str(tmp_path / "tls.key")},
             **settings}  # fmt: skip
    context = ssl.create_default_context(cafile=ca.root_path)
    return start_mirror_process(tmp_path, table, tls_client=context)


def cached_path(tmp_path: Path, up: FakeUpstream, digest: str) -> Path:
    """Where the mirror's disk cache keeps ``digest`` once committed."""
    key = layout.blob_key(up.host, parse_digest(digest))
    return DiskStorage(tmp_path / "cache").path_of(key)


async def test_tls_clients_follow_a_spliced_download_in_shared_spool_blocks(
    up: FakeUpstream, tls_session: aiohttp.ClientSession, tmp_path: Path, private_ca: PrivateCA
) -> None:
    data = os.urandom(BLOB_SIZE)
    digest = up.add_blob(data)
    up.add_fault(slow(digest))
    mirror = serve_https(tmp_path, up, private_ca)
    try:
        url = blob_url(mirror.url, REPO, digest)
        whole, ranged = await herd(tls_session, url)
        assert_herd_served(whole, ranged, data)
        async with tls_session.get(mirror.url + "/metrics") as resp:
            assert followers(await resp.text()) == 4  # one download, four joined it
        cached = cached_path(tmp_path, up, digest)
        await wait_for(cached.exists, "the blob to be committed")  # published by a rename
        assert cached.read_bytes() == data
    finally:
        mirror.process.stop()
    assert up.count("GET", f"/blobs/{digest}") == 1
    lines = [line for line in mirror.log().splitlines() if " mirror.proxy.transfer: " in line]
    (count,) = splice_counts(lines, digest)
    assert len(data) - MIB < count <= len(data)


async def stalled_tls(url: str, tls: ssl.SSLContext, cut: Callable[[], bool]) -> None:
    """A client that reads 64 KiB of ``url``, then nothing until ``cut()``, then the rest.

    The mirror's write to it waits meanwhile: only the mirror cutting it at
    once, when the download fails, lets ``cut()`` become true. The rest must
    then be a broken transfer (what the kernel buffers held, then the end).
    """
    async with fault_clients.session(small_buffer=True, tls=tls) as client:
        async with client.get(url) as resp:
            assert resp.status == 200
            await resp.content.readexactly(64 * 1024)
            await wait_for(cut, "the mirror to cut the client that reads nothing", CLIENT_LIMIT)
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()


async def test_slow_tls_clients_are_cut_when_the_spliced_download_fails_for_good(
    up: FakeUpstream, tls_session: aiohttp.ClientSession, tmp_path: Path, private_ca: PrivateCA
) -> None:
    # As the fault matrix's "cut forever" row, whose clients are plain: one
    # client reads slowly, one stops reading. Both are megabytes behind when
    # the body breaks off, more than the kernel buffers hold, so the mirror's
    # writes to them wait, and must not wait on.
    data = os.urandom(16 * MIB)
    digest = up.add_blob(data)
    up.add_fault(Fault(digest, method="GET", cut_after=CUT, chunk_size=512 * 1024,
                       chunk_delay=0.01, times=1))  # fmt: skip
    up.add_fault(Fault(digest, method="GET", cut_after=0))
    side = f"127.0.0.1:{free_port()}"  # /healthz in plain HTTP, for the watchdog
    mirror = serve_https(tmp_path, up, private_ca, metrics={"listen": side},
                         fill={"idle_timeout": 2, "max_resumes": 2})  # fmt: skip
    try:
        url, tls = blob_url(mirror.url, REPO, digest), mirror.tls_client
        assert tls is not None
        cut = f"aborting GET /v2/{REPO}/blobs/{digest}: "
        both_cut = lambda: mirror.log().count(cut) == 2  # noqa: E731
        async with HealthWatch(f"http://{side}") as watch:
            reader, _ = await asyncio.wait_for(
                asyncio.gather(fault_clients.slow_tls(url, tls), stalled_tls(url, tls, both_cut)),
                CLIENT_LIMIT + 5,
            )
        watch.check()
        assert reader.kind(hashlib.sha256(data).hexdigest()) == "cut", reader
        assert reader.elapsed < CLIENT_LIMIT
        # Cut at once, not once it had been sent all the mirror had (what its buffers held).
        assert reader.size < CUT
        assert up.count("GET", f"/blobs/{digest}") >= 2  # the download resumed before failing
        up.faults.clear()
        whole, ranged = await herd(tls_session, url)  # the fault gone: a new download
        assert_herd_served(whole, ranged, data)
        cached = cached_path(tmp_path, up, digest)
        await wait_for(cached.exists, "the blob to be committed")
        assert cached.read_bytes() == data
    finally:
        mirror.process.stop()
    assert [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file() and
            p.parent.name in (".partial", ".spool")] == []  # fmt: skip
