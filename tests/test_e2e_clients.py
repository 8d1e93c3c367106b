"""Real clients pull through the mirror (a ``python -m mirror serve`` subprocess).

Two upstreams at once: ``docker.io`` is the distribution registry with token
auth (the mirror logs in as testuser, from a docker config.json auths file),
``ghcr.io`` is a second distribution registry without auth. docker (daemon
``registry-mirrors``), containerd (``ctr`` with ``hosts.toml``, also via
``_default`` and ``override_path``), podman (``registries.conf`` mirror) and
skopeo pull a multi-arch OCI index, a Docker manifest list, a Docker schema2
image and the 200 MiB layer, and each pull's recorded digest must be the
upstream's. One daemon per client type for the whole module.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clients import (
    Containerd,
    DockerDaemon,
    Podman,
    Skopeo,
    containerd_hosts_toml,
    require_contained,
    write_hosts_toml,
)
from tests.support.images import ImageSet
from tests.support.processes import ManagedProcess, free_port, start_process, wait_for_http
from tests.support.registry import UpstreamRegistry

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
HUB_SERVER = "https://registry-1.docker.io"
# library/... names on the default upstream; the same repositories exist on ghcr.io.
IMAGES = ["multi:latest", "multi:docker", "tiny:docker", "large:latest"]


class Mirror:
    """The mirror as its own process, as users run it."""

    def __init__(self, process: ManagedProcess, url: str, cache: Path) -> None:
        self.process, self.url, self.cache = process, url, cache

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")


@pytest.fixture(scope="module")
def mirror(
    registry_token: UpstreamRegistry,
    registry_none: UpstreamRegistry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Mirror]:
    work = tmp_path_factory.mktemp("mirror")
    auths = work / "docker-config.json"
    login = base64.b64encode(b"testuser:testpass").decode()
    auths.write_text(json.dumps({"auths": {"https://index.docker.io/v1/": {"auth": login}}}))
    port = free_port()
    (work / "mirror.toml").write_text(
        f'listen = "127.0.0.1:{port}"\nauths_file = "{auths}"\n'
        f'[storage]\npath = "{work / "cache"}"\n'
        f'[[upstreams]]\nname = "docker.io"\nurl = "{registry_token.url}"\n'
        f'[[upstreams]]\nname = "ghcr.io"\nurl = "{registry_none.url}"\n'
    )
    process = start_process(
        "mirror",
        [sys.executable, "-m", "mirror", "serve", "--config", str(work / "mirror.toml")],
        log_path=work / "mirror.log",
        cwd=ROOT,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/v2/", process)
        yield Mirror(process, f"http://127.0.0.1:{port}", work / "cache")
    finally:
        process.stop()
    assert "testpass" not in process.log_path.read_text()
    assert login not in process.log_path.read_text()


def assert_from_ghcr(registry: UpstreamRegistry, since: int, repository: str) -> None:
    """The second upstream, and only it, saw this pull."""
    paths = [e.path for e in registry.requests(since)]
    assert any(p.startswith(f"/v2/{repository}/manifests/") for p in paths), paths


# ---------------------------------------------------------------- skopeo


@pytest.fixture(scope="module")
def skopeo(tmp_path_factory: pytest.TempPathFactory) -> Skopeo:
    require_contained("skopeo")
    return Skopeo(tmp_path_factory.mktemp("skopeo"))


@pytest.mark.parametrize("image", IMAGES)
def test_skopeo(skopeo: Skopeo, mirror: Mirror, image_set: ImageSet, image: str) -> None:
    want = image_set.image(f"library/{image}").digest
    assert skopeo.pull(mirror.url, f"library/{image}") == [want]


def test_skopeo_prefix_routes_to_second_upstream(
    skopeo: Skopeo, mirror: Mirror, image_set: ImageSet, registry_none: UpstreamRegistry
) -> None:
    since = registry_none.log_mark()
    want = image_set.image("library/medium:latest").digest
    assert skopeo.pull(mirror.url, "ghcr.io/library/medium:latest") == [want]
    assert_from_ghcr(registry_none, since, "library/medium")


# ---------------------------------------------------------------- docker


@pytest.fixture(scope="module")
def docker(mirror: Mirror, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerDaemon]:
    require_contained("dockerd", "docker")
    daemon = DockerDaemon(tmp_path_factory.mktemp("docker"), mirror.url)
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.mark.parametrize("image", IMAGES)
def test_docker_registry_mirrors(docker: DockerDaemon, image_set: ImageSet, image: str) -> None:
    want = image_set.image(f"library/{image}").digest
    assert want in docker.pull(image)


def test_docker_prefix_routes_to_second_upstream(
    docker: DockerDaemon, mirror: Mirror, image_set: ImageSet, registry_none: UpstreamRegistry
) -> None:
    since = registry_none.log_mark()
    want = image_set.image("library/tiny:oci").digest
    assert want in docker.pull(f"{mirror.host}/ghcr.io/library/tiny:oci")
    assert_from_ghcr(registry_none, since, "library/tiny")


# ---------------------------------------------------------------- containerd


@pytest.fixture(scope="module")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    require_contained("containerd", "ctr")
    daemon = Containerd(tmp_path_factory.mktemp("containerd"))
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.mark.parametrize("image", IMAGES)
def test_containerd_hosts_toml(
    containerd: Containerd, mirror: Mirror, image_set: ImageSet, image: str, tmp_path: Path
) -> None:
    hosts = write_hosts_toml(tmp_path / "certs.d", "docker.io", mirror.url, HUB_SERVER)
    want = image_set.image(f"library/{image}").digest
    assert containerd.pull(f"docker.io/library/{image}", hosts) == [want]


def test_containerd_default_routes_by_ns(
    containerd: Containerd,
    mirror: Mirror,
    image_set: ImageSet,
    registry_none: UpstreamRegistry,
    tmp_path: Path,
) -> None:
    """A catch-all ``_default`` hosts.toml: containerd sends ``?ns=ghcr.io``."""
    hosts = write_hosts_toml(tmp_path / "certs.d", "_default", mirror.url, "https://ghcr.io")
    since = registry_none.log_mark()
    want = image_set.image("library/multi:docker").digest
    assert containerd.pull("ghcr.io/library/multi:docker", hosts) == [want]
    assert_from_ghcr(registry_none, since, "library/multi")


def test_containerd_default_falls_back_for_unserved_registry(
    containerd: Containerd,
    mirror: Mirror,
    image_set: ImageSet,
    registry_none: UpstreamRegistry,
    tmp_path: Path,
) -> None:
    """quay.io is not configured: the mirror's 403 sends containerd on to ``server``
    (here the second registry, standing in for quay.io itself)."""
    hosts = write_hosts_toml(tmp_path / "certs.d", "_default", mirror.url, registry_none.url)
    since = registry_none.log_mark()
    want = image_set.image("library/tiny:oci").digest
    assert containerd.pull("quay.io/library/tiny:oci", hosts) == [want]
    direct = [e for e in registry_none.requests(since) if "registry-mirror" not in e.user_agent]
    assert any(e.path == "/v2/library/tiny/manifests/oci" for e in direct), direct


def test_containerd_override_path_prefix(
    containerd: Containerd,
    mirror: Mirror,
    image_set: ImageSet,
    registry_none: UpstreamRegistry,
    tmp_path: Path,
) -> None:
    """For mirrors without ``ns``: ``override_path`` and a ``/v2/ghcr.io`` host path."""
    folder = tmp_path / "certs.d" / "ghcr.io"
    folder.mkdir(parents=True)
    toml = containerd_hosts_toml(f"{mirror.url}/v2/ghcr.io", "https://ghcr.io", override_path=True)
    (folder / "hosts.toml").write_text(toml)
    since = registry_none.log_mark()
    want = image_set.image("library/tiny:docker").digest
    assert containerd.pull("ghcr.io/library/tiny:docker", tmp_path / "certs.d") == [want]
    assert_from_ghcr(registry_none, since, "library/tiny")


# ---------------------------------------------------------------- podman


@pytest.fixture(scope="module")
def podman(mirror: Mirror, tmp_path_factory: pytest.TempPathFactory) -> Podman:
    require_contained("podman")
    return Podman(tmp_path_factory.mktemp("podman"), mirror.url)


@pytest.mark.parametrize("image", IMAGES)
def test_podman_registries_conf(podman: Podman, image_set: ImageSet, image: str) -> None:
    want = image_set.image(f"library/{image}").digest
    assert want in podman.pull(f"docker.io/library/{image}")
