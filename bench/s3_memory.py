"""Peak RSS of the mirror process while it fills a large blob into S3.

Starts moto (S3, its own process), a fake upstream serving one blob of
``--size-mib`` MiB (in this process), and ``python -m mirror serve --storage s3``
as a subprocess with credentials from the standard AWS environment variables.
Pulls the blob once (a miss: upstream -> spool + multipart upload), waits for
the object to land in the bucket, pulls it again (a hit streamed from S3),
and reads the mirror's ``VmHWM`` from ``/proc/PID/status`` after each.

    python bench/s3_memory.py --size-mib 1024
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.fake_upstream import FakeUpstream
from tests.support.processes import free_port, start_process, wait_for_http
from tests.support.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoS3, running_moto

MIB = 1024 * 1024


def status_kib(pid: int, field: str) -> int:
    """A ``kB`` field (VmHWM, VmRSS) of /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


async def fetch(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    """Stream a blob, returning its size and sha256 digest."""
    hasher, size = hashlib.sha256(), 0
    async with session.get(url) as answer:
        answer.raise_for_status()
        async for chunk in answer.content.iter_chunked(MIB):
            hasher.update(chunk)
            size += len(chunk)
    return size, "sha256:" + hasher.hexdigest()


async def wait_for_object(s3: MotoS3, bucket: str, prefix: str, size: int) -> None:
    for _ in range(1200):
        found = await asyncio.to_thread(s3.keys, bucket, prefix)
        if size in found.values():
            return
        await asyncio.sleep(0.25)
    raise RuntimeError("the blob never appeared in the bucket")


def mirror_argv(port: int, workdir: Path, upstream: str, s3: MotoS3, bucket: str) -> list[str]:
    return [
        sys.executable, "-m", "mirror", "serve", "--listen", f"127.0.0.1:{port}",
        "--cache-dir", str(workdir / "spool"), "--upstream", upstream, "--storage", "s3",
        "--s3-bucket", bucket, "--s3-prefix", "bench", "--s3-region", REGION,
        "--s3-endpoint-url", s3.endpoint_url, "--log-level", "warning",
    ]  # fmt: skip


async def run(size_mib: int, workdir: Path, s3: MotoS3) -> None:
    block = os.urandom(MIB)
    blob = block * size_mib
    bucket = s3.create_bucket()
    async with FakeUpstream() as upstream:
        digest = upstream.add_blob(blob)
        del blob
        port = free_port()
        env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        mirror = start_process(
            "mirror", mirror_argv(port, workdir, upstream.url, s3, bucket),
            log_path=workdir / "mirror.log", env=env,
        )  # fmt: skip
        try:
            await asyncio.to_thread(wait_for_http, f"http://127.0.0.1:{port}/v2/", mirror)
            print(f"mirror pid {mirror.pid}: VmHWM at start {status_kib(mirror.pid, 'VmHWM')} KiB")
            url = f"http://127.0.0.1:{port}/v2/library/big/blobs/{digest}"
            async with aiohttp.ClientSession() as session:
                started = time.monotonic()
                assert await fetch(session, url) == (size_mib * MIB, digest)
                await wait_for_object(s3, bucket, "bench/", size_mib * MIB)
                fill_seconds = time.monotonic() - started
                fill_peak = status_kib(mirror.pid, "VmHWM")
                started = time.monotonic()
                assert await fetch(session, url) == (size_mib * MIB, digest)
                hit_seconds = time.monotonic() - started
            print(f"fill of {size_mib} MiB into S3: {fill_seconds:.1f} s, "
                  f"peak RSS (VmHWM) {fill_peak / 1024:.1f} MiB")  # fmt: skip
            print(f"hit streamed from S3: {hit_seconds:.1f} s, "
                  f"peak RSS (VmHWM) {status_kib(mirror.pid, 'VmHWM') / 1024:.1f} MiB")  # fmt: skip
            print(f"upstream blob GETs: {upstream.count('GET', '/blobs/' + digest)}")
        finally:
            mirror.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="blob size (default 1024)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="s3-memory-") as tmp:
        workdir = Path(tmp)
        with running_moto(workdir) as s3:
            asyncio.run(run(args.size_mib, workdir, s3))


if __name__ == "__main__":
    main()
