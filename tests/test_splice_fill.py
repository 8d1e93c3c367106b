"""Cold pulls whose body the download splices into its spool (``fill.splice``), and those it reads.

Through the real mirror app and a fake upstream on a real socket (plain
HTTP). Whether a body was spliced is seen from the transfer's debug record
("splicing N bytes of DIGEST into the spool"), N being what was left on the
socket once the bytes aiohttp had already read were taken. Every pull must
get the exact bytes and leave them cached.

A TLS body must never be spliced (the socket holds ciphertext): those tests
run the mirror as a process, the only way to make it trust a private CA for
its upstream (see :func:`serve_trusting`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mirror.oci import parse_digest
from mirror.proxy.transfer import Transfer
from mirror.storage import layout
from mirror.storage.disk import DiskStorage
from tests.support.fake_upstream import FakeUpstream, Fault
from tests.support.mirror_app import mirror_config, run_mirror
from tests.support.mirror_process import MirrorProcess, start_mirror_process
from tests.support.pki import PrivateCA
from tests.support.pulls import blob_url, is_cached, pull, wait_for, wait_idle

REPO = "team/app"
MIB = 1024 * 1024
SPLICING = re.compile(r"splicing (\d+) bytes of (\S+) into the spool$")


@pytest.fixture
def spliced(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The transfer's debug records, captured."""
    caplog.set_level(logging.DEBUG, logger="mirror.proxy.transfer")
    return caplog


def splice_counts(messages: Iterable[str], digest: str) -> list[int]:
    """How many bytes each splice of ``digest``'s body took off the socket, in order."""
    found = (SPLICING.search(message) for message in messages)
    return [int(match[1]) for match in found if match is not None and match[2] == digest]


def splices(caplog: pytest.LogCaptureFixture, digest: str) -> list[int]:
    """:func:`splice_counts` of the transfer's captured records."""
    messages = (r.getMessage() for r in caplog.records if r.name == "mirror.proxy.transfer")
    return splice_counts(messages, digest)


async def pull_cold_then_warm(
    up: FakeUpstream,
    session: aiohttp.ClientSession,
    tmp_path: Path,
    data: bytes,
    *,
    storage: dict[str, Any] | None = None,
    fill: dict[str, Any] | None = None,
) -> str:
    """Pull ``data`` through a fresh mirror, twice: exact both times, the second from the cache."""
    digest = up.add_blob(data)
    storage = storage or {"path": str(tmp_path / "cache")}
    config = mirror_config(tmp_path / "cache", up.url, storage=storage, fill=fill or {})
    async with run_mirror(config) as mirror:
        url = blob_url(mirror.url, REPO, digest)
        cold = await pull(session, url)
        assert (cold.status, cold.error) == (200, None)
        assert cold.body == data
        await wait_idle(mirror.app)
        assert await is_cached(mirror.app, up.host, digest)
        gets = up.count("GET", f"/blobs/{digest}")
        assert (await pull(session, url)).body == data
        assert up.count("GET", f"/blobs/{digest}") == gets  # the cache answered
    assert Transfer.splicing == 0  # every splice let go of its slot
    return digest


async def test_a_cold_pull_is_spliced_served_exactly_and_cached(
    up: FakeUpstream,
    session: aiohttp.ClientSession,
    tmp_path: Path,
    storage_settings: dict[str, Any],
    spliced: pytest.LogCaptureFixture,
) -> None:
    # S3 uploads two whole 5 MiB parts from the spool as the splice fills it, then the tail.
    data = os.urandom(12 * MIB + 4321)
    digest = await pull_cold_then_warm(up, session, tmp_path, data, storage=storage_settings)
    (count,) = splices(spliced, digest)
    assert len(data) - MIB < count <= len(data)


async def test_fill_splice_false_reads_the_body_through_aiohttp(
    up: FakeUpstream, session: aiohttp.ClientSession, tmp_path: Path,
    spliced: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    data = os.urandom(4 * MIB + 1)
    digest = await pull_cold_then_warm(up, session, tmp_path, data, fill={"splice": False})
    assert splices(spliced, digest) == []


async def test_bytes_read_before_the_splice_go_first(
    up: FakeUpstream, session: aiohttp.ClientSession, tmp_path: Path,
    spliced: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    data = os.urandom(3 * MIB + 99)
    # The headers leave with the first 1 MiB, then the upstream pauses: the
    # client has read part of the body by the time the download hands the
    # socket over, and those bytes must come first in the spool.
    up.add_fault(Fault(method="GET", chunk_size=MIB, chunk_delay=0.3))
    digest = await pull_cold_then_warm(up, session, tmp_path, data)
    (count,) = splices(spliced, digest)
    assert len(data) - MIB <= count < len(data)


async def test_a_chunked_body_is_not_spliced(
    up: FakeUpstream, session: aiohttp.ClientSession, tmp_path: Path,
    spliced: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    up.add_fault(Fault(method="GET", chunked=True))
    data = os.urandom(4 * MIB + 3)
    digest = await pull_cold_then_warm(up, session, tmp_path, data)
    assert splices(spliced, digest) == []


async def test_a_small_blob_is_not_spliced(
    up: FakeUpstream, session: aiohttp.ClientSession, tmp_path: Path,
    spliced: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    data = os.urandom(MIB - 1)
    digest = await pull_cold_then_warm(up, session, tmp_path, data)
    assert splices(spliced, digest) == []


@pytest.mark.parametrize("honour_range", [True, False], ids=["206", "200 again"])
async def test_the_resumed_rest_of_a_cut_body_is_spliced_too(
    up: FakeUpstream, session: aiohttp.ClientSession, tmp_path: Path,
    spliced: pytest.LogCaptureFixture, honour_range: bool,
) -> None:  # fmt: skip
    cut = 1536 * 1024 + 7
    data = os.urandom(4 * MIB + 5)
    up.add_fault(Fault(method="GET", cut_after=cut, times=1))
    # An upstream that ignores Range sends the whole blob again: the bytes the
    # download already has must be skipped, which only aiohttp's reader does.
    up.honour_range = honour_range
    digest = await pull_cold_then_warm(up, session, tmp_path, data)
    # Every byte sent before the cut was kept, spliced or left over in the pipe.
    resumes = [r.headers.get("Range") for r in up.requests if r.method == "GET"]
    assert resumes == [None, f"bytes={cut}-"]  # cold, then resumed (the warm pull: cached)
    counts = splices(spliced, digest)
    if honour_range:
        assert len(counts) == 2
        assert len(data) - cut - MIB < counts[1] <= len(data) - cut
    else:
        assert len(counts) == 1


# -- TLS upstreams: a mirror process ----------------------------------------


def serve_trusting(tmp_path: Path, up: FakeUpstream, ca: PrivateCA) -> MirrorProcess:
    """A mirror process of ``up``, logging at debug, that trusts ``ca`` for its upstream.

    Not the app in this process: the upstream client verifies with aiohttp's
    default context, which aiohttp builds once, at import, from the trust store
    OpenSSL finds then, and the mirror has no setting for an upstream CA. So
    ``SSL_CERT_FILE`` works only for a process started with it, as an operator
    would start the mirror.
    """
    # A TLS body spliced by mistake waits for bytes the ssl layer already took
    # off the socket: a short idle_timeout makes that fail in seconds.
    settings = {"log": {"level": "debug"}, "storage": {"path": str(tmp_path / "cache")},
                "fill": {"idle_timeout": 10},
                "upstreams": [{"url": up.url, "retries": 1, "read_timeout": 10}]}  # fmt: skip
    return start_mirror_process(
        tmp_path, settings, env={**os.environ, "SSL_CERT_FILE": str(ca.root_path)}
    )


async def pull_through_process(
    up: FakeUpstream, session: aiohttp.ClientSession, tmp_path: Path, ca: PrivateCA, data: bytes
) -> list[int]:
    """:func:`pull_cold_then_warm` through :func:`serve_trusting`; the splices of ``data``."""
    digest = up.add_blob(data)
    cached = DiskStorage(tmp_path / "cache").path_of(layout.blob_key(up.host, parse_digest(digest)))
    mirror = serve_trusting(tmp_path, up, ca)
    try:
        url = blob_url(mirror.url, REPO, digest)
        cold = await pull(session, url)
        assert (cold.status, cold.error) == (200, None)
        assert cold.body == data
        await wait_for(cached.exists, "the blob to be committed")  # published by a rename
        assert cached.read_bytes() == data
        gets = up.count("GET", f"/blobs/{digest}")
        assert (await pull(session, url)).body == data
        assert up.count("GET", f"/blobs/{digest}") == gets  # the cache answered
    finally:
        mirror.process.stop()
    lines = [line for line in mirror.log().splitlines() if " mirror.proxy.transfer: " in line]
    return splice_counts(lines, digest)


@pytest.fixture
def private_ca(tmp_path: Path) -> PrivateCA:
    """A CA, and nothing else, that the upstream's certificate chains to."""
    return PrivateCA.create(tmp_path / "pki")


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_a_tls_body_is_read_through_ssl_not_spliced(
    session: aiohttp.ClientSession, tmp_path: Path, private_ca: PrivateCA, tls: bool
) -> None:
    # http is the control: the same pull through the same process does splice.
    context = private_ca.issue_server("127.0.0.1").server_context(tmp_path / "up") if tls else None
    data = os.urandom(3 * MIB + 17)
    async with FakeUpstream(ssl_context=context) as up:
        counts = await pull_through_process(up, session, tmp_path, private_ca, data)
    assert len(counts) == (0 if tls else 1)


async def test_a_cut_tls_body_resumes_and_ends_exact(
    session: aiohttp.ClientSession, tmp_path: Path, private_ca: PrivateCA
) -> None:
    context = private_ca.issue_server("127.0.0.1").server_context(tmp_path / "up")
    cut = 1536 * 1024 + 7
    async with FakeUpstream(ssl_context=context) as up:
        up.add_fault(Fault(method="GET", cut_after=cut, times=1))
        counts = await pull_through_process(
            up, session, tmp_path, private_ca, os.urandom(3 * MIB + 5)
        )
        resumes = [r.headers.get("Range") for r in up.requests if r.method == "GET"]
    assert resumes == [None, f"bytes={cut}-"]  # cold, then resumed (the warm pull: cached)
    assert counts == []
