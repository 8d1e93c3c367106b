"""How long the cache index takes to rebuild, and one eviction pass, at scale.

Writes ``--objects`` blobs of ``--size`` bytes into a disk cache laid out as
the mirror keeps it, then times what a start-up does (rebuild the index from
the files) and what ``registry-mirror gc`` does with a budget that forces a
quarter of the objects to stay (one eviction pass).

    python bench/cache_index.py --objects 20000
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mirror.cache.manager import CacheManager, track
from mirror.config import build_config
from mirror.metrics import Metrics
from mirror.oci import Digest
from mirror.storage import layout
from mirror.storage.disk import DiskStorage

UPSTREAM = "docker.io"


def fill_cache(root: Path, objects: int, size: int) -> None:
    """``objects`` distinct blobs of ``size`` bytes, in the cache's own layout."""
    for number in range(objects):
        data = number.to_bytes(8, "big") * (size // 8)
        digest = Digest("sha256", hashlib.sha256(data).hexdigest())
        path = root / layout.blob_key(UPSTREAM, digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


async def measure(root: Path, objects: int, size: int) -> None:
    """Print the rebuild and eviction times."""
    budget = objects * size // 4
    config = build_config(
        {
            "storage": {"path": str(root)},
            "cache": {"max_size": budget},
            "upstream": "https://registry-1.docker.io",
        }
    )
    metrics = Metrics()
    backend = DiskStorage(root)
    started = time.perf_counter()
    storage = await track(backend, config, metrics)
    rebuilt = time.perf_counter() - started
    print(f"rebuild the index of {len(storage.index)} objects: {rebuilt:.2f} s")
    started = time.perf_counter()
    report = await CacheManager(storage, config, metrics).gc()
    evicted = time.perf_counter() - started
    print(f"one eviction pass removing {len(report.removed)} objects: {evicted:.2f} s")


def main() -> None:
    """Command-line entry."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=20000, help="number of blobs")
    parser.add_argument("--size", type=int, default=1000, help="bytes per blob")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cache-index-") as tmp:
        fill_cache(Path(tmp), args.objects, args.size)
        asyncio.run(measure(Path(tmp), args.objects, args.size))


if __name__ == "__main__":
    main()
