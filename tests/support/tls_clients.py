"""Real clients configured for a mirror with TLS (a private CA, client certificates) and logins.

Each client runs contained as in :mod:`tests.support.clients`, and reaches the
mirror by the name :data:`MIRROR_NAME`, which resolves to ``::1`` inside the
namespace. Not an address in 127.0.0.0/8, on purpose: dockerd treats every
registry there (and every name resolving there) as insecure, skips TLS
verification and never reads ``/etc/docker/certs.d``, so a test on 127.0.0.1
would prove nothing about the CA. The TLS files go where each client looks:

- docker: ``/etc/docker/certs.d/HOST:PORT/{ca.crt,client.cert,client.key}``
  (a directory bound over ``/etc/docker`` in the namespace);
- containerd: ``ca`` and ``client`` in ``hosts.toml``, optional static
  ``[host.….header] Authorization``;
- podman: ``/etc/containers/certs.d/HOST:PORT/`` (bound over ``/etc/containers``),
  ``registries.conf`` mirror entry, logins in ``REGISTRY_AUTH_FILE``;
- skopeo: ``--src-cert-dir`` and ``--src-creds``.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.clients import INSECURE_POLICY, Contained, _stop_pid, _wait_until
from tests.support.processes import ManagedProcess, ProcessError

MIRROR_NAME = "mirror.test"
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"


@dataclass(frozen=True)
class ClientTLS:
    """What a client needs to trust the mirror and to show its own certificate."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def write_certs_dir(self, directory: Path) -> Path:
        """``ca.crt`` (and ``client.cert``/``client.key``) as docker and podman read them."""
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.ca, directory / "ca.crt")
        if self.cert is not None and self.key is not None:
            shutil.copy(self.cert, directory / "client.cert")
            shutil.copy(self.key, directory / "client.key")
        return directory


def basic_auth(user: str, password: str) -> str:
    """The ``auth`` value of a docker config.json or containers auth.json entry."""
    return base64.b64encode(f"{user}:{password}".encode()).decode()


class Namespace(Contained):
    """:class:`Contained`, with :data:`MIRROR_NAME` -> ``::1`` and directories bound over
    paths under ``/etc`` (which must exist on the host)."""

    def __init__(self, workdir: Path, binds: dict[str, Path] | None = None) -> None:
        super().__init__(workdir)
        with (self.etc / "hosts").open("a") as hosts:
            hosts.write(f"::1 {MIRROR_NAME}\n")
        self.binds = binds or {}

    def wrap(self, argv: Sequence[str]) -> list[str]:
        mounts = "".join(f'mount --bind "{src}" "{dst}" && ' for dst, src in self.binds.items())
        script = (
            'mount --bind "$0/hosts" /etc/hosts && '
            'mount --bind "$0/resolv.conf" /etc/resolv.conf && ' + mounts + 'exec "$@"'
        )
        return ["unshare", "-m", "--propagation", "private", "/bin/sh", "-c", script,
                str(self.etc), *argv]  # fmt: skip


class SecureDockerDaemon:
    """dockerd with ``registry-mirrors: [https://mirror.test:PORT]`` and certs.d."""

    def __init__(self, workdir: Path, port: int, tls: ClientTLS) -> None:
        self.workdir = workdir
        self.host = f"{MIRROR_NAME}:{port}"
        etc_docker = workdir / "etc-docker"
        tls.write_certs_dir(etc_docker / "certs.d" / self.host)
        self.box = Namespace(workdir, {"/etc/docker": etc_docker})
        self.socket = workdir / "docker.sock"
        config = {
            "registry-mirrors": [f"https://{self.host}"], "storage-driver": "vfs",
            "iptables": False, "ip6tables": False, "ip-forward": False, "ip-masq": False,
            "bridge": "none", "data-root": str(workdir / "data"),
            "exec-root": str(workdir / "exec"), "pidfile": str(workdir / "docker.pid"),
            "hosts": [f"unix://{self.socket}"],
        }  # fmt: skip
        (workdir / "daemon.json").write_text(json.dumps(config))
        (workdir / "cli").mkdir(exist_ok=True)
        self.cli = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"
        self.env = {"DOCKER_HOST": f"unix://{self.socket}", "DOCKER_CONFIG": str(workdir / "cli")}
        argv = ["dockerd", "--config-file", str(workdir / "daemon.json")]
        self.process: ManagedProcess = self.box.start("dockerd", argv, workdir / "dockerd.log")
        try:
            _wait_until([self.cli, "-H", f"unix://{self.socket}", "version"], self.process)
        except ProcessError:
            self.stop()
            raise

    def set_logins(self, auths: dict[str, str]) -> None:
        """The CLI's config.json ``auths``: registry key -> ``user:password``."""
        entries = {key: {"auth": basic_auth(*login.split(":", 1))} for key, login in auths.items()}
        (self.workdir / "cli" / "config.json").write_text(json.dumps({"auths": entries}))

    def pull(self, reference: str) -> str:
        """``docker pull``; its output, or :class:`tests.support.clients.ClientError`."""
        return self.box.run([self.cli, "pull", "-q", reference], self.env)

    def stop(self) -> None:
        """Stop dockerd and the containerd it started."""
        self.process.stop(timeout=30)
        pidfile = self.workdir / "exec" / "containerd" / "containerd.pid"
        if pidfile.exists():
            _stop_pid(int(pidfile.read_text().strip() or 0))


def secure_hosts_toml(
    hosts_dir: Path, port: int, tls: ClientTLS, authorization: str | None = None
) -> Path:
    """``<hosts_dir>/docker.io/hosts.toml``: the mirror with ``ca``, ``client`` and an
    optional static ``Authorization`` header."""
    url = f"https://{MIRROR_NAME}:{port}"
    text = (
        f'server = "https://registry-1.docker.io"\n\n[host."{url}"]\n'
        f'  capabilities = ["pull", "resolve"]\n  ca = "{tls.ca}"\n'
    )
    if tls.cert is not None:
        text += f'  client = [["{tls.cert}", "{tls.key}"]]\n'
    if authorization is not None:
        text += f'  [host."{url}".header]\n    Authorization = "{authorization}"\n'
    (hosts_dir / "docker.io").mkdir(parents=True, exist_ok=True)
    (hosts_dir / "docker.io" / "hosts.toml").write_text(text)
    return hosts_dir


class SecurePodman:
    """podman with a ``registries.conf`` mirror over TLS for docker.io, certs.d and auth.json."""

    def __init__(self, workdir: Path, port: int, tls: ClientTLS) -> None:
        self.workdir = workdir
        self.host = f"{MIRROR_NAME}:{port}"
        etc = workdir / "etc-containers"
        tls.write_certs_dir(etc / "certs.d" / self.host)
        (etc / "policy.json").write_text(json.dumps(INSECURE_POLICY))
        (etc / "registries.conf").write_text(
            'unqualified-search-registries = ["docker.io"]\n\n'
            '[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n\n'
            f'[[registry.mirror]]\nlocation = "{self.host}"\n'
        )
        (workdir / "storage.conf").write_text(
            f'[storage]\ndriver = "vfs"\nrunroot = "{workdir}/run"\ngraphroot = "{workdir}/root"\n'
        )
        (workdir / "tmp").mkdir(exist_ok=True)
        self.auth_file = workdir / "auth.json"
        self.box = Namespace(workdir, {"/etc/containers": etc})
        self.env = {
            "TMPDIR": str(workdir / "tmp"),
            "CONTAINERS_REGISTRIES_CONF": str(etc / "registries.conf"),
            "CONTAINERS_STORAGE_CONF": str(workdir / "storage.conf"),
            "REGISTRY_AUTH_FILE": str(self.auth_file),
        }

    def podman(self, *args: str) -> str:
        """``podman ARGS``; its output, or :class:`tests.support.clients.ClientError`."""
        base = ["podman", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
                "--tmpdir", str(self.workdir / "tmp")]  # fmt: skip
        return self.box.run([*base, *args], self.env)

    def pull(self, reference: str) -> str:
        """``podman pull`` (any signature accepted); its output or ClientError."""
        policy = self.workdir / "etc-containers" / "policy.json"
        return self.podman("pull", "-q", "--signature-policy", str(policy), reference)

    def set_logins(self, auths: dict[str, str]) -> None:
        """auth.json: registry -> ``user:password``, as ``podman login`` writes it."""
        entries = {key: {"auth": basic_auth(*login.split(":", 1))} for key, login in auths.items()}
        self.auth_file.write_text(json.dumps({"auths": entries}))


def skopeo_copy_from_mirror(
    box: Namespace, workdir: Path, port: int, image: str, *options: str,
    policy: Mapping[str, Any],
) -> bytes:  # fmt: skip
    """``skopeo copy --all`` of ``image`` from the mirror at ``mirror.test:port``, run in
    ``box``, into a new ``dir:`` under ``workdir`` (``options``: certificates, a login); the
    manifest's bytes, or :class:`tests.support.clients.ClientError`."""
    (workdir / "policy.json").write_text(json.dumps(policy))
    out = workdir / f"out-{len(list(workdir.glob('out-*')))}"
    box.run(
        ["skopeo", "--policy", str(workdir / "policy.json"), "copy", "-q", "--all",
         "--preserve-digests", *options, f"docker://{MIRROR_NAME}:{port}/{image}",
         f"dir:{out}"],
        {"TMPDIR": str(workdir)},
    )  # fmt: skip
    return (out / "manifest.json").read_bytes()
