"""The project's container image, built offline by a dockerd the tests start.

No image hub is reachable here, so everything the ``Dockerfile`` needs is made
on this machine and cached between runs under ``$MIRROR_TEST_BUILD_CACHE``
(default ``/var/cache/registry-mirror-tests``):

- the base image: ``deploy/image/debian-base`` (mmdebstrap: Debian bookworm with
  python3) as a tarball keyed by the script's hash, loaded with ``docker import``;
- the dependencies: wheels that ``pip download`` fetched once (keyed by the
  declared requirements), served to the build on loopback as a find-links page;
- dockerd's data root, so the base image and the build's layers survive
  between runs. One run at a time uses it (a file lock); a concurrent run
  builds in a private data root instead, from the cached tarball and wheels.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.clients import ClientError, DockerDaemon, missing_tools
from tests.support.mirror_process import ROOT
from tests.support.processes import free_port

BUILD_CACHE_ENV = "MIRROR_TEST_BUILD_CACHE"
DEFAULT_BUILD_CACHE = Path("/var/cache/registry-mirror-tests")
BASE_SCRIPT = ROOT / "deploy" / "image" / "debian-base"
IMAGE_TAG = "registry-mirror:test"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = str(PYPROJECT["project"]["version"])


def build_cache() -> Path:
    """The directory kept between test runs."""
    root = Path(os.environ.get(BUILD_CACHE_ENV) or DEFAULT_BUILD_CACHE)
    root.mkdir(parents=True, exist_ok=True)
    return root


def _key(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()[:16]


def base_tarball(cache: Path) -> Path:
    """The mmdebstrap base as a tarball, made once per version of the script."""
    target = cache / f"debian-base-{_key(BASE_SCRIPT.read_bytes())}.tar"
    if not target.exists():
        partial = target.with_name(f".{target.name}.{os.getpid()}")
        done = subprocess.run(
            [str(BASE_SCRIPT), str(partial)], capture_output=True, text=True, timeout=900,
            check=False,
        )  # fmt: skip
        if done.returncode != 0:
            partial.unlink(missing_ok=True)
            raise RuntimeError(f"debian-base failed:\n{done.stdout}\n{done.stderr}")
        os.replace(partial, target)
    return target


def wheelhouse(cache: Path) -> Path:
    """Wheels of every dependency (and of the build backend), downloaded once."""
    wanted = [*PYPROJECT["project"]["dependencies"], *PYPROJECT["build-system"]["requires"]]
    folder = cache / f"wheels-{_key(json.dumps(wanted).encode(), sys.version.encode())}"
    if not (folder / ".complete").exists():
        partial = folder.with_name(f".{folder.name}.{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
             "--only-binary=:all:", "--dest", str(partial), *wanted],
            check=True, timeout=600, capture_output=True,
        )  # fmt: skip
        (partial / ".complete").write_text("")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(partial, folder)
    return folder


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


# The wheels' URL is a build argument, and a changed build argument reruns every
# step after it: a fixed address keeps the dependency layer cached. Any 127.x
# address is loopback; this one is unlikely to be taken.
WHEELS_ADDRESS = ("127.16.0.1", 8080)


@contextlib.contextmanager
def serving(folder: Path) -> Iterator[str]:
    """``folder`` as a directory listing on loopback (pip's find-links); its URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    try:
        server = http.server.ThreadingHTTPServer(WHEELS_ADDRESS, handler)
    except OSError:  # another test run serves there: build without the layer cache
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host!s}:{port}/"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def data_root(cache: Path, private: Path) -> Iterator[Path]:
    """The cached dockerd data root if no other run holds it, else ``private``."""
    with (cache / "docker-data.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield private
            return
        yield cache / "docker-data"


@dataclass(frozen=True)
class BuiltImage:
    """The image under test and what building it cost."""

    tag: str
    build_seconds: float
    size: int


def build_image(daemon: DockerDaemon, cache: Path, wheels_url: str) -> BuiltImage:
    """Import the base if needed, then ``docker build`` the project (BuildKit)."""
    tarball = base_tarball(cache)
    base = f"registry-mirror-test-base:{tarball.stem.removeprefix('debian-base-')}"
    try:
        daemon.docker("image", "inspect", base)
    except ClientError:
        daemon.docker("import", str(tarball), base, timeout=600)
    revision = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    args = {
        "BASE": base, "VERSION": VERSION, "REVISION": revision or "unknown",
        "SOURCE_URL": "https://example.invalid/registry-mirror",
        "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": wheels_url,
    }  # fmt: skip
    argv = [daemon.cli, "build", "--network", "host", "-t", IMAGE_TAG]
    for name, value in args.items():
        argv += ["--build-arg", f"{name}={value}"]
    started = time.monotonic()
    daemon.box.run([*argv, str(ROOT)], {**daemon.env, "DOCKER_BUILDKIT": "1"}, timeout=900)
    seconds = time.monotonic() - started
    # Earlier builds' images and old build cache would grow the cached data root forever.
    daemon.docker("image", "prune", "--force")
    daemon.docker("builder", "prune", "--force", "--keep-storage", "2GB")
    size = int(daemon.docker("image", "inspect", "--format", "{{.Size}}", IMAGE_TAG))
    return BuiltImage(IMAGE_TAG, seconds, size)


def missing_image_tools() -> list[str]:
    """Why the image cannot be built here: not root, or tools that are not installed."""
    missing = missing_tools("dockerd", "mmdebstrap")
    if not Path("/usr/bin/docker").exists() and shutil.which("docker") is None:
        missing.append("docker")
    return (["root (dockerd, mmdebstrap)"] if os.geteuid() != 0 else []) + missing


@dataclass
class ImageEngine:
    """A dockerd whose ``registry-mirrors`` is a mirror container on :attr:`mirror_port`."""

    daemon: DockerDaemon
    mirror_port: int
    cache: Path

    @property
    def mirror_url(self) -> str:
        """Where the engine's docker pulls go: the container under test listens there."""
        return f"http://127.0.0.1:{self.mirror_port}"

    def logs(self, container: str) -> str:
        """``docker logs``: the container's stdout and stderr, interleaved."""
        argv = ["/bin/sh", "-c", 'exec "$0" logs "$1" 2>&1', self.daemon.cli, container]
        return self.daemon.box.run(argv, self.daemon.env)

    def remove(self, *containers: str) -> None:
        """Remove containers (and their anonymous volumes) if they exist."""
        with contextlib.suppress(ClientError):
            self.daemon.docker("rm", "--force", "--volumes", *containers)


@contextlib.contextmanager
def running_engine(workdir: Path) -> Iterator[ImageEngine]:
    """Start dockerd on the cached (or a private) data root; stop it on exit."""
    cache = build_cache()
    port = free_port()
    with data_root(cache, workdir / "data") as root:
        daemon = DockerDaemon(
            workdir, f"http://127.0.0.1:{port}", data_root=root, storage_driver=None
        )
        try:
            yield ImageEngine(daemon, port, cache)
        finally:
            daemon.stop()


def build_with_wheels(engine: ImageEngine) -> BuiltImage:
    """Build the image with the cached wheels served on loopback."""
    with serving(wheelhouse(engine.cache)) as url:
        return build_image(engine.daemon, engine.cache, url)
