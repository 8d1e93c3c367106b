"""``Retry-After`` on upstream 503 and 429: waited out when short, passed on when not.

Timing is read from the fake upstream's own request log, so the assertions
are about when the upstream was asked again, not about how fast this machine is.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mirror.upstream.retry import parse_retry_after
from tests.support.fake_upstream import FakeUpstream, Fault
from tests.support.mirror_app import RunningMirror, run_mirror
from tests.support.pulls import blob_url, manifest_url, pull
from tests.test_routing import OCI_MANIFEST, push_image, sha256
from tests.test_upstream_redirect_policy import config_for

REPO = "team/app"
ACCEPT = {"Accept": OCI_MANIFEST}
CAP = 3.0  # retry_after_max in these tests


@pytest.fixture
async def mirror(up: FakeUpstream, tmp_path: Path) -> AsyncIterator[RunningMirror]:
    config = config_for(tmp_path, up, retries=2, retry_after_max=CAP, read_timeout=10)
    async with run_mirror(config) as running:
        yield running


def spacing(up: FakeUpstream, path: str) -> list[float]:
    """Seconds between consecutive upstream GETs of ``path``."""
    times = [r.time for r in up.requests if r.method == "GET" and r.path.endswith(path)]
    return [later - earlier for earlier, later in itertools.pairwise(times)]


def target(up: FakeUpstream, mirror: RunningMirror, kind: str) -> tuple[str, str, bytes]:
    """(mirror URL, upstream path suffix, expected sha256) for a fresh image."""
    image = push_image(up, REPO, "v1", b"retry-after layer " + kind.encode())
    if kind == "blob":
        url = blob_url(mirror.url, REPO, image.layer_digest)
        return url, f"/blobs/{image.layer_digest}", image.layer
    return manifest_url(mirror.url, REPO, "v1"), "/manifests/v1", b""


@pytest.mark.parametrize("status", [503, 429])
@pytest.mark.parametrize("kind", ["blob", "manifest"])
async def test_short_retry_after_is_waited_out(
    up: FakeUpstream,
    mirror: RunningMirror,
    session: aiohttp.ClientSession,
    kind: str,
    status: int,
) -> None:
    url, path, layer = target(up, mirror, kind)
    up.add_fault(Fault(path, method="GET", status=status, retry_after=1, times=1))

    pulled = await pull(session, url, ACCEPT)

    assert pulled.status == 200, pulled.body
    if layer:
        assert pulled.body == layer
    gaps = spacing(up, path)
    assert len(gaps) == 1
    assert 0.99 <= gaps[0] < CAP + 5, gaps  # not before the upstream said, not much after


async def test_retry_after_as_an_http_date(
    up: FakeUpstream, mirror: RunningMirror, session: aiohttp.ClientSession
) -> None:
    url, path, _ = target(up, mirror, "manifest")
    when = formatdate(time.time() + 2, usegmt=True)  # whole seconds: 1 to 2 s from now
    up.add_fault(Fault(path, method="GET", status=503, retry_after=when, times=1))

    pulled = await pull(session, url, ACCEPT)

    assert pulled.status == 200
    [gap] = spacing(up, path)
    assert 0.99 <= gap < CAP + 5


@pytest.mark.parametrize("status", [503, 429])
async def test_retry_after_beyond_the_cap_is_passed_on_at_once(
    up: FakeUpstream, mirror: RunningMirror, session: aiohttp.ClientSession, status: int
) -> None:
    url, path, _ = target(up, mirror, "blob")
    up.add_fault(Fault(path, status=status, retry_after=120))

    started = time.monotonic()
    pulled = await pull(session, url)

    assert time.monotonic() - started < CAP
    assert pulled.status == status
    assert pulled.headers["Retry-After"] == "120"
    assert up.count("GET", path) == 1


async def test_retry_after_past_the_request_deadline_is_passed_on(
    up: FakeUpstream, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A wait within the cap that would still outlast read_timeout is not made."""
    config = config_for(tmp_path, up, retries=2, retry_after_max=60, read_timeout=2)
    async with run_mirror(config) as mirror:
        url, path, _ = target(up, mirror, "manifest")
        up.add_fault(Fault(path, status=503, retry_after=5))

        pulled = await pull(session, url, ACCEPT)

    assert pulled.status == 503
    assert pulled.headers["Retry-After"] == "5"
    assert up.count("GET", path) == 1


async def test_a_503_that_persists_is_retried_at_its_pace_then_passed_on(
    up: FakeUpstream, mirror: RunningMirror, session: aiohttp.ClientSession
) -> None:
    url, path, _ = target(up, mirror, "blob")
    up.add_fault(Fault(path, status=503, retry_after=1))

    pulled = await pull(session, url)

    assert pulled.status == 503
    assert pulled.headers["Retry-After"] == "1"
    gaps = spacing(up, path)
    assert len(gaps) == 2  # retries = 2
    assert all(gap >= 0.99 for gap in gaps), gaps


async def test_a_stale_manifest_still_stands_in_for_a_busy_upstream(
    up: FakeUpstream, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    config = config_for(tmp_path, up, tag_ttl=0, retry_after_max=CAP)
    async with run_mirror(config) as mirror:
        url, path, _ = target(up, mirror, "manifest")
        fresh = await pull(session, url, ACCEPT)
        up.add_fault(Fault(path, status=503, retry_after=120))

        stale = await pull(session, url, ACCEPT)

    assert stale.status == 200
    assert sha256(stale.body) == sha256(fresh.body)
    assert "stale" in stale.headers["Warning"]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0", 0.0),
        (" 30 ", 30.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: now
        ("Thu, 01 Jan 1970 00:01:40 GMT", 0.0),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("9" * 5000, None),  # longer than Python's int-digit limit: no traceback
        (None, None),
    ],
)
def test_parse_retry_after(value: Any, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds
    assert parse_retry_after(formatdate(1000.0, usegmt=True), now=990.0) == 10.0
