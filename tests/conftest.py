"""Shared pytest fixtures."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.container_image import (
    BuiltImage,
    ImageEngine,
    build_with_wheels,
    missing_image_tools,
    running_engine,
)
from tests.support.fake_upstream import FakeUpstream
from tests.support.images import ImageSet, build_default_images
from tests.support.registry import UpstreamRegistry, running_registry
from tests.support.s3 import MotoS3, running_moto


def pytest_configure(config: pytest.Config) -> None:
    """Hypothesis: no example database, its caches outside the tree, no deadline under load."""
    from hypothesis import settings
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(str(Path(tempfile.gettempdir()) / "registry-mirror-hypothesis"))
    settings.register_profile("mirror", database=None, deadline=None)
    settings.load_profile("mirror")


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


# ---------------------------------------------------------------------------
# S3 (moto in server mode; logic in tests/support/s3.py). `storage_settings` runs a
# test once per backend: pass it as `storage=` to tests.support.mirror_app.mirror_config.
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """A moto S3 server on loopback, shared by the session; use a fresh bucket per test."""
    with running_moto(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture(params=["disk", "s3"])
def storage_settings(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """The ``storage`` table of a mirror config: a disk cache, or a fresh bucket on moto."""
    if request.param == "disk":
        return {"path": str(tmp_path / "cache")}
    server: MotoS3 = request.getfixturevalue("s3_server")
    return server.storage_settings(server.create_bucket(), tmp_path / "spool")


# ---------------------------------------------------------------------------
# A fake upstream on a real socket, and a client session, for one test.
# ---------------------------------------------------------------------------


@pytest.fixture
async def up() -> AsyncIterator[FakeUpstream]:
    """A fresh :class:`FakeUpstream` (no auth) on a free loopback port."""
    async with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session, closed after the test."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session with one connection per request, as separate pulling hosts would have."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as client:
        yield client


# ---------------------------------------------------------------------------
# The container image (logic in tests/support/container_image.py): a dockerd of
# the tests' own, and the image built by it once per session.
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def image_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageEngine]:
    """A dockerd (loopback only) whose registry mirror is the container under test."""
    missing = missing_image_tools()
    if missing:
        pytest.skip(f"cannot build images here: {', '.join(missing)}")
    with running_engine(tmp_path_factory.mktemp("image-engine")) as engine:
        yield engine


@pytest.fixture(scope="session")
def mirror_image(image_engine: ImageEngine) -> BuiltImage:
    """The project's image, built from the Dockerfile on the offline Debian base."""
    return build_with_wheels(image_engine)
