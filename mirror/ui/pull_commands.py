"""The exact commands that pull an image through this mirror, per client.

Every command names the mirror explicitly (a path prefix: ``HOST/<upstream>/
<repository>``) or goes through containerd's ``hosts.toml``, so it works
without a daemon-wide mirror setting; the one exception is docker's
``registry-mirrors``, offered for the default upstream when it is Docker
Hub. See docs/clients.md for the tested configurations behind them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HOSTS_DIR = "/etc/containerd/certs.d"
PLACEHOLDER_HOST = "MIRROR-HOST:5000"
# A host, an IPv4 address or a bracketed IPv6 address, and an optional port.
_HOST_RE = re.compile(r"(?:[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*|\[[0-9A-Fa-f:.]{2,45}\])"
                      r"(?::[0-9]{1,5})?")  # fmt: skip


@dataclass(frozen=True, slots=True)
class MirrorAddress:
    """Where clients reach the mirror: ``host[:port]`` and whether it is HTTPS."""

    host: str
    secure: bool


@dataclass(frozen=True, slots=True)
class PullCommand:
    """One client's way to pull: a title, the text to copy, and what it assumes."""

    client: str  # a short id, unique on the page: "docker", "ctr-hosts", ...
    title: str
    text: str
    note: str


def mirror_address(host: str | None, secure: bool) -> MirrorAddress:
    """The address from a request's ``Host``; a placeholder when it is not a plain host."""
    if host is None or _HOST_RE.fullmatch(host) is None:
        return MirrorAddress(PLACEHOLDER_HOST, secure)
    return MirrorAddress(host, secure)


def pull_commands(
    address: MirrorAddress, upstream: str, upstream_url: str, repository: str, tag: str,
    *, docker_hub_default: bool,
) -> tuple[PullCommand, ...]:  # fmt: skip
    """Commands for docker, podman and containerd's ``ctr``, for ``repository:tag``.

    ``docker_hub_default``: the upstream is Docker Hub and the default one, so
    docker's ``registry-mirrors`` setting reaches it with the image's own name.
    """
    prefixed = f"{address.host}/{upstream}/{repository}:{tag}"
    scheme = "https" if address.secure else "http"
    commands = [
        PullCommand("docker", "Docker", f"docker pull {prefixed}",
                    "" if address.secure else
                    f'Plain HTTP: add "{address.host}" to "insecure-registries" in '
                    "/etc/docker/daemon.json."),
        PullCommand("podman", "Podman",
                    f"podman pull {'' if address.secure else '--tls-verify=false '}{prefixed}",
                    "The image is named after the mirror; podman tag it to rename it."),
        PullCommand("ctr-hosts", "containerd (hosts.toml)",
                    f"# {HOSTS_DIR}/{upstream}/hosts.toml\n"
                    f'server = "{upstream_url}"\n\n'
                    f'[host."{scheme}://{address.host}"]\n'
                    '  capabilities = ["pull", "resolve"]\n\n'
                    f"ctr images pull --hosts-dir {HOSTS_DIR} {upstream}/{repository}:{tag}",
                    "The image keeps its own name; the CRI (kubelet, crictl) reads the same "
                    "file when config_path is set."),
        PullCommand("ctr-direct", "containerd (ctr, no hosts.toml)",
                    f"ctr images pull {'' if address.secure else '--plain-http '}{prefixed}",
                    "The image is named after the mirror."),
    ]  # fmt: skip
    if docker_hub_default:
        short = repository.removeprefix("library/")
        commands.insert(1, PullCommand(
            "docker-mirror", "Docker (registry-mirrors)", f"docker pull {short}:{tag}",
            f'With "registry-mirrors": ["{scheme}://{address.host}"] in /etc/docker/daemon.json.',
        ))  # fmt: skip
    return tuple(commands)
