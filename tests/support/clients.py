"""Real container clients pulling through the mirror, contained on loopback.

Each client runs, with its daemon if it has one, in a private mount namespace
whose ``/etc/hosts`` maps the public registry names to 127.0.0.1 and whose
``resolv.conf`` names 127.0.0.1 as the only DNS server. The network namespace
is the host's, so the mirror on 127.0.0.1 is reachable, but when a client falls
back from the mirror to ``registry-1.docker.io`` it fails at once instead of
leaving the machine. Every ``pull`` returns the digests the client recorded.

One object per client type, meant to live for a test session:
:class:`Skopeo`, :class:`Podman`, :class:`DockerDaemon`, :class:`Containerd`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.support.processes import ManagedProcess, ProcessError, start_process

PULL_TIMEOUT = 300.0
CONTAINED_HOSTS = (
    "docker.io registry-1.docker.io index.docker.io auth.docker.io registry.docker.io "
    "production.cloudflare.docker.com quay.io ghcr.io gcr.io registry.k8s.io"
)
_BIND_AND_EXEC = (
    'mount --bind "$0/hosts" /etc/hosts && '
    'mount --bind "$0/resolv.conf" /etc/resolv.conf && exec "$@"'
)
INSECURE_POLICY = {"default": [{"type": "insecureAcceptAnything"}]}


class ClientError(RuntimeError):
    """A client command failed; the message carries its output."""


def missing_tools(*names: str) -> list[str]:
    """Which of the executables ``names`` are not installed (or cannot be contained)."""
    wanted = ("unshare", *names)
    return [name for name in wanted if shutil.which(name) is None]


def require_contained(*tools: str) -> None:
    """Skip the test unless running as root (mount namespaces) with ``tools`` installed."""
    if os.geteuid() != 0:
        pytest.skip("contained clients need root (unshare -m)")
    missing = missing_tools(*tools)
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (see .ci/install-debian-packages)")


class Contained:
    """Runs commands in a private mount namespace that keeps them on loopback."""

    def __init__(self, workdir: Path) -> None:
        self.etc = workdir / "etc"
        self.etc.mkdir(parents=True, exist_ok=True)
        (self.etc / "hosts").write_text(
            f"127.0.0.1 localhost\n::1 localhost\n127.0.0.1 {CONTAINED_HOSTS}\n"
        )
        (self.etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the namespace."""
        return [
            "unshare", "-m", "--propagation", "private",
            "/bin/sh", "-c", _BIND_AND_EXEC, str(self.etc), *argv,
        ]  # fmt: skip

    def run(
        self, argv: Sequence[str], env: dict[str, str] | None = None,
        timeout: float = PULL_TIMEOUT, stdin: str | None = None,
    ) -> str:  # fmt: skip
        """Run ``argv`` contained; its stdout, or :class:`ClientError` with all output."""
        merged = {**os.environ, **(env or {})}
        done = subprocess.run(
            self.wrap(argv), capture_output=True, text=True, env=merged, timeout=timeout,
            check=False, input=stdin,
        )  # fmt: skip
        if done.returncode != 0:
            raise ClientError(
                f"{' '.join(argv)} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )
        return done.stdout

    def start(self, name: str, argv: Sequence[str], log_path: Path) -> ManagedProcess:
        """Start a daemon contained (``exec`` keeps its PID the one we stop)."""
        return start_process(name, self.wrap(argv), log_path=log_path)


def _wait_until(check: Sequence[str], process: ManagedProcess, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise ProcessError(f"{process.name} exited:\n{process.log_tail()}")
        done = subprocess.run(check, capture_output=True, check=False, timeout=30)
        if done.returncode == 0:
            return
        time.sleep(0.1)
    raise ProcessError(f"{process.name} did not come up in {timeout} s:\n{process.log_tail()}")


def _host(url: str) -> str:
    return url.split("://", 1)[1].rstrip("/")


# ---------------------------------------------------------------- skopeo


class Skopeo:
    """skopeo addresses the mirror directly: ``docker://<mirror>/<name>``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.box = Contained(workdir)
        self.policy = workdir / "policy.json"
        self.policy.write_text(json.dumps(INSECURE_POLICY))
        self._pulls = 0

    def pull(self, mirror_url: str, name: str, creds: str | None = None) -> list[str]:
        """Copy ``<mirror>/<name>`` (all platforms, digests kept) into a dir: layout;
        ``creds`` (``USER:PASSWORD``) is the login skopeo sends (``--src-creds``)."""
        self._pulls += 1
        target = self.workdir / f"pulled-{self._pulls}"
        login = ["--src-creds", creds] if creds is not None else []
        self.box.run(
            [
                "skopeo", "--policy", str(self.policy), "copy", "-q", "--all",
                "--preserve-digests", "--src-tls-verify=false", *login,
                f"docker://{_host(mirror_url)}/{name}", f"dir:{target}",
            ],
            env={"TMPDIR": str(self.workdir)},
        )  # fmt: skip
        manifest = (target / "manifest.json").read_bytes()
        shutil.rmtree(target)
        return ["sha256:" + hashlib.sha256(manifest).hexdigest()]


# ---------------------------------------------------------------- podman


class Podman:
    """podman with a ``registries.conf`` mirror for docker.io (no daemon)."""

    def __init__(self, workdir: Path, mirror_url: str) -> None:
        self.workdir = workdir
        self.box = Contained(workdir)
        (workdir / "tmp").mkdir(exist_ok=True)
        self.policy = workdir / "policy.json"
        self.policy.write_text(json.dumps(INSECURE_POLICY))
        (workdir / "registries.conf").write_text(podman_registries_conf(_host(mirror_url)))
        (workdir / "storage.conf").write_text(
            f'[storage]\ndriver = "vfs"\nrunroot = "{workdir}/run"\ngraphroot = "{workdir}/root"\n'
        )
        self.env = {
            "TMPDIR": str(workdir / "tmp"),
            "CONTAINERS_REGISTRIES_CONF": str(workdir / "registries.conf"),
            "CONTAINERS_STORAGE_CONF": str(workdir / "storage.conf"),
            # podman login writes here, and pulls read it (not the host's own logins)
            "REGISTRY_AUTH_FILE": str(workdir / "auth.json"),
        }
        (workdir / "auth.json").write_text('{"auths": {}}')  # podman refuses a missing one

    def _podman(self, *args: str, stdin: str | None = None) -> str:
        base = ["podman", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
        argv = [*base, "--tmpdir", str(self.workdir / "tmp"), *args]
        return self.box.run(argv, self.env, stdin=stdin)

    def login(self, registry: str, user: str, password: str) -> None:
        """``podman login`` to ``registry`` (``HOST:PORT``, plain HTTP)."""
        self._podman("login", "--tls-verify=false", "-u", user, "--password-stdin", registry,
                     stdin=password)  # fmt: skip

    def pull(self, reference: str) -> list[str]:
        """``podman pull <reference>``; the image's RepoDigests."""
        self._podman("pull", "-q", "--signature-policy", str(self.policy), reference)
        out = self._podman("image", "inspect", "--format", "{{json .RepoDigests}}", reference)
        return [d.split("@", 1)[1] for d in json.loads(out) or []]


def podman_registries_conf(mirror_host: str) -> str:
    """A registries.conf that sends docker.io pulls to the mirror."""
    return (
        'unqualified-search-registries = ["docker.io"]\n\n'
        '[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n\n'
        f'[[registry.mirror]]\nlocation = "{mirror_host}"\ninsecure = true\n'
    )


# ---------------------------------------------------------------- docker


class DockerDaemon:
    """dockerd with ``registry-mirrors`` pointing at the mirror."""

    def __init__(
        self, workdir: Path, mirror_url: str, *, data_root: Path | None = None,
        storage_driver: str | None = "vfs",
    ) -> None:  # fmt: skip
        """``data_root`` (default: in ``workdir``) may outlive the daemon, as a build cache;
        ``storage_driver`` None lets dockerd choose (overlay2 where the kernel allows)."""
        self.workdir = workdir
        self.box = Contained(workdir)
        self.socket = workdir / "docker.sock"
        config = {
            "registry-mirrors": [mirror_url],
            "insecure-registries": [_host(mirror_url)],
            "iptables": False, "ip6tables": False, "ip-forward": False, "ip-masq": False,
            "bridge": "none",
            "data-root": str(data_root or workdir / "data"),
            "exec-root": str(workdir / "exec"),
            "pidfile": str(workdir / "docker.pid"),
            "hosts": [f"unix://{self.socket}"],
        }  # fmt: skip
        if storage_driver is not None:
            config["storage-driver"] = storage_driver
        (workdir / "daemon.json").write_text(json.dumps(config))
        self.cli = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"
        self.env = {"DOCKER_HOST": f"unix://{self.socket}", "DOCKER_CONFIG": str(workdir / "cli")}
        argv = ["dockerd", "--config-file", str(workdir / "daemon.json")]
        self.process = self.box.start("dockerd", argv, workdir / "dockerd.log")
        try:
            _wait_until([self.cli, "-H", f"unix://{self.socket}", "version"], self.process)
        except ProcessError:
            self.stop()
            raise

    def docker(self, *args: str, timeout: float = PULL_TIMEOUT) -> str:
        """``docker ARGS`` against this daemon; its stdout, or :class:`ClientError`."""
        return self.box.run([self.cli, *args], self.env, timeout=timeout)

    def pull(self, reference: str) -> list[str]:
        """``docker pull <reference>``; the image's RepoDigests."""
        self.docker("pull", "-q", reference)
        out = self.docker("image", "inspect", "--format", "{{json .RepoDigests}}", reference)
        return [d.split("@", 1)[1] for d in json.loads(out) or []]

    def stop(self) -> None:
        """Stop dockerd, then the containerd it started if that outlived it."""
        self.process.stop(timeout=30)
        pidfile = self.workdir / "exec" / "containerd" / "containerd.pid"
        if pidfile.exists():
            _stop_pid(int(pidfile.read_text().strip() or 0))


def _stop_pid(pid: int) -> None:
    if pid <= 0:
        return
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, 9)


# ---------------------------------------------------------------- containerd


class Containerd:
    """containerd and ``ctr images pull --hosts-dir`` (ctr itself talks to registries)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.box = Contained(workdir)
        self.socket = workdir / "containerd.sock"
        (workdir / "config.toml").write_text(
            f'version = 2\nroot = "{workdir}/root"\nstate = "{workdir}/state"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.socket}"\n'
            f'[ttrpc]\n  address = "{self.socket}.ttrpc"\n'
            f'[debug]\n  address = "{workdir}/debug.sock"\n'
            '[metrics]\n  address = ""\n'
        )
        argv = ["containerd", "--config", str(workdir / "config.toml")]
        self.process = self.box.start("containerd", argv, workdir / "containerd.log")
        try:
            _wait_until(["ctr", "--address", str(self.socket), "version"], self.process)
        except ProcessError:
            self.process.stop()
            raise

    def pull(self, reference: str, hosts_dir: Path) -> list[str]:
        """``ctr images pull`` of a fully qualified ``reference``; its target digest."""
        ctr = ["ctr", "--address", str(self.socket)]
        self.box.run([*ctr, "images", "pull", "--snapshotter", "native",
                      "--hosts-dir", str(hosts_dir), reference])  # fmt: skip
        listing = self.box.run([*ctr, "images", "ls"])
        return [
            line.split()[2] for line in listing.splitlines()[1:] if line.split()[0] == reference
        ]

    def stop(self) -> None:
        """Stop containerd."""
        self.process.stop(timeout=30)


def write_hosts_toml(hosts_dir: Path, registry: str, mirror_url: str, server: str) -> Path:
    """``<hosts_dir>/<registry>/hosts.toml`` sending pulls of ``registry`` to the mirror."""
    folder = hosts_dir / registry
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hosts.toml").write_text(containerd_hosts_toml(mirror_url, server))
    return hosts_dir


def containerd_hosts_toml(
    mirror_url: str, server: str, *, override_path: bool = False, authorization: str | None = None
) -> str:
    """A hosts.toml with the mirror first and ``server`` as the fallback; ``authorization``
    is an ``Authorization`` header sent to the mirror on every request."""
    text = (
        f'server = "{server}"\n\n[host."{mirror_url}"]\n'
        '  capabilities = ["pull", "resolve"]\n  skip_verify = true\n'
    )
    text += "  override_path = true\n" if override_path else ""
    if authorization is not None:
        text += f'  [host."{mirror_url}".header]\n    Authorization = "{authorization}"\n'
    return text
