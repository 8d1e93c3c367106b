"""Where an upstream may send the mirror: redirects and token realms (no SSRF relay).

Every "internal" host here is a real listener on another loopback address
(127.0.0.2, 127.0.0.3): a test proves a refusal by that listener having
accepted no TCP connection at all.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from mirror.app import METRICS
from mirror.config import Config, build_config
from mirror.upstream.addresses import AddressPolicy
from mirror.upstream.egress import AddressRefused, PolicyResolver
from tests.support.fake_upstream import FakeUpstream
from tests.support.mirror_app import RunningMirror, run_mirror
from tests.support.pulls import Pulled, blob_url, is_cached, manifest_url, pull, wait_idle
from tests.test_routing import OCI_MANIFEST, push_image, sha256

REPO = "team/app"
ACCEPT = {"Accept": OCI_MANIFEST}


def config_for(tmp_path: Path, up: FakeUpstream, **upstream: Any) -> Config:
    """One upstream named ``hub`` at ``up``, no retries, with ``upstream`` settings."""
    table = {"name": "hub", "url": up.url, "retries": 0, "connect_timeout": 2, "read_timeout": 10}
    return build_config(
        {
            "listen": "127.0.0.1:0",
            "storage": {"path": str(tmp_path / "cache")},
            "upstreams": [{**table, **upstream}],
        },
        environ={},
    )


def refusals(mirror: RunningMirror, via: str, reason: str) -> float:
    labels = {"upstream": "hub", "via": via, "reason": reason}
    value = mirror.app[METRICS].registry.get_sample_value(
        "mirror_upstream_refused_destinations_total", labels
    )
    assert value is not None, "the series must exist from the start"
    return value


def error_message(pulled: Pulled) -> str:
    error = json.loads(pulled.body)["errors"][0]
    assert error["code"] == "UNAVAILABLE"
    return str(error["message"])


@pytest.fixture
async def internal() -> AsyncIterator[FakeUpstream]:
    """A registry on 127.0.0.2, standing for a host inside the mirror's network."""
    async with FakeUpstream(host="127.0.0.2") as fake:
        yield fake


def _url(mirror: RunningMirror, kind: str, digest: str, layer_digest: str) -> str:
    if kind == "manifest by tag":
        return manifest_url(mirror.url, REPO, "v1")
    if kind == "manifest by digest":
        return manifest_url(mirror.url, REPO, digest)
    if kind == "tag list":
        return f"{mirror.url}/v2/{REPO}/tags/list"
    return blob_url(mirror.url, REPO, layer_digest)


@pytest.mark.parametrize("mode", ["blobs", "all"])
@pytest.mark.parametrize("kind", ["manifest by tag", "manifest by digest", "tag list", "blob"])
async def test_redirect_to_an_internal_host_is_refused_without_a_connection(
    up: FakeUpstream,
    internal: FakeUpstream,
    session: aiohttp.ClientSession,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    mode: str,
) -> None:
    image = push_image(up, REPO, "v1", b"layer")
    push_image(internal, REPO, "v1", b"layer")  # what the internal host would answer
    if kind == "blob":
        up.blob_redirect = internal.cdn_url
    else:
        up.redirect_registry = internal.url
    # With "all", manifest redirects may be followed, but not to a loopback address.
    by_mode = kind != "blob" and mode == "blobs"
    async with run_mirror(config_for(tmp_path, up, redirects=mode)) as mirror:
        url = _url(mirror, kind, image.digest, image.layer_digest)

        refused = await pull(session, url, ACCEPT)

        assert refused.status == 502, refused.body
        message = error_message(refused)
        assert "'127.0.0.2'" in message
        assert ('redirects = "all"' if by_mode else "redirect_allow") in message
        assert internal.connections == internal.cdn_connections == 0
        assert refusals(mirror, "redirect", "mode" if by_mode else "address") == 1
        warnings = [r for r in caplog.records if r.name == "mirror.upstream.egress"]
        assert [r.levelno for r in warnings] == [logging.WARNING]
        # Nothing was kept: once the upstream answers itself, the mirror asks it again.
        up.redirect_registry = up.blob_redirect = None
        if kind == "blob":
            assert not await is_cached(mirror.app, "hub", image.layer_digest)
        asked = len(up.requests)
        again = await pull(session, url, ACCEPT)
        assert again.status == 200
        assert len(up.requests) > asked


@pytest.mark.parametrize("allow", ["127.0.0.3", "127.0.0.0/29"])
async def test_an_allowlisted_cdn_serves_blobs_but_not_manifests(
    session: aiohttp.ClientSession, tmp_path: Path, allow: str
) -> None:
    async with (
        FakeUpstream(auth="token", username="me", password="pw") as up,
        FakeUpstream(host="127.0.0.3") as cdn,
    ):
        image = push_image(up, REPO, "v1", b"cdn layer")
        push_image(cdn, REPO, "v1", b"cdn layer")
        up.blob_redirect = cdn.cdn_url
        config = config_for(tmp_path, up, username="me", password="pw", redirect_allow=[allow])
        async with run_mirror(config) as mirror:
            blob = await pull(session, blob_url(mirror.url, REPO, image.layer_digest))
            assert (blob.status, blob.body) == (200, image.layer)
            assert cdn.cdn_connections >= 1
            assert all(r.authorization is None for r in cdn.cdn_requests)
            await wait_idle(mirror.app)
            assert await is_cached(mirror.app, "hub", image.layer_digest)

            up.redirect_registry = cdn.url  # the allowlist does not open API redirects
            manifest = await pull(session, manifest_url(mirror.url, REPO, "v1"), ACCEPT)
            assert manifest.status == 502
            assert cdn.connections == 0
            assert refusals(mirror, "redirect", "mode") == 1


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data", "address"),  # cloud metadata
        ("http://[fe80::1]:{port}", "address"),
        ("http://[::ffff:127.0.0.2]:{port}", "address"),  # IPv4-mapped 127.0.0.2
        ("http://[::ffff:7f00:2]:{port}", "address"),  # the same, in hex
        ("http://[64:ff9b::7f00:2]:{port}", "address"),  # NAT64 of 127.0.0.2
        ("http://0.0.0.0:{port}", "address"),
        ("http://2130706434:{port}", "url"),  # 127.0.0.2 as one number
        ("http://127.2:{port}", "url"),  # inet_aton shorthand for 127.0.0.2
        ("http://0x7f000002:{port}", "url"),
        ("http://user:pw@127.0.0.2:{port}", "url"),
        ("file:///etc/passwd#", "url"),
    ],
)
async def test_disguised_internal_addresses_are_refused(
    up: FakeUpstream,
    internal: FakeUpstream,
    session: aiohttp.ClientSession,
    tmp_path: Path,
    location: str,
    reason: str,
) -> None:
    digest = up.add_blob(b"secret bytes")
    internal.add_blob(b"secret bytes")
    up.blob_redirect = location.format(port=URL(internal.cdn_url).port)
    async with run_mirror(config_for(tmp_path, up)) as mirror:
        refused = await pull(session, blob_url(mirror.url, REPO, digest))

        assert refused.status == 502, refused.body
        assert "refused" in error_message(refused)
        assert internal.connections == internal.cdn_connections == 0
        assert refusals(mirror, "redirect", reason) == 1


async def test_a_name_that_resolves_to_loopback_is_refused_when_connecting(
    up: FakeUpstream, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """``localhost`` passes every check on the URL; only its addresses give it away."""
    async with FakeUpstream(cdn_host="localhost") as named:
        digest = up.add_blob(b"named cdn bytes")
        named.add_blob(b"named cdn bytes")
        up.blob_redirect = named.cdn_url
        async with run_mirror(config_for(tmp_path / "a", up)) as mirror:
            refused = await pull(session, blob_url(mirror.url, REPO, digest))
            assert refused.status == 502
            assert "'localhost'" in error_message(refused)
            assert "loopback" in error_message(refused)
            assert named.cdn_connections == 0
            assert refusals(mirror, "redirect", "address") == 1

        config = config_for(tmp_path / "b", up, redirect_allow=["localhost"])
        async with run_mirror(config) as mirror:
            allowed = await pull(session, blob_url(mirror.url, REPO, digest))
            assert (allowed.status, allowed.body) == (200, b"named cdn bytes")
            assert named.cdn_connections >= 1


async def test_redirect_loops_are_bounded(
    up: FakeUpstream, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    image = push_image(up, REPO, "v1", b"loop")
    up.redirect_registry = up.url  # every request answered 307 to itself
    async with run_mirror(config_for(tmp_path, up, redirects="all")) as mirror:
        for url in (
            blob_url(mirror.url, REPO, image.layer_digest),
            manifest_url(mirror.url, REPO, "v1"),
        ):
            asked = len(up.requests)
            looped = await pull(session, url, ACCEPT)
            assert looped.status == 502
            assert "too many" in error_message(looped)
            assert len(up.requests) - asked == 6  # the request and five redirects


async def test_token_realm_on_an_internal_host_is_refused(
    internal: FakeUpstream, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with FakeUpstream(auth="token") as up:
        push_image(up, REPO, "v1", b"realm")
        up.token_realm = internal.url + "/token"
        async with run_mirror(config_for(tmp_path, up)) as mirror:
            refused = await pull(session, manifest_url(mirror.url, REPO, "v1"), ACCEPT)

            assert refused.status == 502
            message = error_message(refused)
            assert "token realm" in message
            assert "'127.0.0.2'" in message
            assert "redirect_allow" in message
            assert internal.connections == 0
            assert refusals(mirror, "realm", "address") == 1


async def test_token_realm_on_another_host_needs_the_allowlist(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The same token service, named as ``localhost`` rather than the upstream's 127.0.0.1."""
    async with FakeUpstream(auth="token", username="me", password="pw") as up:
        image = push_image(up, REPO, "v1", b"realm")
        up.token_realm = f"http://localhost:{up.port}/token"
        settings: dict[str, Any] = {"username": "me", "password": "pw"}
        async with run_mirror(config_for(tmp_path / "a", up, **settings)) as mirror:
            refused = await pull(session, manifest_url(mirror.url, REPO, "v1"), ACCEPT)
            assert refused.status == 502
            assert up.token_requests == 0  # and so the password went nowhere
        settings["redirect_allow"] = ["localhost"]
        async with run_mirror(config_for(tmp_path / "b", up, **settings)) as mirror:
            pulled = await pull(session, manifest_url(mirror.url, REPO, "v1"), ACCEPT)
            assert pulled.status == 200
            assert sha256(pulled.body) == image.digest
            assert up.token_requests >= 1


def _result(host: str, address: str, port: int) -> ResolveResult:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return ResolveResult(hostname=host, host=address, port=port, family=family, proto=0, flags=0)


class FixedResolver(AbstractResolver):
    """Answers every name with the same addresses, like a DNS server an attacker runs."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [_result(host, address, port) for address in self.addresses]

    async def close(self) -> None:
        return None


async def test_the_resolver_drops_refused_addresses_of_a_mixed_answer() -> None:
    """A name resolving to public and internal addresses at once connects to the public only."""
    mixed = FixedResolver("127.0.0.2", "203.0.113.9", "8.8.8.8", "::ffff:10.0.0.1", "2001:4860::8")
    kept = await PolicyResolver(AddressPolicy(), mixed).resolve("cdn.example", 443)
    assert [r["host"] for r in kept] == ["8.8.8.8", "2001:4860::8"]

    internal = PolicyResolver(AddressPolicy(), FixedResolver("169.254.169.254"))
    with pytest.raises(AddressRefused, match="link-local"):
        await internal.resolve("rebound.example", 80)

    by_name = AddressPolicy(hosts=frozenset({"registry.internal"}))
    kept = await PolicyResolver(by_name, FixedResolver("10.0.0.7")).resolve("registry.internal")
    assert [r["host"] for r in kept] == ["10.0.0.7"]
    by_network = AddressPolicy(networks=(ipaddress.ip_network("10.0.0.0/24"),))
    kept = await PolicyResolver(by_network, FixedResolver("10.0.0.7", "10.0.1.7")).resolve("x")
    assert [r["host"] for r in kept] == ["10.0.0.7"]
