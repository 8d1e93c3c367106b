"""``registry-mirror export`` / ``import`` as an operator runs them, over real caches.

A site is a TOML configuration file (as ``serve`` reads) naming the test
upstream and a cache (disk or a moto bucket). The connected site's upstream
is the real registry fixture; the disconnected site's is a fake upstream
that counts connections, so a test can show the offline mirror made none.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirror.config import Config, build_config
from tests.support.cli import PROJECT_ROOT, run_cli
from tests.support.mirror_process import toml_text
from tests.support.skopeo import skopeo_copy

UPSTREAM_NAME = "registry.example.internal"


@dataclass
class Site:
    """A configuration file and what it holds, for the commands and for an in-process mirror."""

    path: Path
    settings: dict[str, Any]

    @property
    def config(self) -> Config:
        """The configuration, as the in-process mirror takes it."""
        return build_config({"listen": "127.0.0.1:0", **self.settings})

    def offline(self, upstream_url: str) -> Config:
        """The same site served ``--offline``, its upstream at ``upstream_url`` (never dialled)."""
        upstreams = [{"name": UPSTREAM_NAME, "url": upstream_url}]
        return build_config({"listen": "127.0.0.1:0", **self.settings, "upstreams": upstreams,
                             "offline": True})  # fmt: skip


def make_site(
    workdir: Path, name: str, storage: dict[str, Any], upstream_url: str, **settings: Any
) -> Site:
    """Write ``<workdir>/<name>.toml`` for a cache ``storage`` and the named upstream."""
    raw: dict[str, Any] = {
        "storage": storage,
        "upstreams": [{"name": UPSTREAM_NAME, "url": upstream_url, "retries": 1}],
        **settings,
    }
    path = workdir / f"{name}.toml"
    path.write_text(toml_text(raw))
    return Site(path, raw)


def disk(path: Path) -> dict[str, Any]:
    """The ``storage`` table of a disk cache at ``path``."""
    return {"path": str(path)}


def airgap(command: str, site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    """``registry-mirror COMMAND --config SITE ARGS --json``."""
    return run_cli(command, *args, "--config", str(site.path), "--json", "--quiet")


def summary(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The ``--json`` document of a finished command."""
    assert done.stdout, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


async def pulled_digest(mirror_url: str, ref: str, workdir: Path) -> str:
    """skopeo copies ``ref`` from the mirror; the digest of the top manifest it got."""
    target = workdir / ("pulled-" + ref.replace("/", "_").replace(":", "_"))
    await skopeo_copy(f"docker://{mirror_url.removeprefix('http://')}/{ref}", target)
    return "sha256:" + hashlib.sha256((target / "manifest.json").read_bytes()).hexdigest()


def wait_for_partial(directory: Path, size: int, process: subprocess.Popen[bytes]) -> Path:
    """The partial file once it holds ``size`` bytes; fails if the import ends first."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, "the import ended before it could be killed"
        for path in directory.glob("*") if directory.is_dir() else []:
            if path.stat().st_size >= size:
                return path
        time.sleep(0.02)
    raise AssertionError(f"no partial of {size} bytes in {directory} after 120 s")


async def run_cli_async(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``python -m mirror ARGS`` without blocking the loop (an in-process mirror runs on it)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MIRROR_")}
    environ["PYTHONPATH"] = str(PROJECT_ROOT)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mirror", *args, env={**environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
