"""What real clients send to a mirror with TLS, mutual TLS and token auth.

The guarded registry (:mod:`tests.support.guarded_registry`: the front door of
:mod:`mirror.security` in front of the test images) listens on ``::1`` as
``mirror.test`` with a certificate from a private CA, requires a client
certificate from the same CA, issues tokens, and lets only known users pull
(``authenticated-pull``). Each test pulls with one client and checks the
requests the registry recorded: which login each client sends to a mirror,
and where. docs/security.md quotes these findings.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mirror.config import build_config
from tests.support.clients import INSECURE_POLICY, ClientError, Containerd, require_contained
from tests.support.guarded_registry import RunningRegistry, registry_in_thread
from tests.support.htpasswd import write_htpasswd
from tests.support.images import ImageSet, build_images, default_image_dir
from tests.support.pki import PrivateCA
from tests.support.tls_clients import (
    DOCKER_HUB_AUTH_KEY,
    MIRROR_NAME,
    ClientTLS,
    Namespace,
    SecureDockerDaemon,
    SecurePodman,
    basic_auth,
    secure_hosts_toml,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

USERS = {"alice": "alice-mirror-pw", "hubuser": "hub-pw"}


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("pki")
    ca = PrivateCA.create(work)
    ca.issue_server(MIRROR_NAME, "::1").write(work / "tls.crt", work / "tls.key")
    ca.issue_client("client").write(work / "client.cert", work / "client.key")
    client = ClientTLS(ca.root_path, work / "client.cert", work / "client.key")
    return {"dir": work, "client": client}


@pytest.fixture(scope="module")
def registry(
    tls: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningRegistry]:
    work: Path = tls["dir"]
    users = write_htpasswd(work / "htpasswd", *USERS.items(), flags=("-B", "-C", "4"))
    config = build_config({
        "tls": {"cert": str(work / "tls.crt"), "key": str(work / "tls.key"),
                "client_ca": str(tls["client"].ca)},
        "auth": {"htpasswd": str(users), "default": "authenticated-pull",
                 "token": {"key": str(work / "token.key"), "service": "mirror.test"}},
    })  # fmt: skip
    images: ImageSet = build_images(default_image_dir(large_mb=1), large_mb=1)
    with registry_in_thread(config, images, "::1") as running:
        yield running


def port_of(registry: RunningRegistry) -> int:
    return int(registry.url.rsplit(":", 1)[1])


def seen(registry: RunningRegistry, since: int) -> list[tuple[str, str, str, int]]:
    """(method, path, shortened Authorization, status) of the requests after ``since``."""
    return [
        (e["method"], e["path"], e["headers"].get("Authorization", "-"), e.get("status", 0))
        for e in registry.requests[since:]
    ]


def token_requests(registry: RunningRegistry, since: int) -> list[tuple[str, str, str, int]]:
    return [r for r in seen(registry, since) if r[1].startswith("/auth/token")]


def test_dockerd_sends_its_docker_hub_login_to_the_mirror(
    registry: RunningRegistry, tls: dict[str, Any], tmp_path: Path
) -> None:
    require_contained("dockerd", "docker")
    docker = SecureDockerDaemon(tmp_path, port_of(registry), tls["client"])
    try:
        # `docker login mirror.test:PORT` is kept for that host: not used for pulls of
        # docker.io names through registry-mirrors, so the mirror sees no login.
        docker.set_logins({docker.host: f"alice:{USERS['alice']}"})
        since = len(registry.requests)
        with pytest.raises(ClientError, match=r"registry-1\.docker\.io"):
            docker.pull("tiny:oci")  # the mirror refused, dockerd went on to Docker Hub
        assert token_requests(registry, since)[0][1:3] == (
            "/auth/token?scope=repository%3Alibrary%2Ftiny%3Apull&service=mirror.test",
            "-",
        )
        # The Docker Hub login is what dockerd sends to its mirrors.
        docker.set_logins({DOCKER_HUB_AUTH_KEY: f"hubuser:{USERS['hubuser']}"})
        since = len(registry.requests)
        docker.pull("tiny:oci")
        requests = seen(registry, since)
        assert requests[0] == ("GET", "/v2/", "-", 401)
        assert requests[1] == (
            "GET", "/auth/token?account=hubuser&scope=repository%3Alibrary%2Ftiny%3Apull"
            "&service=mirror.test", "Basic hubuser:***", 200,
        )  # fmt: skip
        assert all(r[2].startswith("Bearer <sub='hubuser'") for r in requests[2:])
        assert {r[3] for r in requests[2:]} == {200}
    finally:
        docker.stop()


def test_containerd_sends_a_static_header_or_its_user_to_the_token_endpoint(
    registry: RunningRegistry, tls: dict[str, Any], tmp_path: Path
) -> None:
    require_contained("containerd", "ctr")
    containerd = Containerd(tmp_path / "containerd")
    ctr = ["ctr", "--address", str(containerd.socket), "images", "pull", "--snapshotter",
           "native"]  # fmt: skip
    # The Namespace resolves mirror.test; Containerd's own box is plain.
    box = Namespace(tmp_path / "containerd")
    try:
        header = f"Basic {basic_auth('alice', USERS['alice'])}"
        hosts = secure_hosts_toml(tmp_path / "header", port_of(registry), tls["client"], header)
        since = len(registry.requests)
        box.run([*ctr, "--hosts-dir", str(hosts), "docker.io/library/tiny:oci"])
        requests = seen(registry, since)
        assert requests[0][:2] == ("HEAD", "/v2/library/tiny/manifests/oci?ns=docker.io")
        assert {r[2] for r in requests} == {"Basic alice:***"}, "the header on every request"
        assert {r[3] for r in requests} == {200}, "no challenge, no token"
        plain = secure_hosts_toml(tmp_path / "plain", port_of(registry), tls["client"])
        since = len(registry.requests)
        user = ["--user", f"alice:{USERS['alice']}"]
        box.run([*ctr, "--hosts-dir", str(plain), *user, "docker.io/library/multi:latest"])
        requests = seen(registry, since)
        assert requests[0] == ("HEAD", "/v2/library/multi/manifests/latest?ns=docker.io", "-", 401)
        assert requests[1] == ("POST", "/auth/token", "-", 200), "the password grant, a form"
        assert requests[2][2].startswith("Bearer <sub='alice'")
    finally:
        containerd.stop()


def test_podman_sends_the_login_of_the_mirrors_own_host(
    registry: RunningRegistry, tls: dict[str, Any], tmp_path: Path
) -> None:
    require_contained("podman")
    podman = SecurePodman(tmp_path, port_of(registry), tls["client"])
    podman.set_logins({"docker.io": f"hubuser:{USERS['hubuser']}"})
    since = len(registry.requests)
    with pytest.raises(ClientError, match=r"registry-1\.docker\.io"):
        podman.pull("docker.io/library/tiny:oci")
    assert {r[2] for r in token_requests(registry, since)} == {"-"}, "docker.io's login stays"
    podman.set_logins({})
    since = len(registry.requests)
    podman.podman("login", "-u", "alice", "-p", USERS["alice"], podman.host)
    assert token_requests(registry, since) == [
        ("GET", "/auth/token?account=alice&service=mirror.test", "Basic alice:***", 200)
    ]
    since = len(registry.requests)
    podman.pull("docker.io/library/tiny:oci")
    assert token_requests(registry, since)[0][2] == "Basic alice:***"


def test_skopeo_sends_src_creds_and_shows_the_cert_dir(
    registry: RunningRegistry, tls: dict[str, Any], tmp_path: Path
) -> None:
    require_contained("skopeo")
    box = Namespace(tmp_path)
    certs = tls["client"].write_certs_dir(tmp_path / "certs")
    (tmp_path / "policy.json").write_text(json.dumps(INSECURE_POLICY))
    since = len(registry.requests)
    box.run(
        ["skopeo", "--policy", str(tmp_path / "policy.json"), "copy", "-q",
         "--src-cert-dir", str(certs), "--src-creds", f"alice:{USERS['alice']}",
         f"docker://{MIRROR_NAME}:{port_of(registry)}/library/tiny:oci", f"dir:{tmp_path / 'out'}"],
        {"TMPDIR": str(tmp_path), "REGISTRY_AUTH_FILE": str(tmp_path / "auth.json")},
    )  # fmt: skip
    assert token_requests(registry, since) == [(
        "GET", "/auth/token?account=alice&scope=repository%3Alibrary%2Ftiny%3Apull"
        "&service=mirror.test", "Basic alice:***", 200,
    )]  # fmt: skip
