"""deploy/compose: valid for docker-compose and Prometheus, and its mirror service runs.

Only the mirror's image can exist here (no image hub is reachable), so the
service started for real is ``mirror1``, from the compose file as shipped,
with an override that only moves it onto the host network and points it at
the test upstream and a moto bucket on loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.clients import Skopeo
from tests.support.container_image import BuiltImage, ImageEngine
from tests.support.images import ImageSet
from tests.support.mirror_process import ROOT
from tests.support.registry import UpstreamRegistry
from tests.support.s3 import ACCESS_KEY, SECRET_KEY, MotoS3

COMPOSE = ROOT / "deploy" / "compose"
PROJECT = "regmirror-test"


def compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``docker-compose -f deploy/compose/docker-compose.yml ARGS``."""
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose not installed (see .ci/install-debian-packages)")
    return subprocess.run(
        ["docker-compose", "--project-name", PROJECT, "-f", str(COMPOSE / "docker-compose.yml"),
         *args],
        capture_output=True, text=True, timeout=300, check=False, env=env,
    )  # fmt: skip


def test_compose_file_is_valid() -> None:
    done = compose("config")
    assert done.returncode == 0, done.stderr
    services: dict[str, Any] = yaml.safe_load(done.stdout)["services"]
    assert set(services) == {
        "mirror1", "mirror2", "mirror3", "haproxy", "minio", "minio-init", "prometheus", "grafana",
    }  # fmt: skip
    for name in ("mirror1", "mirror2", "mirror3"):
        mirror = services[name]
        assert mirror["read_only"] is True
        assert mirror["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
        assert "ports" not in mirror  # reached through HAProxy only
    assert [p["published"] for p in services["haproxy"]["ports"]] == [5000]
    mounts = [v.split(":")[0] for s in services.values() for v in s.get("volumes", [])]
    for source in mounts:
        if source.startswith("/"):
            assert Path(source).exists(), source  # every file or folder mounted is shipped


def test_compose_prometheus_config_is_valid(tmp_path: Path) -> None:
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (see .ci/install-debian-packages)")
    # As mounted in the container: the rules next to the configuration.
    shutil.copy(COMPOSE / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(ROOT / "deploy" / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    done = subprocess.run(
        ["promtool", "check", "config", "prometheus.yml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def compose_env(image_engine: ImageEngine, mirror_image: BuiltImage) -> Iterator[dict[str, str]]:
    """The environment for docker-compose against the tests' dockerd; ``down`` afterwards."""
    env = {**os.environ, **image_engine.daemon.env}
    image_engine.daemon.docker("tag", mirror_image.tag, "registry-mirror:0.1.0")
    yield env
    compose("down", "--volumes", "--remove-orphans", env=env)
    image_engine.daemon.docker("image", "rm", "registry-mirror:0.1.0")


@pytest.mark.e2e
@pytest.mark.slow
def test_compose_mirror_service_serves_and_stops(
    compose_env: dict[str, str], image_engine: ImageEngine, registry_none: UpstreamRegistry,
    s3_server: MotoS3, image_set: ImageSet, tmp_path: Path,
) -> None:  # fmt: skip
    # The bucket mirror.toml names (moto is shared by the session: it may exist).
    with contextlib.suppress(s3_server.client.exceptions.BucketAlreadyOwnedByYou):
        s3_server.client.create_bucket(Bucket="registry-mirror")
    listen = f"127.0.0.1:{image_engine.mirror_port}"
    override = {
        "services": {"mirror1": {
            "network_mode": "host",
            "healthcheck": {"interval": "1s"},  # the image's check, sooner
            "environment": {
                "MIRROR_LISTEN": listen, "MIRROR_UPSTREAM": registry_none.url,
                "MIRROR_S3_ENDPOINT_URL": s3_server.endpoint_url,
                "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            },
        }},
    }  # fmt: skip
    (tmp_path / "override.yml").write_text(json.dumps(override))
    files = ("-f", str(COMPOSE / "docker-compose.yml"), "-f", str(tmp_path / "override.yml"))
    done = compose(*files, "up", "--detach", "--no-deps", "--no-build", "mirror1", env=compose_env)
    assert done.returncode == 0, done.stderr
    container = f"{PROJECT}_mirror1_1"
    deadline = time.monotonic() + 90
    while health(image_engine, container) != "healthy":
        assert time.monotonic() < deadline, image_engine.logs(container)
        time.sleep(0.2)
    want = image_set.image("library/tiny:oci").digest
    assert Skopeo(tmp_path / "skopeo").pull(f"http://{listen}", "library/tiny:oci") == [want]
    assert any("/blobs/" in key for key in s3_server.keys("registry-mirror"))
    done = compose(*files, "stop", "mirror1", env=compose_env)
    assert done.returncode == 0, done.stderr
    assert health(image_engine, container, ".State.ExitCode") == 0
    assert '"message": "stopped"' in image_engine.logs(container)


def health(engine: ImageEngine, container: str, field: str = ".State.Health.Status") -> Any:
    """One field of ``docker inspect``."""
    return json.loads(engine.daemon.docker("inspect", "--format", "{{json " + field + "}}",
                                           container))  # fmt: skip
