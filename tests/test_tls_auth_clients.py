"""Real clients log in to the mirror over TLS: the whole front door at once.

The mirror is a ``python -m mirror serve`` process with ``[tls]`` (a
certificate for ``mirror.test`` from a CA made here) and ``[auth]`` (token
auth, an htpasswd file; alice may pull ``library/*``, nobody else anything),
in front of the distribution registry as ``docker.io``. Each client trusts
the CA and logs in the way docs/clients.md shows; without the login the pull
is refused, with it the pull ends with the upstream's digest.
"""

from __future__ import annotations

import hashlib
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clients import INSECURE_POLICY, ClientError, require_contained
from tests.support.htpasswd import write_htpasswd
from tests.support.images import ImageSet
from tests.support.mirror_process import MirrorProcess, start_mirror_process
from tests.support.pki import PrivateCA
from tests.support.registry import UpstreamRegistry
from tests.support.tls_clients import (
    MIRROR_NAME,
    ClientTLS,
    Namespace,
    SecureDockerDaemon,
    SecurePodman,
    skopeo_copy_from_mirror,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

IMAGE = "library/multi:latest"  # an OCI index of two platforms
ALICE = ("alice", "alice-over-tls")
HUB_LOGIN_KEY = "https://index.docker.io/v1/"  # where docker keeps the Docker Hub login


@pytest.fixture(scope="module")
def client_tls(tmp_path_factory: pytest.TempPathFactory) -> ClientTLS:
    work = tmp_path_factory.mktemp("pki")
    ca = PrivateCA.create(work)
    ca.issue_server(MIRROR_NAME, "::1").write(work / "tls.crt", work / "tls.key")
    return ClientTLS(ca.root_path)


@pytest.fixture(scope="module")
def mirror(
    client_tls: ClientTLS, registry_none: UpstreamRegistry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MirrorProcess]:
    work = tmp_path_factory.mktemp("mirror")
    pki = client_tls.ca.parent
    users = write_htpasswd(work / "htpasswd", ALICE)
    settings = {
        "storage": {"path": str(work / "cache")},
        "upstreams": [{"name": "docker.io", "url": registry_none.url}],
        "tls": {"cert": str(pki / "tls.crt"), "key": str(pki / "tls.key")},
        "auth": {
            "htpasswd": str(users), "default": "deny",
            "token": {"key": str(work / "token.key"), "service": MIRROR_NAME},
            "rules": [{"who": ["user:alice"], "upstream": "docker.io", "repository": "library/*"}],
        },
    }  # fmt: skip
    context = ssl.create_default_context(cafile=client_tls.ca)
    mirror = start_mirror_process(work, settings, tls_client=context, host="::1")
    try:
        yield mirror
    finally:
        mirror.process.stop()


def test_skopeo_logs_in_over_tls(
    mirror: MirrorProcess, client_tls: ClientTLS, image_set: ImageSet, tmp_path: Path
) -> None:
    require_contained("skopeo")
    box = Namespace(tmp_path)
    certs = client_tls.write_certs_dir(tmp_path / "certs")

    def copy(*login: str) -> bytes:
        return skopeo_copy_from_mirror(box, tmp_path, mirror.port, IMAGE, "--src-cert-dir",
                                       str(certs), *login, policy=INSECURE_POLICY)  # fmt: skip

    with pytest.raises(ClientError, match=r"(?i)unauthorized|authentication required"):
        copy()
    manifest = copy("--src-creds", ":".join(ALICE))
    assert "sha256:" + hashlib.sha256(manifest).hexdigest() == image_set.image(IMAGE).digest


def test_podman_logs_in_to_the_mirror_host_over_tls(
    mirror: MirrorProcess, client_tls: ClientTLS, image_set: ImageSet, tmp_path: Path
) -> None:
    require_contained("podman")
    podman = SecurePodman(tmp_path, mirror.port, client_tls)
    podman.set_logins({f"{MIRROR_NAME}:{mirror.port}": ":".join(ALICE)})
    podman.pull(f"docker.io/{IMAGE}")
    out = podman.podman("image", "inspect", "--format", "{{json .RepoDigests}}", IMAGE)
    digests = {d.split("@", 1)[1] for d in json.loads(out)}
    assert image_set.image(IMAGE).digest in digests


def test_dockerd_sends_its_docker_hub_login_to_the_https_mirror(
    mirror: MirrorProcess, client_tls: ClientTLS, image_set: ImageSet, tmp_path: Path
) -> None:
    require_contained("dockerd", "docker")
    docker = SecureDockerDaemon(tmp_path, mirror.port, client_tls)
    name = IMAGE.removeprefix("library/")
    try:
        docker.set_logins({HUB_LOGIN_KEY: ":".join(ALICE)})
        docker.pull(name)
        out = docker.box.run(
            [docker.cli, "image", "inspect", "--format", "{{json .RepoDigests}}", name],
            docker.env,
        )
        assert [d.split("@", 1)[1] for d in json.loads(out)] == [image_set.image(IMAGE).digest]
    finally:
        docker.stop()
