"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.images import ImageSet, build_default_images
from tests.support.registry import UpstreamRegistry, running_registry

# ---------------------------------------------------------------------------
# Real upstream registries (logic in tests/support/{images,registry,token_server}.py).
# Session-scoped and started on first use; each is seeded once with `image_set`.
# They are shared by every test: put back anything you delete or overwrite.
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def image_set() -> ImageSet:
    """Synthetic images, cached under /tmp by size ($MIRROR_TEST_LARGE_MB, default 200)."""
    return build_default_images()


@pytest.fixture(scope="session")
def registry_none(
    image_set: ImageSet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[UpstreamRegistry]:
    """Distribution registry without auth, seeded with ``image_set``."""
    with running_registry(tmp_path_factory.mktemp("registry-none"), image_set) as registry:
        yield registry


@pytest.fixture(scope="session")
def registry_basic(
    image_set: ImageSet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[UpstreamRegistry]:
    """Distribution registry with htpasswd Basic auth (testuser:testpass), seeded."""
    workdir = tmp_path_factory.mktemp("registry-basic")
    with running_registry(workdir, image_set, auth="basic") as registry:
        yield registry


@pytest.fixture(scope="session")
def registry_token(
    image_set: ImageSet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[UpstreamRegistry]:
    """Distribution registry behind Bearer tokens (anonymous pull, testuser:testpass), seeded."""
    workdir = tmp_path_factory.mktemp("registry-token")
    with running_registry(workdir, image_set, auth="token") as registry:
        yield registry
