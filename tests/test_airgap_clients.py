"""docker, containerd and podman pull from a mirror that only ever saw an imported layout.

The connected mirror (upstream named ``docker.io``, so the daemons' usual
mirror settings apply) warms from the registry fixture; ``export`` and
``import`` carry its cache over as a tar.zst; the far mirror runs as its own
process with ``--offline``. Its upstream URL is the registry fixture itself,
whose access log must show no request from it: every digest comes from the
layout. One daemon per client type, as in ``test_e2e_clients.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mirror.warm import warm
from tests.support.airgap_cli import Site, airgap, disk, make_site
from tests.support.clients import (
    Containerd,
    DockerDaemon,
    Podman,
    require_contained,
    write_hosts_toml,
)
from tests.support.images import ImageSet
from tests.support.mirror_app import run_mirror
from tests.support.mirror_process import start_mirror_process
from tests.support.registry import UpstreamRegistry
from tests.test_e2e_clients import HUB_SERVER

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

IMAGES = ["multi:latest", "multi:docker", "tiny:docker"]


@dataclass
class FarMirror:
    """The offline mirror's URL, and where the registry's log stood when it started."""

    url: str
    registry: UpstreamRegistry
    since: int

    def untouched(self) -> None:
        assert self.registry.requests(self.since) == []


def site(workdir: Path, name: str, registry: UpstreamRegistry) -> Site:
    settings = {"upstreams": [{"name": "docker.io", "url": registry.url, "retries": 1}]}
    return make_site(workdir, name, disk(workdir / name), registry.url, **settings)


async def warm_connected(connected: Site) -> None:
    async with run_mirror(connected.config) as mirror:
        results = await warm(mirror.url, [f"library/{image}" for image in IMAGES])
    assert [r.error for r in results] == [None] * len(IMAGES)


@pytest.fixture(scope="module")
def far(
    registry_none: UpstreamRegistry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FarMirror]:
    work = tmp_path_factory.mktemp("airgap-clients")
    connected = site(work, "connected", registry_none)
    asyncio.run(warm_connected(connected))
    carried = work / "week.tar.zst"
    assert airgap("export", connected, str(carried)).returncode == 0
    remote = site(work, "far", registry_none)
    done = airgap("import", remote, str(carried))
    assert done.returncode == 0, done.stderr
    since = registry_none.log_mark()
    process = start_mirror_process(work, {**remote.settings, "offline": True}, name="far-mirror")
    try:
        yield FarMirror(process.url, registry_none, since)
    finally:
        process.process.stop()


@pytest.fixture(scope="module")
def docker(far: FarMirror, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerDaemon]:
    require_contained("dockerd", "docker")
    daemon = DockerDaemon(tmp_path_factory.mktemp("docker"), far.url)
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.mark.parametrize("image", IMAGES)
def test_docker_pulls_offline(docker: DockerDaemon, far: FarMirror, image_set: ImageSet,
                              image: str) -> None:  # fmt: skip
    assert image_set.image(f"library/{image}").digest in docker.pull(image)
    far.untouched()


@pytest.mark.parametrize("image", IMAGES)
def test_podman_pulls_offline(far: FarMirror, image_set: ImageSet, image: str,
                              tmp_path: Path) -> None:  # fmt: skip
    require_contained("podman")
    podman = Podman(tmp_path, far.url)
    assert image_set.image(f"library/{image}").digest in podman.pull(f"docker.io/library/{image}")
    far.untouched()


@pytest.mark.parametrize("image", IMAGES)
def test_containerd_pulls_offline(far: FarMirror, image_set: ImageSet, image: str,
                                  tmp_path: Path) -> None:  # fmt: skip
    require_contained("containerd", "ctr")
    daemon = Containerd(tmp_path / "containerd")
    try:
        hosts = write_hosts_toml(tmp_path / "certs.d", "docker.io", far.url, HUB_SERVER)
        want = image_set.image(f"library/{image}").digest
        assert daemon.pull(f"docker.io/library/{image}", hosts) == [want]
    finally:
        daemon.stop()
    far.untouched()
