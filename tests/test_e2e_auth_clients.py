"""Real clients log in to the mirror over plain HTTP (``python -m mirror serve`` with ``[auth]``).

The mirror (token auth, an htpasswd file written by ``htpasswd -B``) serves
``docker.io`` from a distribution registry; its rules: alice may pull
``library/*``, anonymous callers only ``library/tiny``, nobody else anything
(``default = "deny"``); logins of users the file does not know count as
anonymous (``unknown_users = "anonymous"``), for docker hosts, which send
their Docker Hub login to a mirror. Each client pulls with the login it is
configured with, and the mirror's access log names the user it saw.
docs/clients.md marks these setups tested.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clients import (
    ClientError,
    Containerd,
    DockerDaemon,
    Podman,
    Skopeo,
    containerd_hosts_toml,
    require_contained,
)
from tests.support.htpasswd import write_htpasswd
from tests.support.images import ImageSet
from tests.support.processes import ManagedProcess, free_port, start_process, wait_for_http
from tests.support.registry import UpstreamRegistry

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
ALICE = ("alice", "alice-mirror-pw")
CAROL = ("carol", "carol-mirror-pw")
HUB_LOGIN_KEY = "https://index.docker.io/v1/"  # where docker keeps the Docker Hub login


class Mirror:
    """The mirror as its own process, with its log (the access log is in it)."""

    def __init__(self, process: ManagedProcess, url: str) -> None:
        self.process, self.url = process, url

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    def log_mark(self) -> int:
        return len(self.process.log_path.read_text())

    def access_users(self, since: int, path_part: str) -> set[str]:
        """The ``user`` of the access-log lines since ``since`` that served a path with
        ``path_part`` (2xx answers only: a refused first try has no user)."""
        found = set()
        for line in self.process.log_path.read_text()[since:].splitlines():
            match = _ACCESS.search(line)
            if match and path_part in match["path"] and match["status"].startswith("2"):
                found.add(match["user"])
        return found


_ACCESS = re.compile(r'(?P<user>\S+) "(?:GET|HEAD) (?P<path>\S+)" (?P<status>\d{3}) ')


MIRROR_TOML = """\
listen = "127.0.0.1:{port}"
[storage]
path = "{work}/cache"
[[upstreams]]
name = "docker.io"
url = "{upstream}"
[auth]
htpasswd = "{work}/htpasswd"
default = "deny"
unknown_users = "anonymous"
[[auth.rules]]
who = ["user:alice"]
upstream = "docker.io"
repository = "library/*"
[[auth.rules]]
who = ["anonymous"]
upstream = "docker.io"
repository = "library/tiny"
[auth.token]
key = "{work}/token.key"
"""


@pytest.fixture(scope="module")
def mirror(registry_none: UpstreamRegistry, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Mirror]:  # fmt: skip
    work = tmp_path_factory.mktemp("mirror")
    write_htpasswd(work / "htpasswd", ALICE, CAROL, flags=("-B", "-C", "5"))
    port = free_port()
    config = MIRROR_TOML.format(port=port, work=work, upstream=registry_none.url)
    (work / "mirror.toml").write_text(config)
    process = start_process(
        "mirror",
        [sys.executable, "-m", "mirror", "serve", "--config", str(work / "mirror.toml")],
        log_path=work / "mirror.log",
        cwd=ROOT,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process)
        yield Mirror(process, f"http://127.0.0.1:{port}")
    finally:
        process.stop()
    log = process.log_path.read_text()
    for secret in (ALICE[1], CAROL[1], "hub-password"):
        assert secret not in log, "a password reached the log"


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


# ---------------------------------------------------------------- skopeo


def test_skopeo_src_creds(mirror: Mirror, image_set: ImageSet, tmp_path: Path) -> None:
    require_contained("skopeo")
    skopeo = Skopeo(tmp_path)
    since = mirror.log_mark()
    want = image_set.image("library/multi:docker").digest
    assert skopeo.pull(mirror.url, "library/multi:docker", creds=":".join(ALICE)) == [want]
    assert mirror.access_users(since, "/v2/library/multi/") == {"alice"}
    with pytest.raises(ClientError, match="denied"):
        skopeo.pull(mirror.url, "library/multi:docker", creds=":".join(CAROL))
    with pytest.raises(ClientError, match=r"unauthorized|authentication required"):
        skopeo.pull(mirror.url, "library/multi:docker")
    # Anonymous callers get what the rules give them.
    assert skopeo.pull(mirror.url, "library/tiny:oci") == [
        image_set.image("library/tiny:oci").digest
    ]


# ---------------------------------------------------------------- podman


def test_podman_login_and_registries_conf_mirror(
    mirror: Mirror, image_set: ImageSet, tmp_path: Path
) -> None:
    require_contained("podman")
    podman = Podman(tmp_path, mirror.url)
    podman.login(mirror.host, *ALICE)
    since = mirror.log_mark()
    want = image_set.image("library/multi:latest").digest
    assert want in podman.pull("docker.io/library/multi:latest")
    assert mirror.access_users(since, "/v2/library/multi/") == {"alice"}


# ---------------------------------------------------------------- containerd


def test_containerd_hosts_toml_authorization_header(
    mirror: Mirror, image_set: ImageSet, tmp_path: Path
) -> None:
    require_contained("containerd", "ctr")
    daemon = Containerd(tmp_path / "containerd")
    try:
        folder = tmp_path / "certs.d" / "docker.io"
        folder.mkdir(parents=True)
        # The fallback is the (unreachable) real Docker Hub: only the mirror can answer.
        toml = containerd_hosts_toml(mirror.url, "https://registry-1.docker.io",
                                     authorization="Basic " + basic(*ALICE))  # fmt: skip
        (folder / "hosts.toml").write_text(toml)
        since = mirror.log_mark()
        want = image_set.image("library/multi:docker").digest
        assert daemon.pull("docker.io/library/multi:docker", tmp_path / "certs.d") == [want]
        assert mirror.access_users(since, "/v2/library/multi/") == {"alice"}
    finally:
        daemon.stop()


# ---------------------------------------------------------------- docker


def set_hub_login(docker: DockerDaemon, user: str, password: str) -> None:
    """The CLI's Docker Hub login: what dockerd sends to its registry-mirrors."""
    cli = Path(docker.env["DOCKER_CONFIG"])
    cli.mkdir(parents=True, exist_ok=True)
    auths = {"auths": {HUB_LOGIN_KEY: {"auth": basic(user, password)}}}
    (cli / "config.json").write_text(json.dumps(auths))


def test_dockerd_registry_mirrors_send_the_docker_hub_login(
    mirror: Mirror, image_set: ImageSet, tmp_path: Path
) -> None:
    require_contained("dockerd", "docker")
    docker = DockerDaemon(tmp_path, mirror.url)
    try:
        # A Docker Hub login that is a user of the mirror: pulls as that user.
        set_hub_login(docker, *ALICE)
        since = mirror.log_mark()
        assert image_set.image("library/multi:docker").digest in docker.pull("multi:docker")
        assert mirror.access_users(since, "/v2/library/multi/") == {"alice"}
        # A Docker Hub login the mirror does not know: anonymous (unknown_users), so the
        # anonymous rule applies, and the pull works without a 401 sending dockerd away.
        set_hub_login(docker, "hubuser", "hub-password")
        since = mirror.log_mark()
        assert image_set.image("library/tiny:docker").digest in docker.pull("tiny:docker")
        assert mirror.access_users(since, "/v2/library/tiny/") == {"-"}
    finally:
        docker.stop()
