"""Export and import as a separate process, for stdout/stdin streams, kill -9 and peak RSS.

The mirror's ``export`` and ``import`` commands work on a configured cache;
this driver runs the same library code over the test source and disk sink,
with knobs the commands do not have::

    python -m tests.support.airgap_process export DEST REF...   (DEST may be "-")
    python -m tests.support.airgap_process import SRC CACHE_DIR (SRC may be "-")

``import`` prints its report as JSON on stdout and exits 1 unless it is ok.
``$AIRGAP_TEST_WRITE_DELAY`` (seconds) slows each blob chunk written, so a
test can kill the process in the middle of a large blob. With
``$AIRGAP_TEST_STATS`` set to a file name, the process writes there, as JSON,
the seconds the export or import took (without the interpreter's start) and
its peak RSS. The peak is ``VmHWM`` of its own memory: a parent's ``wait4``
would also count the memory the child had before ``exec``, which is the
parent's (a pytest process of several hundred MiB).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

from mirror.airgap.content import ImportSink
from mirror.airgap.export import export_layout
from mirror.oci import Digest
from mirror.progress import make_reporter, print_json
from mirror.storage.base import BlobWriter, WriterWrapper
from tests.support.airgap_content import DiskContent, ImageSetSource, import_into
from tests.support.images import ImageSet, build_default_images

DELAY_ENV = "AIRGAP_TEST_WRITE_DELAY"
STATS_ENV = "AIRGAP_TEST_STATS"


class SlowSink(DiskContent):
    """A disk sink whose blob writes each wait ``delay`` seconds."""

    def __init__(self, root: Path, delay: float) -> None:
        super().__init__(root)
        self.delay = delay

    async def blob_writer(self, upstream: str, digest: Digest) -> BlobWriter:
        return _SlowWriter(await super().blob_writer(upstream, digest), self.delay)


class _SlowWriter(WriterWrapper):
    def __init__(self, inner: BlobWriter, delay: float) -> None:
        super().__init__(inner)
        self.delay = delay

    async def write(self, *chunks: bytes) -> None:
        await asyncio.sleep(self.delay)
        await self.inner.write(*chunks)


async def run_export(dest: str, refs: list[str], image_set: ImageSet) -> int:
    source = ImageSetSource(image_set, refs)
    images = [image async for image in source.images()]
    await export_layout(source, images, dest, make_reporter(quiet=True))
    return 0


async def run_import(source: str, cache_dir: Path) -> int:
    delay = float(os.environ.get(DELAY_ENV, "0"))
    sink: ImportSink = SlowSink(cache_dir, delay) if delay else DiskContent(cache_dir)
    assert isinstance(sink, DiskContent)
    await sink.storage.sweep_partials()  # what the cache does at start
    report = await import_into(sink, source)
    print_json(report.to_json())
    return 0 if report.ok else 1


def main(argv: list[str]) -> int:
    command, *args = argv
    image_set = build_default_images() if command == "export" else None  # checked, not timed
    started = time.perf_counter()
    if image_set is not None:
        status = asyncio.run(run_export(args[0], args[1:], image_set))
    else:
        status = asyncio.run(run_import(args[0], Path(args[1])))
    if os.environ.get(STATS_ENV):
        stats = {"seconds": time.perf_counter() - started, "peak_rss_mib": peak_rss_mib()}
        Path(os.environ[STATS_ENV]).write_text(json.dumps(stats))
    return status


def peak_rss_mib() -> float:
    """``VmHWM`` of this process, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
