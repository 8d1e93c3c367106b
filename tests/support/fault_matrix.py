"""The machinery of the fault matrix (tests/test_fault_matrix.py): rows, storage, one cell.

A :class:`Row` is one fault: how to arrange it (upstream fault rules, a full
disk, S3 going down, a kill -9) and which outcomes a client may see. A cell
runs one row with one client behaviour on one backend against a fresh mirror
and checks, in this order: every client ends within :data:`CLIENT_LIMIT`
seconds with an allowed outcome; ``/healthz`` answered within 100 ms
throughout (:class:`~tests.support.watchdog.HealthWatch`, which also breaks a
blocked event loop); once the mirror is idle nothing wrong is kept (``verify``
is clean, no partial file, no multipart upload) and no cache or spool file is
left open; with the fault removed, the next pull gets the exact bytes and
caches them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from mirror.app import FILLS
from mirror.cache.commands import run_verify
from mirror.config import Config
from mirror.oci import OCI_MANIFEST
from tests.support.fake_upstream import FakeUpstream, Fault
from tests.support.fault_clients import BEHAVIOURS, HANG_UP_AFTER, Outcome, Running, session
from tests.support.mirror_app import RunningMirror, mirror_config, run_mirror
from tests.support.processes import (
    ManagedProcess,
    free_port,
    open_files_under,
    start_process,
    wait_for_http,
)
from tests.support.pulls import blob_url, is_cached, pull, running_fill, wait_for, wait_idle
from tests.support.s3 import MotoS3
from tests.support.small_images import minimal_manifest
from tests.support.tcp_proxy import TcpProxy
from tests.support.tmpfs import FILLER, fill_up, resize, small_disk
from tests.support.watchdog import HealthWatch

BLOB_SIZE = 2 * 1024 * 1024
CLIENT_LIMIT = 15.0  # seconds: every client has its bytes, a cut or an error by then
FILL = {"idle_timeout": 0.5, "total_timeout": 30, "memory_limit": "256KiB"}
SEND_BUFFER = 64 * 1024  # see run_mirror: slow clients must lag inside the mirror
SMALL_DISK = "1m"  # half the blob
REPOSITORY = "team/app"


@dataclass(frozen=True)
class Target:
    """What the clients pull: a blob (by digest) or a manifest (by tag)."""

    kind: str
    digest: str
    body: bytes
    reference: str

    def url(self, base: str) -> str:
        """The mirror URL of the target."""
        if self.kind == "blob":
            return blob_url(base, REPOSITORY, self.digest)
        return f"{base}/v2/{REPOSITORY}/manifests/{self.reference}"

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the right bytes."""
        return hashlib.sha256(self.body).hexdigest()


Arrange = Callable[[FakeUpstream, Target], object]


def fault(**knobs: Any) -> Arrange:
    """An upstream fault rule on the target's GETs (:class:`Fault` knobs)."""
    return lambda up, target: up.add_fault(Fault(target.digest, method="GET", **knobs))


def then(*steps: Arrange) -> Arrange:
    """Several arrangements, in order (fault rules apply first come, first used)."""
    return lambda up, target: [step(up, target) for step in steps]


def nothing(up: FakeUpstream, target: Target) -> None:
    """No upstream fault (the fault is in the storage, or the process)."""


@dataclass(frozen=True)
class Row:
    """One fault of the matrix; see the module doc."""

    name: str
    arrange: Arrange
    expect: frozenset[str]  # allowed outcomes: exact, cut, or a status such as "502"
    storage: str | None = None  # disk-full-mid, disk-full, s3-down-mid
    kill: bool = False  # kill -9 the mirror mid-fill (a subprocess)
    kind: str = "blob"
    behaviours: tuple[str, ...] = tuple(BEHAVIOURS)  # the others are skipped, with `why`
    backends: tuple[str, ...] = ("disk", "s3")
    why: str = ""


def row(name: str, arrange: Arrange, expect: str, **more: Any) -> Row:
    """A :class:`Row` with ``expect`` written as ``"cut 502"``."""
    return Row(name, arrange, frozenset(expect.split()), **more)


def make_target(up: FakeUpstream, kind: str) -> Target:
    """A fresh random blob (or manifest, tagged ``v1``) in the fake upstream."""
    body = os.urandom(BLOB_SIZE)
    if kind == "blob":
        return Target(kind, up.add_blob(body), body, "")
    manifest = minimal_manifest(body.hex()[:16])
    digest = up.add_manifest(REPOSITORY, manifest, OCI_MANIFEST, tag="v1")
    return Target(kind, digest, manifest, "v1")


# --------------------------------------------------------------------------- storage


@dataclass
class StorageBed:
    """The cache storage of one cell, with the row's storage fault armed."""

    settings: dict[str, Any]
    disk: Path | None = None  # the small file system, when the row fills one
    proxy: TcpProxy | None = None
    uploads: Callable[[], list[Any]] = field(default=lambda: [])

    @property
    def local(self) -> Path:
        """The disk cache (disk backend) or the spool directory (S3)."""
        return Path(self.settings["path"])

    def restore(self) -> None:
        """Remove the storage fault: room on the disk, S3 reachable."""
        if self.disk is not None:
            (self.disk / FILLER).unlink(missing_ok=True)
            resize(self.disk, "64m")
        if self.proxy is not None:
            self.proxy.restore()

    async def break_mid_fill(self, mirror: RunningMirror, up: FakeUpstream, digest: str) -> None:
        """For ``s3-down-mid``: cut S3 once the download has 512 KiB."""
        if self.proxy is None:
            return
        for _ in range(int(CLIENT_LIMIT / 0.005)):
            fill = running_fill(mirror.app, up.host, digest)
            if fill is not None and fill.written >= 512 * 1024:
                self.proxy.cut()
                return
            await asyncio.sleep(0.005)

    def open_files(self) -> list[str]:
        """Files under the cache or spool directory this process still has open."""
        return open_files_under(self.local)

    async def assert_clean(self, config: Config) -> None:
        """Nothing wrong kept: verify is clean, no partial file, no upload, no spool file."""
        # Followers close the spool as their requests end, just after their clients saw it.
        await wait_for(lambda: not self.open_files(), f"files to be closed: {self.open_files()}")
        report = await run_verify(config, quarantine=False)
        assert report.ok, f"verify: damaged {report.damaged}, unreadable {report.unreadable}"
        partials = self.local / ".partial"
        leftovers = list(partials.iterdir()) if partials.is_dir() else []
        spool = self.local / ".spool"
        leftovers += list(spool.iterdir()) if spool.is_dir() else []
        assert leftovers == [], f"left behind: {leftovers}"
        assert self.uploads() == [], "a multipart upload was left open"


@contextlib.asynccontextmanager
async def storage_bed(
    row_: Row, settings: dict[str, Any], s3: MotoS3 | None
) -> AsyncIterator[StorageBed]:
    """``settings`` (a ``storage_settings`` table) with the row's storage fault set up."""
    settings = {**settings, "s3": dict(settings["s3"])} if "s3" in settings else dict(settings)
    async with contextlib.AsyncExitStack() as stack:
        bed = StorageBed(settings)
        if s3 is not None:
            bucket = settings["s3"]["bucket"]
            bed.uploads = lambda: s3.uploads(bucket)
            if row_.storage == "s3-down-mid":
                endpoint = urlsplit(s3.endpoint_url)
                bed.proxy = await stack.enter_async_context(
                    TcpProxy(endpoint.hostname or "127.0.0.1", endpoint.port or 80)
                )
                settings["s3"]["endpoint_url"] = bed.proxy.url
        if row_.storage in ("disk-full-mid", "disk-full"):
            bed.disk = stack.enter_context(small_disk(bed.local, SMALL_DISK))
            if row_.storage == "disk-full":
                (bed.local / ".partial").mkdir()  # as the disk backend makes at start
                fill_up(bed.disk)
        yield bed


# --------------------------------------------------------------------------- a cell


def assert_outcomes(row_: Row, target: Target, outcomes: list[Outcome]) -> None:
    """Every client saw an allowed outcome, in bounded time."""
    for outcome in outcomes:
        kind = outcome.kind(target.sha256)
        allowed = row_.expect | {"hangup"} if outcome.client == "hang-up" else row_.expect
        assert kind in allowed, f"{outcome.client}: {kind} not in {sorted(allowed)}: {outcome}"
        assert outcome.elapsed < CLIENT_LIMIT, f"{outcome.client} took {outcome.elapsed:.1f}s"
        if kind == "429":
            assert outcome.retry_after, "a 429 must carry Retry-After"


async def run_cell(
    row_: Row, behaviour: str, settings: dict[str, Any], tmp_path: Path, s3: MotoS3 | None
) -> None:
    """One cell of the matrix, in-process; see the module doc."""
    async with FakeUpstream() as up, storage_bed(row_, settings, s3) as bed:
        target = make_target(up, row_.kind)
        config = mirror_config(tmp_path / "unused", up.url, fill=FILL, storage=bed.settings)
        async with run_mirror(config, send_buffer=SEND_BUFFER) as mirror:
            async with HealthWatch(mirror.url, asyncio.get_running_loop()) as watch:
                row_.arrange(up, target)
                breaker = asyncio.create_task(bed.break_mid_fill(mirror, up, target.digest))
                running: Running = lambda: len(mirror.app[FILLS]) > 0  # noqa: E731
                outcomes = await asyncio.wait_for(
                    BEHAVIOURS[behaviour](target.url(mirror.url), running), CLIENT_LIMIT + 5
                )
                breaker.cancel()
                await wait_idle(mirror.app)
            watch.check()
            assert_outcomes(row_, target, outcomes)
            up.faults.clear()
            bed.restore()
            await bed.assert_clean(config)
            await assert_next_pull(mirror, up, target)
        await bed.assert_clean(config)


async def assert_next_pull(mirror: RunningMirror, up: FakeUpstream, target: Target) -> None:
    """With the fault gone, a pull gets the exact bytes, and a blob is cached."""
    async with session() as client:
        pulled = await pull(client, target.url(mirror.url))
    assert pulled.status == 200, pulled
    assert pulled.error is None, pulled
    assert pulled.sha256 == target.sha256
    if target.kind == "blob":
        await wait_idle(mirror.app)
        assert await is_cached(mirror.app, up.host, target.digest), "the cache did not recover"


# --------------------------------------------------------------------------- kill -9


def mirror_process(
    settings: dict[str, Any], upstream_url: str, log: Path
) -> tuple[ManagedProcess, str]:
    """``python -m mirror serve`` on a free port, caching as ``settings`` say; and its URL."""
    port = free_port()
    argv = [
        sys.executable, "-m", "mirror", "serve", "--listen", f"127.0.0.1:{port}",
        "--cache-dir", settings["path"], "--upstream", upstream_url,
    ]  # fmt: skip
    env = dict(os.environ)
    if settings.get("backend") == "s3":
        s3 = settings["s3"]
        env.update(
            MIRROR_STORAGE="s3", MIRROR_S3_BUCKET=s3["bucket"], MIRROR_S3_PREFIX=s3["prefix"],
            MIRROR_S3_REGION=s3["region"], MIRROR_S3_ENDPOINT_URL=s3["endpoint_url"],
            AWS_ACCESS_KEY_ID=s3["access_key_id"], AWS_SECRET_ACCESS_KEY=s3["secret_access_key"],
        )  # fmt: skip
    process = start_process("mirror", argv, log_path=log, cwd=Path(__file__).parents[2], env=env)
    wait_for_http(f"http://127.0.0.1:{port}/healthz", process)
    return process, f"http://127.0.0.1:{port}"


async def _pull_then_kill(url: str, process: ManagedProcess) -> Outcome:
    """A slow client; the mirror is killed (-9) once it has 256 KiB."""
    started = time.monotonic()
    size, broken = 0, False
    async with session(small_buffer=True) as client, client.get(url) as resp:
        try:
            while chunk := await resp.content.read(64 * 1024):
                size += len(chunk)
                if size >= HANG_UP_AFTER and process.alive():
                    os.kill(process.pid, signal.SIGKILL)
                    await asyncio.to_thread(process.popen.wait, 10)
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
            broken = True
        elapsed = time.monotonic() - started
        return Outcome("slow", resp.status, size, "", broken, False, elapsed, None)


async def run_kill_cell(
    row_: Row, settings: dict[str, Any], tmp_path: Path, s3: MotoS3 | None
) -> None:
    """kill -9 mid-fill: the client is cut; a restart sweeps the partial and pulls again."""
    async with FakeUpstream() as up, storage_bed(row_, settings, s3) as bed:
        target = make_target(up, "blob")
        up.add_fault(Fault(target.digest, method="GET", rate=512 * 1024, times=1))  # ~4 s
        start = functools.partial(mirror_process, bed.settings, up.url)
        process, url = await asyncio.to_thread(start, tmp_path / "first.log")
        try:
            outcome = await _pull_then_kill(target.url(url), process)
        finally:
            process.stop()
        assert_outcomes(row_, target, [outcome])
        process, url = await asyncio.to_thread(start, tmp_path / "second.log")
        try:
            async with HealthWatch(url) as watch:
                async with session() as client:
                    pulled = await pull(client, target.url(url))
            watch.check()
        finally:
            process.stop()  # SIGTERM: a graceful stop lets the verified fill publish
        assert pulled.sha256 == target.sha256
        config = mirror_config(tmp_path / "unused", up.url, storage=bed.settings)
        await bed.assert_clean(config)
        report = await run_verify(config, quarantine=False)
        assert report.blobs == 1, "the pull after the restart was not cached"
