"""Real clients pull through the mirror over TLS, with a private CA and mutual TLS.

The mirror is a ``python -m mirror serve`` process with ``[tls]`` (a
certificate for ``mirror.test`` and ``::1`` from a CA made here, and
``client_ca``: every client must show a certificate of that CA), in front of
the distribution registry without auth as ``docker.io``. Each client trusts
the CA and shows its certificate the way it is configured in production
(docs/clients.md), reaches the mirror as ``mirror.test`` (``::1`` inside its
mount namespace: dockerd would skip verification for a name in 127.0.0.0/8,
see :mod:`tests.support.tls_clients`), and its pull must end with the
upstream's digest. No client can fall back to Docker Hub here (no network),
so a pull that succeeds came through the mirror.
"""

from __future__ import annotations

import hashlib
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clients import INSECURE_POLICY, ClientError, Containerd, require_contained
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
    secure_hosts_toml,
    skopeo_copy_from_mirror,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

IMAGE = "library/multi:latest"  # an OCI index of two platforms


@pytest.fixture(scope="module")
def client_tls(tmp_path_factory: pytest.TempPathFactory) -> ClientTLS:
    """The CA (also the mirror's client CA) and a client certificate it issued."""
    work = tmp_path_factory.mktemp("pki")
    ca = PrivateCA.create(work)
    ca.issue_server(MIRROR_NAME, "::1").write(work / "tls.crt", work / "tls.key")
    ca.issue_client("client").write(work / "client.cert", work / "client.key")
    return ClientTLS(ca.root_path, work / "client.cert", work / "client.key")


@pytest.fixture(scope="module")
def mirror(
    client_tls: ClientTLS, registry_none: UpstreamRegistry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MirrorProcess]:
    work = tmp_path_factory.mktemp("mirror")
    pki = client_tls.ca.parent
    context = ssl.create_default_context(cafile=client_tls.ca)
    assert client_tls.cert is not None
    assert client_tls.key is not None
    context.load_cert_chain(client_tls.cert, client_tls.key)
    settings = {
        "storage": {"path": str(work / "cache")},
        "upstreams": [{"name": "docker.io", "url": registry_none.url}],
        "tls": {"cert": str(pki / "tls.crt"), "key": str(pki / "tls.key"),
                "client_ca": str(client_tls.ca)},
    }  # fmt: skip
    mirror = start_mirror_process(work, settings, tls_client=context, host="::1")
    try:
        yield mirror
    finally:
        mirror.process.stop()


def test_skopeo_with_src_cert_dir(
    mirror: MirrorProcess, client_tls: ClientTLS, image_set: ImageSet, tmp_path: Path
) -> None:
    require_contained("skopeo")
    box = Namespace(tmp_path)

    def copy(*cert_dir: str) -> bytes:
        return skopeo_copy_from_mirror(box, tmp_path, mirror.port, IMAGE, *cert_dir,
                                       policy=INSECURE_POLICY)  # fmt: skip

    with pytest.raises(ClientError, match="certificate"):
        copy()  # the system CAs do not know the private CA
    certs = client_tls.write_certs_dir(tmp_path / "certs")
    manifest = copy("--src-cert-dir", str(certs))
    assert "sha256:" + hashlib.sha256(manifest).hexdigest() == image_set.image(IMAGE).digest


def test_podman_with_certs_d(
    mirror: MirrorProcess, client_tls: ClientTLS, image_set: ImageSet, tmp_path: Path
) -> None:
    require_contained("podman")
    podman = SecurePodman(tmp_path, mirror.port, client_tls)
    podman.set_logins({})  # no login: only TLS
    podman.pull(f"docker.io/{IMAGE}")
    out = podman.podman("image", "inspect", "--format", "{{json .RepoDigests}}", IMAGE)
    digests = {d.split("@", 1)[1] for d in json.loads(out)}
    assert image_set.image(IMAGE).digest in digests


def test_containerd_with_ca_and_client_in_hosts_toml(
    mirror: MirrorProcess, client_tls: ClientTLS, image_set: ImageSet, tmp_path: Path
) -> None:
    require_contained("containerd", "ctr")
    containerd = Containerd(tmp_path / "containerd")
    ctr = ["ctr", "--address", str(containerd.socket)]
    box = Namespace(tmp_path / "containerd")  # resolves mirror.test; containerd's own is plain
    try:
        hosts = secure_hosts_toml(tmp_path / "hosts", mirror.port, client_tls)
        reference = f"docker.io/{IMAGE}"
        box.run([*ctr, "images", "pull", "--snapshotter", "native", "--hosts-dir", str(hosts),
                 reference])  # fmt: skip
        listing = box.run([*ctr, "images", "ls"]).splitlines()[1:]
        assert [line.split()[2] for line in listing if line.split()[0] == reference] == [
            image_set.image(IMAGE).digest
        ]
    finally:
        containerd.stop()


def test_dockerd_registry_mirrors_over_https_with_certs_d(
    mirror: MirrorProcess, client_tls: ClientTLS, image_set: ImageSet, tmp_path: Path
) -> None:
    require_contained("dockerd", "docker")
    stranger = PrivateCA.create(tmp_path / "stranger", name="stranger")
    docker = SecureDockerDaemon(tmp_path, mirror.port, client_tls)
    certs_d = tmp_path / "etc-docker" / "certs.d" / docker.host
    try:
        # Another CA in certs.d first: dockerd must verify (it would not for 127.0.0.0/8).
        (certs_d / "ca.crt").write_bytes(stranger.root_path.read_bytes())
        with pytest.raises(ClientError):
            docker.pull(IMAGE.removeprefix("library/"))
        assert "certificate signed by unknown authority" in (tmp_path / "dockerd.log").read_text()
        client_tls.write_certs_dir(certs_d)  # read again for every connection
        docker.pull(IMAGE.removeprefix("library/"))
        out = docker.box.run(
            [docker.cli, "image", "inspect", "--format", "{{json .RepoDigests}}",
             IMAGE.removeprefix("library/")], docker.env,
        )  # fmt: skip
        assert [d.split("@", 1)[1] for d in json.loads(out)] == [image_set.image(IMAGE).digest]
    finally:
        docker.stop()
