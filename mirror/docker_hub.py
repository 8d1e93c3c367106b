"""Docker Hub's names, written once: the host names it answers to and the ``library/`` rule.

Docker Hub goes by several host names. The mirror calls it ``docker.io``;
clients, config files and ``docker login`` also write ``registry-1.docker.io``
(its API host), ``index.docker.io`` (the key ``docker login`` stores,
``https://index.docker.io/v1/``) and ``registry.hub.docker.com`` (older
clients and docs). Every one of them, in any case, stands for Docker Hub
wherever a registry is named: an upstream's URL, ``ns``, a path prefix, a pin,
an auths file.

Docker Hub keeps its official images under ``library/``: ``alpine`` there is
``library/alpine``. No other registry has that rule.

Pure: no I/O, no imports from the rest of the mirror.
"""

from __future__ import annotations

DOCKER_HUB_NAME = "docker.io"
DOCKER_HUB_URL = "https://registry-1.docker.io"
DOCKER_HUB_HOSTS = frozenset(
    {DOCKER_HUB_NAME, "registry-1.docker.io", "index.docker.io", "registry.hub.docker.com"}
)
OFFICIAL_NAMESPACE = "library"


def registry_name(host: str) -> str:
    """The name of the registry at ``host``: ``docker.io`` for every Docker Hub alias.

    Any other host (with its port, if any) comes back lowercased.
    """
    lowered = host.lower()
    return DOCKER_HUB_NAME if lowered in DOCKER_HUB_HOSTS else lowered


def is_docker_hub_host(host: str) -> bool:
    """Whether ``host`` is one of Docker Hub's names (in any case)."""
    return registry_name(host) == DOCKER_HUB_NAME


def official_repository(repository: str, *, docker_hub: bool) -> str:
    """``alpine`` -> ``library/alpine`` on Docker Hub; any other name as it is."""
    if docker_hub and "/" not in repository:
        return f"{OFFICIAL_NAMESPACE}/{repository}"
    return repository
