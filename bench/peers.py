"""The servers under test, each started on a free loopback port and stopped by PID.

* ``upstream``: distribution 2.8 (Debian ``docker-registry``), no auth; the
  origin every proxy pulls from, and the "pull directly" baseline.
* ``mirror``: this project, ``python -m mirror serve`` over a disk cache.
* ``mirror-s3``: the same with ``--storage s3`` against a moto S3 server
  (its own process on loopback; moto's memory is not counted as the mirror's).
* ``distribution``: distribution 2.8 in proxy mode (``proxy.remoteurl``).
* ``nginx``: nginx serving the mirror's cached blob file with ``sendfile``,
  the practical limit for a cached blob on this machine.

Peak memory is ``VmHWM`` from ``/proc/PID/status``, summed over the server's
process and its children (nginx master + workers): an upper
bound, since the processes need not peak at the same moment. Writing ``5`` to
``/proc/PID/clear_refs`` resets it, so one scenario's peak can be read on its
own (:meth:`Peer.reset_peak`); the peak over the whole run is kept across
resets. CPU time is ``utime + stime`` from ``/proc/PID/stat``, summed the same
way.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import sys
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tests.support.processes import ManagedProcess, free_port, start_process, wait_for_http
from tests.support.registry import (
    UpstreamRegistry,
    registry_binary,
    serve_distribution,
    start_registry,
)

if TYPE_CHECKING:
    from tests.support.s3 import MotoS3

REPO_ROOT = Path(__file__).resolve().parent.parent
NGINX_BIN = "/usr/sbin/nginx"
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Peer:
    """One running server: its name, base URL and process."""

    name: str
    url: str
    process: ManagedProcess
    workdir: Path
    extra_pids: list[int] = field(default_factory=list)
    # The blobs the cache holds ({hex digest: size}). None: not a caching peer we can see into.
    cached: Callable[[], dict[str, int]] | None = None
    # Deletes a blob (hex digest) from the cache behind the server's back: see bench/cold.py.
    forget: Callable[[str], None] | None = None
    _run_peak_kib: int = 0  # the highest VmHWM sum seen before the last reset

    def pids(self) -> list[int]:
        """The server's process and its direct children (workers)."""
        return list(dict.fromkeys([self.process.pid, *_children(self.process.pid),
                                   *self.extra_pids]))  # fmt: skip

    def peak_rss_mib(self) -> float:
        """The highest VmHWM sum over the server's processes since it started, in MiB."""
        return max(self._run_peak_kib, self._hwm_kib()) / 1024

    def scenario_peak_rss_mib(self) -> float:
        """The VmHWM sum since the last :meth:`reset_peak`, in MiB."""
        return self._hwm_kib() / 1024

    def reset_peak(self) -> None:
        """Start a new high-water mark (the run's peak so far is kept)."""
        self._run_peak_kib = max(self._run_peak_kib, self._hwm_kib())
        for pid in self.pids():
            with contextlib.suppress(OSError):  # a worker that just exited
                Path(f"/proc/{pid}/clear_refs").write_text("5")

    def cpu_seconds(self) -> float:
        """User and system CPU time of the server's processes so far (all threads)."""
        return sum(sum(cpu_times(pid)[:2]) for pid in self.pids())

    def _hwm_kib(self) -> int:
        return sum(_vm_hwm_kib(pid) for pid in self.pids())

    def wait_cached(self, hex_digests: Collection[str], size: int, timeout: float = 300.0) -> None:
        """Until every fill has been published, so no upload runs into the next measurement."""
        deadline = time.monotonic() + timeout
        while self.cached is not None:
            held = self.cached()
            if all(held.get(hex_digest) == size for hex_digest in hex_digests):
                return
            if time.monotonic() > deadline:
                missing = [h for h in hex_digests if held.get(h) != size]
                raise RuntimeError(f"{self.name} never cached {len(missing)} blobs: {missing[:3]}")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM by PID, then SIGKILL after a grace period."""
        self.process.stop()


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(p) for p in path.read_text().split()]
    except OSError:
        return []


def cpu_times(pid: int) -> tuple[float, float, int]:
    """utime and stime of ``pid`` (all its threads) in seconds, and its minor page faults."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0, 0.0, 0  # a worker that just exited
    # Fields 10, 14 and 15 of proc_pid_stat(5), counted from 1 including pid and comm.
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS, int(fields[7])


def _vm_hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def start_upstream(workdir: Path) -> UpstreamRegistry:
    """An empty distribution registry without auth (seed it with ``bench.seed``)."""
    return start_registry(workdir / "upstream")


def upstream_peer(registry: UpstreamRegistry) -> Peer:
    """The upstream registry seen as a peer (the "direct" baseline)."""
    return Peer("upstream", registry.url, registry.process, registry.workdir)


def start_mirror(
    workdir: Path,
    upstream_url: str,
    *,
    name: str = "mirror",
    source: Path = REPO_ROOT,
    tls: tuple[Path, Path, Path] | None = None,
    options: Sequence[str] = (),
) -> Peer:
    """Our mirror over a fresh disk cache in ``workdir/<name>``, run from the tree ``source``.

    ``tls``: (certificate, key, the CA that issued them): serve https with them.
    ``options``: more arguments of ``serve``, such as ``--config FILE``.
    """
    root = workdir / name
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        sys.executable, "-m", "mirror", "serve",
        "--listen", f"127.0.0.1:{port}",
        "--cache-dir", str(root / "cache"),
        "--upstream", upstream_url, *options,
    ]  # fmt: skip
    scheme, context = "http", None
    if tls is not None:
        cert, key, ca = tls
        (root / "tls.toml").write_text(f'[tls]\ncert = "{cert}"\nkey = "{key}"\n')
        argv += ["--config", str(root / "tls.toml")]
        scheme, context = "https", ssl.create_default_context(cafile=ca)
    env = {**os.environ, "PYTHONPATH": str(source)}
    process = start_process(name, argv, log_path=root / "mirror.log", cwd=root, env=env)
    url = f"{scheme}://127.0.0.1:{port}"
    wait_for_http(f"{url}/v2/", process, timeout=30, context=context)

    def cached() -> dict[str, int]:
        return _blob_files(root / "cache")

    def forget(hex_digest: str) -> None:
        for path in (root / "cache").glob(f"**/blobs/**/{hex_digest}"):
            path.unlink(missing_ok=True)

    return Peer(name, url, process, root, cached=cached, forget=forget)


def _blob_files(cache: Path) -> dict[str, int]:
    """{hex digest: size} of the blob files published in a disk cache (one walk)."""
    found: dict[str, int] = {}
    for dirpath, _, filenames in os.walk(cache):
        if f"{os.sep}blobs{os.sep}" not in dirpath + os.sep:
            continue  # manifests, tags and partial files
        for name in filenames:
            with contextlib.suppress(FileNotFoundError):  # evicted while we walked
                found[name] = os.stat(os.path.join(dirpath, name)).st_size
    return found


def start_mirror_s3(
    workdir: Path, upstream_url: str, s3: MotoS3, *, name: str = "mirror-s3",
    source: Path = REPO_ROOT,
) -> Peer:  # fmt: skip
    """Our mirror caching in a fresh bucket of the moto server ``s3``, run from ``source``."""
    from tests.support.s3 import ACCESS_KEY, REGION, SECRET_KEY

    root = workdir / name
    root.mkdir(parents=True, exist_ok=True)
    bucket = s3.create_bucket()
    port = free_port()
    argv = [
        sys.executable, "-m", "mirror", "serve",
        "--listen", f"127.0.0.1:{port}",
        "--cache-dir", str(root / "spool"),
        "--upstream", upstream_url,
        "--storage", "s3", "--s3-bucket", bucket, "--s3-prefix", "bench",
        "--s3-region", REGION, "--s3-endpoint-url", s3.endpoint_url,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(source), "AWS_ACCESS_KEY_ID": ACCESS_KEY,
           "AWS_SECRET_ACCESS_KEY": SECRET_KEY}  # fmt: skip
    process = start_process(name, argv, log_path=root / "mirror.log", cwd=root, env=env)
    wait_for_http(f"http://127.0.0.1:{port}/v2/", process, timeout=30)

    def cached() -> dict[str, int]:
        return {
            key.rpartition("/")[2]: length
            for key, length in s3.keys(bucket, "bench/").items()
            if "/blobs/sha256/" in key
        }

    def forget(hex_digest: str) -> None:
        for key in s3.keys(bucket, "bench/"):
            if key.endswith(f"/{hex_digest}"):
                s3.client.delete_object(Bucket=bucket, Key=key)

    return Peer(name, f"http://127.0.0.1:{port}", process, root, cached=cached, forget=forget)


def start_distribution_proxy(workdir: Path, upstream_url: str) -> Peer:
    """Distribution 2.8 as a pull-through cache of ``upstream_url``."""
    root = workdir / "distribution"
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "version": 0.1,
        "log": {"level": "warn", "formatter": "text"},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": "bench"},
        "proxy": {"remoteurl": upstream_url},
    }
    config_path = root / "config.yml"
    config_path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is valid YAML
    process = serve_distribution("distribution-proxy", config_path, root)
    wait_for_http(f"http://127.0.0.1:{port}/v2/", process, timeout=30)
    blobs = root / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256"

    def cached() -> dict[str, int]:
        # Distribution 2.8 streams a cold blob to the client straight from a first
        # upstream GET and stores it from a second one, in the background; the
        # blob is stored once its data file has moved here.
        found: dict[str, int] = {}
        for data in blobs.glob("*/*/data"):
            with contextlib.suppress(FileNotFoundError):
                found[data.parent.name] = data.stat().st_size
        return found

    def forget(hex_digest: str) -> None:
        for data in blobs.glob(f"*/{hex_digest}/data"):
            data.unlink(missing_ok=True)

    return Peer("distribution", f"http://127.0.0.1:{port}", process, root, cached=cached,
                forget=forget)  # fmt: skip


def start_nginx(workdir: Path, blob_file: Path, url_path: str) -> Peer:
    """nginx serving ``blob_file`` at ``url_path`` with sendfile, one worker per core."""
    root = workdir / "nginx"
    (root / "logs").mkdir(parents=True, exist_ok=True)
    port = free_port()
    user = "user root;\n" if os.geteuid() == 0 else ""  # cache dirs are 0700
    conf = root / "nginx.conf"
    conf.write_text(
        f"{user}daemon off;\nworker_processes auto;\npid {root}/nginx.pid;\n"
        f"error_log {root}/logs/error.log warn;\n"
        "events { worker_connections 1024; }\n"
        "http {\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n"
        f"  client_body_temp_path {root}/tmp;\n"
        f"  server {{\n    listen 127.0.0.1:{port};\n"
        f"    location = {url_path} {{\n      alias {blob_file};\n"
        "      default_type application/octet-stream;\n    }\n  }\n}\n"
    )
    process = start_process(
        "nginx", [NGINX_BIN, "-p", str(root), "-c", str(conf)], log_path=root / "nginx.out"
    )
    wait_for_http(f"http://127.0.0.1:{port}/", process, timeout=20)
    return Peer("nginx", f"http://127.0.0.1:{port}", process, root)


def s3_available() -> bool:
    """True when moto (server mode) and boto3 are installed, for the ``mirror-s3`` peer."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("moto", "boto3", "flask"))


def distribution_available() -> bool:
    """True when ``docker-registry`` and nginx are installed."""
    try:
        registry_binary()
    except Exception:
        return False
    return os.access(NGINX_BIN, os.X_OK)
