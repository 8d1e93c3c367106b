"""Docker Hub's names mean Docker Hub everywhere a registry is named, and only it gets library/.

One table of spellings, checked against every place that reads a registry
name: an upstream's URL, an auths file key, ``ns``, a path prefix, a pin and
the admin API's repository.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mirror.cache.pins import parse_pin
from mirror.config import Config, build_config
from mirror.credentials import registry_key
from mirror.docker_hub import official_repository, registry_name
from mirror.routing import Router
from mirror.upstream.offline import OfflineUpstream

# (how a client or a config writes it, what it names)
SPELLINGS = [
    ("docker.io", "docker.io"),
    ("registry-1.docker.io", "docker.io"),
    ("index.docker.io", "docker.io"),
    ("registry.hub.docker.com", "docker.io"),
    ("Docker.IO", "docker.io"),
    ("REGISTRY.HUB.DOCKER.COM", "docker.io"),
    ("ghcr.io", "ghcr.io"),
    ("GHCR.io", "ghcr.io"),
]


def two_upstreams(tmp_path: Path) -> Config:
    return build_config(
        {
            "storage": {"path": str(tmp_path)},
            "upstreams": [
                {"name": "ghcr.io", "url": "https://ghcr.io"},
                {"url": "https://registry-1.docker.io"},
            ],
        }
    )


@pytest.fixture
def router(tmp_path: Path) -> Router:
    config = two_upstreams(tmp_path)
    return Router(config, {u.name: OfflineUpstream(u) for u in config.upstreams})


@pytest.mark.parametrize(("spelling", "name"), SPELLINGS)
def test_every_spelling_names_one_registry(spelling: str, name: str, tmp_path: Path) -> None:
    hub = name == "docker.io"
    assert registry_name(spelling) == name
    assert registry_key(spelling) == name
    assert registry_key(f"https://{spelling}/v1/") == name
    (upstream,) = build_config({"upstreams": [{"url": f"https://{spelling}"}]}).upstreams
    assert (upstream.name, upstream.is_docker_hub) == (name, hub)
    config = two_upstreams(tmp_path)
    found = config.upstream_named(spelling)
    assert found is not None
    assert found.name == name
    pin = parse_pin(f"{spelling}/alpine:3.20", config)
    assert (pin.upstream, pin.repository) == (name, "library/alpine" if hub else "alpine")


@pytest.mark.parametrize(("spelling", "name"), SPELLINGS)
def test_routing_knows_every_spelling(spelling: str, name: str, router: Router) -> None:
    hub = name == "docker.io"
    by_prefix = router.resolve(f"{spelling}/alpine", None)
    by_ns = router.resolve("alpine", spelling)
    for target in (by_prefix, by_ns):
        assert target.upstream.name == name
        assert target.repository == ("library/alpine" if hub else "alpine")


def test_only_docker_hub_puts_one_component_names_under_library() -> None:
    assert official_repository("alpine", docker_hub=True) == "library/alpine"
    assert official_repository("org/app", docker_hub=True) == "org/app"
    assert official_repository("alpine", docker_hub=False) == "alpine"


def test_an_upstream_reached_as_docker_hub_is_docker_hub_whatever_its_name() -> None:
    config = build_config(
        {"upstreams": [{"name": "hub.internal", "url": "https://registry.hub.docker.com"}]}
    )
    found = config.upstream_named("index.docker.io")
    assert found is not None
    assert found.name == "hub.internal"
    assert parse_pin("alpine:3", config).repository == "library/alpine"
