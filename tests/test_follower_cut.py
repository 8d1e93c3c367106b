"""A client is cut as soon as its download fails, even while a write to it waits."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support import fault_clients
from tests.support.fake_upstream import FakeUpstream, Fault
from tests.support.mirror_app import mirror_config, run_mirror
from tests.support.pulls import blob_url, running_fill, wait_for, wait_idle

REPO = "team/app"


async def test_a_client_that_stopped_reading_is_cut_when_the_download_fails(
    up: FakeUpstream, tmp_path: Path, storage_settings: dict[str, Any]
) -> None:
    data = os.urandom(4 * 1024 * 1024)
    digest = up.add_blob(data)
    # Three quarters of the blob over a second or so, then cut for good.
    up.add_fault(Fault(digest, method="GET", cut_after=3 * 1024 * 1024, chunk_size=256 * 1024,
                       chunk_delay=0.05, times=1))  # fmt: skip
    up.add_fault(Fault(digest, method="GET", cut_after=0))
    config = mirror_config(tmp_path, up.url, fill={"idle_timeout": 5}, storage=storage_settings)
    async with run_mirror(config, send_buffer=64 * 1024) as mirror:
        async with fault_clients.session(small_buffer=True) as client:
            async with client.get(blob_url(mirror.url, REPO, digest)) as resp:
                await resp.content.readexactly(64 * 1024)  # then it reads no more
                fill = running_fill(mirror.app, up.host, digest)
                assert fill is not None
                await wait_for(lambda: fill.error is not None, "the download to fail")
                # The mirror's write to this client was waiting; it must not wait on.
                await wait_for(lambda: fill.spool_fd is None, "the client to be cut", limit=5)
                with pytest.raises(aiohttp.ClientPayloadError):
                    await resp.read()
        await wait_idle(mirror.app)
