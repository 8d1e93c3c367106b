"""A fleet for tests: mirror replicas on one S3 bucket behind the shipped HAProxy config.

Everything on loopback: moto for S3, ``registry-mirror serve`` processes, and
``haproxy`` running ``deploy/haproxy/haproxy.cfg`` with only its addresses
changed (the bind ports and the ``server`` lines), so the routing under test
is the one operators get. The fake upstream runs in a thread of its own, so
that one upstream can serve a whole test module.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.fake_upstream import FakeUpstream
from tests.support.mirror_process import ROOT, MirrorProcess, start_mirror_process
from tests.support.processes import ManagedProcess, free_port, start_process, wait_for_http
from tests.support.s3 import MotoS3

HAPROXY_CFG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
BLOB_HASH = "balance hash path,field(-1,/)"


@contextlib.contextmanager
def threaded_upstream() -> Iterator[FakeUpstream]:
    """A :class:`FakeUpstream` served by an event loop in its own thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    upstream = FakeUpstream()
    asyncio.run_coroutine_threadsafe(upstream.__aenter__(), loop).result(30)
    try:
        yield upstream
    finally:
        asyncio.run_coroutine_threadsafe(upstream.__aexit__(None, None, None), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def haproxy_config(port: int, stats_port: int, replicas: Sequence[str], *, hashing: bool) -> str:
    """The shipped config bound to loopback ports, with ``replicas`` (HOST:PORT) as servers.

    ``hashing=False`` spreads blobs round-robin, as a load balancer without
    digest hashing would.
    """
    text = HAPROXY_CFG.read_text()
    text = text.replace("    bind :5000\n", f"    bind 127.0.0.1:{port}\n")
    text = text.replace("    bind :8404\n", f"    bind 127.0.0.1:{stats_port}\n")
    servers = "".join(f"    server mirror{i + 1} {r}\n" for i, r in enumerate(replicas))
    text, count = re.subn(r"(    server mirror1 .*\n)(    server .*\n)*", servers, text)
    assert count == 2, "the shipped config no longer has two backends of mirror servers"
    if not hashing:
        assert BLOB_HASH in text
        text = text.replace(BLOB_HASH, "balance roundrobin")
    return text


@dataclass
class HAProxy:
    """A running haproxy and its frontend URL."""

    process: ManagedProcess
    url: str


def start_haproxy(workdir: Path, name: str, replicas: Sequence[str], *, hashing: bool) -> HAProxy:
    """``haproxy -db`` on free loopback ports in front of ``replicas``."""
    port = free_port()
    config = workdir / f"{name}.cfg"
    config.write_text(haproxy_config(port, free_port(), replicas, hashing=hashing))
    process = start_process(
        name, ["haproxy", "-db", "-f", str(config)], log_path=workdir / f"{name}.log"
    )
    proxy = HAProxy(process, f"http://127.0.0.1:{port}")
    wait_for_http(proxy.url + "/v2/", process)
    return proxy


@dataclass
class Fleet:
    """Replicas of one mirror on one bucket, and two HAProxys in front of them."""

    workdir: Path
    upstream: FakeUpstream
    s3: MotoS3
    bucket: str
    replicas: list[MirrorProcess] = field(default_factory=list)
    proxies: dict[str, HAProxy] = field(default_factory=dict)

    def settings(self, index: int) -> dict[str, Any]:
        """Replica ``index``'s configuration: the shared bucket, a spool of its own."""
        spool = self.workdir / f"spool{index}"
        return {
            "tag_ttl": "2s",
            "storage": self.s3.storage_settings(self.bucket, spool, prefix="fleet"),
            "upstreams": [{"url": self.upstream.url, "retries": 1}],
        }

    def start_replica(self, index: int, port: int | None = None) -> MirrorProcess:
        """Start replica ``index`` (on ``port``, for a restart)."""
        return start_mirror_process(
            self.workdir, self.settings(index), name=f"replica{index}", port=port
        )

    def replica_log_count(self, text: str) -> list[int]:
        """How often ``text`` appears in each replica's log."""
        return [replica.log().count(text) for replica in self.replicas]

    def blob_keys(self) -> list[str]:
        """The blob objects in the bucket."""
        return [key for key in self.s3.keys(self.bucket) if "/blobs/" in key]


@contextlib.contextmanager
def running_fleet(workdir: Path, s3: MotoS3, size: int) -> Iterator[Fleet]:
    """``size`` replicas, HAProxy with digest hashing and one without; all stopped on exit."""
    with threaded_upstream() as upstream:
        fleet = Fleet(workdir, upstream, s3, s3.create_bucket())
        try:
            for index in range(size):
                fleet.replicas.append(fleet.start_replica(index))
            addresses = [r.url.removeprefix("http://") for r in fleet.replicas]
            for name, hashing in (("hashed", True), ("round-robin", False)):
                fleet.proxies[name] = start_haproxy(workdir, name, addresses, hashing=hashing)
            yield fleet
        finally:
            for proxy in fleet.proxies.values():
                proxy.process.stop()
            for replica in fleet.replicas:
                replica.process.stop()


def fills_in_flight(mirror: MirrorProcess) -> float:
    """``mirror_fills_in_flight`` of a replica (0 when it does not answer)."""
    try:
        with urllib.request.urlopen(mirror.url + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0
    match = re.search(r"^mirror_fills_in_flight (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def missing_fleet_tools() -> list[str]:
    """Executables the fleet tests need that are not installed."""
    return [tool for tool in ("haproxy", "curl", "sha256sum") if shutil.which(tool) is None]


async def curl_digest(url: str, headers: Sequence[str] = ()) -> tuple[int, str]:
    """GET ``url`` with curl, hash the body with sha256sum: (curl's status, ``sha256:...``)."""
    args = " ".join(f"-H '{h}'" for h in headers)
    script = f"set -o pipefail; curl -sS --fail {args} '{url}' | sha256sum"
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", script, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, "sha256:" + out.decode().split(" ", 1)[0]
