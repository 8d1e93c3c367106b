"""Upstream settings for redirects and retries, and URLs with credentials in them."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirror.config import ConfigError, UpstreamConfig, build_config
from mirror.upstream.addresses import AddressPolicy, address_class, ip_literal
from tests.support.cli import run_cli

SECRET = "Hunter2-s3cret"


def upstream(**table: Any) -> UpstreamConfig:
    return build_config({"upstreams": [table]}, environ={}).upstreams[0]


# ---------------------------------------------------------------- settings


def test_defaults_follow_blob_redirects_to_public_addresses_only() -> None:
    hub = upstream(url="https://registry-1.docker.io")
    assert (hub.redirects, hub.redirect_allow, hub.retry_after_max) == ("blobs", (), 10.0)


@pytest.mark.parametrize(
    ("table", "mode"),
    [
        ({"url": "https://registry.k8s.io"}, "all"),  # its whole API is redirects
        ({"url": "https://registry.k8s.io/", "name": "k8s"}, "all"),
        ({"url": "https://registry.k8s.io", "redirects": "blobs"}, "blobs"),
        ({"url": "http://registry.k8s.io"}, "blobs"),  # plain http: anyone on the path decides
        ({"url": "https://k8s-mirror.example", "name": "registry.k8s.io"}, "blobs"),
    ],
)
def test_registry_k8s_io_follows_api_redirects_by_default(table: dict[str, Any], mode: str) -> None:
    assert upstream(**table).redirects == mode


def test_redirect_allow_entries_are_normalised() -> None:
    found = upstream(
        url="http://10.1.2.3:5000",
        redirect_allow=["CDN.Internal.Example.", "10.0.0.0/8", "127.0.0.2", "fd00::/8", "::1"],
    )
    assert found.redirect_allow == (
        "cdn.internal.example", "10.0.0.0/8", "127.0.0.2/32", "fd00::/8", "::1/128",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"redirects": "some"}, "upstreams[0].redirects: expected one of none, blobs, all"),
        ({"redirect_allow": "10.0.0.0/8"}, "upstreams[0].redirect_allow: expected a list"),
        ({"redirect_allow": ["10.0.0.1/8"]}, "has host bits set"),
        ({"redirect_allow": ["cdn.example:8080"]}, "expected a host name, an IP address or a CIDR"),
        ({"redirect_allow": ["*.cdn.example"]}, "no scheme, port or wildcard"),
        ({"redirect_allow": ["https://cdn.example"]}, "expected a host name"),
        ({"redirect_allow": ["127.1"]}, "expected a host name, an IP address or a CIDR"),
        ({"retry_after_max": "soon"}, "upstreams[0].retry_after_max: expected a duration"),
    ],
)
def test_bad_redirect_settings_are_named(table: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace("*", r"\*")):
        upstream(url="https://ghcr.io", **table)


# ---------------------------------------------------------------- credentials in URLs


@pytest.mark.parametrize(
    "url",
    [
        f"http://user:{SECRET}@registry.example",
        f"http://:{SECRET}@registry.example",  # no user name: urlsplit's username is ""
        f"https://{SECRET}@registry.example",  # a token alone
        f"ftp://user:{SECRET}@registry.example",
        f"http://user:{SECRET}@registry.example/?q=1",
        f"http://user:{SECRET}/x@registry.example",  # "/" in it: urlsplit sees no userinfo
        f"http://user:p@{SECRET}@registry.example",  # an unescaped "@" in the password
        f"name=http://user:{SECRET}@registry.example",
    ],
)
def test_check_config_never_echoes_a_password_from_an_upstream_url(url: str) -> None:
    result = run_cli("check-config", "--upstream", url)
    assert result.returncode == 2
    assert "configuration error: upstreams[0]" in result.stderr
    assert "***@registry.example" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_no_password_from_a_url_in_the_file_or_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "mirror.toml"
    config.write_text(f'[[upstreams]]\nurl = "https://me:{SECRET}@ghcr.io"\n')
    from_file = run_cli("check-config", "--config", str(config))
    from_env = run_cli("check-config", env={"MIRROR_UPSTREAM": f"https://me:{SECRET}@ghcr.io"})
    s3 = run_cli(
        "check-config",
        env={
            "MIRROR_STORAGE": "s3",
            "MIRROR_S3_BUCKET": "b",
            "MIRROR_S3_ENDPOINT_URL": f"http://key:{SECRET}@minio:9000",
        },
    )
    for result in (from_file, from_env, s3):
        assert result.returncode == 2, result.stdout
        assert "***@" in result.stderr
        assert SECRET not in result.stdout + result.stderr


def test_check_config_describes_the_redirect_policy() -> None:
    result = run_cli(
        "check-config",
        "--upstream", "registry.k8s.io=https://registry.k8s.io",
        "--upstream", "docker.io=https://registry-1.docker.io",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    k8s = "upstream registry.k8s.io follows redirects of every request to public addresses\n"
    assert k8s in result.stdout
    assert "upstream docker.io follows redirects of blob requests to public addresses\n" in (
        result.stdout
    )


# ---------------------------------------------------------------- the address rules


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::808:808", None),  # NAT64 of a public address (DNS64 networks)
        ("2002:808:808::1", None),  # 6to4 of a public address
        ("127.0.0.2", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1", "link-local"),
        ("fd00:ec2::254", "private"),  # AWS metadata over IPv6 (ULA)
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("192.0.0.8", "reserved"),
        ("fec0::1", "site-local"),
        ("::ffff:169.254.169.254", "link-local"),
        ("64:ff9b::a9fe:a9fe", "link-local"),
        ("2002:a9fe:a9fe::", "link-local"),
        ("::127.0.0.1", "reserved"),  # IPv4-compatible, long deprecated
        ("2001::1", "reserved"),  # Teredo
    ],
)
def test_address_classes(address: str, kind: str | None) -> None:
    assert address_class(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f.0.0.1", "0177.0.0.1", "1.2.3"])
def test_numeric_hosts_that_are_not_canonical_addresses_are_never_names(host: str) -> None:
    with pytest.raises(ValueError, match="not a canonical IP address"):
        ip_literal(host)


@given(st.ip_addresses(v=4))
def test_ipv6_forms_of_an_ipv4_address_are_judged_as_that_address(
    address: ipaddress.IPv4Address,
) -> None:
    policy = AddressPolicy()
    expected = policy.refusal(address) is None
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    nat64 = ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | int(address))
    assert (policy.refusal(mapped) is None) == expected
    assert (policy.refusal(nat64) is None) == expected
    if not expected:  # 6to4 of a refused address is refused; of a public one, judged as IPv6
        sixtofour = ipaddress.IPv6Address((0x2002 << 112) | (int(address) << 80))
        assert policy.refusal(sixtofour) is not None


@given(st.ip_addresses(), st.integers(min_value=0, max_value=32))
def test_an_allowlisted_network_allows_every_address_in_it(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, prefix: int
) -> None:
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    policy = AddressPolicy(networks=(network,))
    assert policy.refusal(address) is None
