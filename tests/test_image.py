"""The container image, built from the Dockerfile and run for real.

A dockerd of the tests' own builds the image on an offline Debian base
(``deploy/image/debian-base``), then runs it with a read-only root file system
and only the cache volume writable, the way docs/deploy.md tells operators
to. docker (through ``registry-mirrors``), podman and skopeo pull through the
container and must record the upstream's digests; ``docker stop`` must end
it with exit status 0 and the shutdown logged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.clients import Podman, Skopeo
from tests.support.container_image import VERSION, BuiltImage, ImageEngine
from tests.support.images import ImageSet
from tests.support.mirror_process import toml_text
from tests.support.registry import UpstreamRegistry
from tests.support.s3 import MotoS3

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CACHE = "/var/cache/registry-mirror"
CONFIG = "/etc/registry-mirror/mirror.toml"
NAME = "mirror-under-test"
VOLUME = "mirror-under-test-cache"


def inspect(engine: ImageEngine, what: str, fmt: str) -> Any:
    """``docker inspect --format '{{json FMT}}' WHAT``, decoded."""
    return json.loads(engine.daemon.docker("inspect", "--format", "{{json " + fmt + "}}", what))


def run_mirror(engine: ImageEngine, image: BuiltImage, workdir: Path, settings: Any) -> None:
    """Start the image as docs/deploy.md says: read-only root, cache volume, mounted TOML."""
    config = workdir / "mirror.toml"
    config.write_text(toml_text(settings))
    engine.remove(NAME)
    engine.daemon.docker(
        "run", "--detach", "--name", NAME, "--network", "host", "--read-only",
        "--volume", f"{VOLUME}:{CACHE}", "--volume", f"{config}:{CONFIG}:ro",
        "--health-interval", "1s", image.tag,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while inspect(engine, NAME, ".State.Health.Status") != "healthy":
        assert inspect(engine, NAME, ".State.Running"), engine.logs(NAME)
        assert time.monotonic() < deadline, engine.logs(NAME)
        time.sleep(0.2)


def log_messages(engine: ImageEngine) -> list[str]:
    """The messages of the container's JSON log lines."""
    lines = engine.logs(NAME).splitlines()
    return [json.loads(line)["message"] for line in lines if line.startswith("{")]


@pytest.fixture
def container(image_engine: ImageEngine) -> Iterator[ImageEngine]:
    """Removes the container and its cache volume after the test."""
    yield image_engine
    image_engine.remove(NAME)
    image_engine.daemon.docker("volume", "rm", "--force", VOLUME)


def test_image_metadata_and_version(image_engine: ImageEngine, mirror_image: BuiltImage) -> None:
    config = inspect(image_engine, mirror_image.tag, ".Config")
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.title"] == "registry-mirror"
    assert labels["org.opencontainers.image.source"]
    assert labels["org.opencontainers.image.revision"]
    assert config["User"] == "65532:65532"
    assert config["Healthcheck"]["Test"] == ["CMD", "registry-mirror", "healthcheck"]
    assert config["StopSignal"] == "SIGTERM"
    assert CACHE in config["Volumes"]
    assert config["Entrypoint"] == ["registry-mirror"]
    assert config["Cmd"] == ["serve"]
    out = image_engine.daemon.docker("run", "--rm", "--network", "none", mirror_image.tag,
                                     "--version")  # fmt: skip
    assert out.strip() == f"registry-mirror {VERSION}"
    assert mirror_image.size < 200 * 1024 * 1024


def test_read_only_container_serves_docker_podman_skopeo_and_stops_cleanly(
    container: ImageEngine, mirror_image: BuiltImage, registry_none: UpstreamRegistry,
    image_set: ImageSet, tmp_path: Path,
) -> None:  # fmt: skip
    engine = container
    settings = {
        "listen": f"127.0.0.1:{engine.mirror_port}", "log": {"format": "json"},
        "storage": {"path": CACHE},
        "upstreams": [{"name": "docker.io", "url": registry_none.url}],
    }  # fmt: skip
    run_mirror(engine, mirror_image, tmp_path, settings)
    assert inspect(engine, NAME, ".HostConfig.ReadonlyRootfs") is True

    for image in ("tiny:oci", "multi:latest"):
        assert engine.daemon.pull(image) == [image_set.image(f"library/{image}").digest]
        engine.daemon.docker("image", "rm", image)
    podman = Podman(tmp_path / "podman", engine.mirror_url)
    want = image_set.image("library/multi:docker").digest
    assert want in podman.pull("docker.io/library/multi:docker")  # and the platform's manifest
    skopeo = Skopeo(tmp_path / "skopeo")
    want = image_set.image("library/medium:latest").digest
    assert skopeo.pull(engine.mirror_url, "library/medium:latest") == [want]

    mountpoint = Path(inspect(engine, VOLUME, ".Mountpoint"))
    blobs = list(mountpoint.glob("docker.io/blobs/sha256/*/*"))
    assert len(blobs) >= 4
    assert {p.stat().st_uid for p in blobs} == {65532}

    started = time.monotonic()
    engine.daemon.docker("stop", NAME)  # SIGTERM, SIGKILL after docker's 10 s
    assert time.monotonic() - started < 10
    state = inspect(engine, NAME, ".State")
    assert (state["ExitCode"], state["OOMKilled"]) == (0, False)
    messages = log_messages(engine)
    assert f"listening on http://127.0.0.1:{engine.mirror_port}" in messages
    assert any(m.startswith("SIGTERM received: no longer accepting connections") for m in messages)
    assert messages[-1] == "stopped"
    assert list((mountpoint / ".partial").iterdir()) == []


def test_container_caches_in_s3(
    container: ImageEngine, mirror_image: BuiltImage, registry_none: UpstreamRegistry,
    image_set: ImageSet, s3_server: MotoS3, tmp_path: Path,
) -> None:  # fmt: skip
    engine = container
    bucket = s3_server.create_bucket()
    settings = {
        "listen": f"127.0.0.1:{engine.mirror_port}",
        "storage": s3_server.storage_settings(bucket, Path(CACHE) / "spool"),
        "upstreams": [{"name": "docker.io", "url": registry_none.url}],
    }
    run_mirror(engine, mirror_image, tmp_path, settings)
    want = image_set.image("library/tiny:docker").digest
    assert Skopeo(tmp_path / "skopeo").pull(engine.mirror_url, "library/tiny:docker") == [want]
    keys = s3_server.keys(bucket)
    assert any("/blobs/" in key for key in keys), keys
    engine.daemon.docker("stop", NAME)
    assert inspect(engine, NAME, ".State.ExitCode") == 0
