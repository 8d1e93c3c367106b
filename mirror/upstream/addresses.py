"""Which network addresses an upstream may send the mirror to: pure functions.

An upstream can name another host in two places: the ``Location`` of a
redirect and the token realm of a ``WWW-Authenticate`` challenge. Unless the
operator allows more, such a host must have only *public* addresses (globally
routable unicast). Everything an attacker could use to reach the mirror's own
network is refused: loopback, private (RFC 1918, IPv6 ULA), link-local
(including the cloud metadata address 169.254.169.254), shared CGNAT space,
multicast, unspecified, reserved and documentation ranges, and IPv6 forms that
embed such an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, 6to4
``2002:…``, NAT64 ``64:ff9b::a.b.c.d``).

:class:`AddressPolicy` adds the operator's allowlist (``redirect_allow``:
host names and networks) to that rule. The network side lives in
:mod:`mirror.upstream.egress`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_HOST_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix
_IPV6_UNICAST = ipaddress.IPv6Network("2000::/3")  # all global unicast IPv6 lies here
# IANA special-purpose ranges that are not reachable on the internet, named for
# log messages. Spelled out rather than left to ipaddress's is_global, whose
# tables differ between Python releases.
_SPECIAL: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(network), name)
    for network, name in (
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared (CGNAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "reserved"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("fc00::/7", "private"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
        ("2001::/23", "reserved"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
    )
)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_class(address: IPAddress) -> str | None:
    """``None`` for a public unicast address, else what it is (``"loopback"``, ...)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            found = address_class(embedded)
            # A mapped or NAT64 address *is* its IPv4 address; a 6to4 address
            # with a public IPv4 inside is still an IPv6 address to check.
            if found is not None or address.sixtofour is None:
                return found
    for network, name in _SPECIAL:
        if address in network:
            return name
    if isinstance(address, ipaddress.IPv6Address) and address not in _IPV6_UNICAST:
        return "reserved"
    # Python's own tables as a second net (they grow with new IANA registrations).
    return None if address.is_global and not address.is_multicast else "not globally routable"


def ip_literal(host: str) -> IPAddress | None:
    """The address when ``host`` is an IP literal; ``None`` for a host name.

    Raises ``ValueError`` for numeric hosts that are not canonical addresses
    (``127.1``, ``2130706433``, ``0x7f.1``): the C library would still connect
    them somewhere, so they are never treated as names.
    """
    text = host.strip("[]")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if ":" in text or _looks_numeric(text):
        raise ValueError(f"{host!r} is not a canonical IP address")
    return None


def _looks_numeric(host: str) -> bool:
    """Whether every dot-separated label is a number (decimal, octal or hex)."""
    labels = host.rstrip(".").split(".")
    return all(re.fullmatch(r"0[xX][0-9a-fA-F]*|[0-9]+", label) for label in labels)


def parse_allow_entry(text: str) -> IPNetwork | str:
    """One ``redirect_allow`` entry: a network (``10.0.0.0/8``, ``127.0.0.2``) or a host name.

    Raises ``ValueError`` with a message for anything else.
    """
    entry = text.strip().lower().rstrip(".")
    try:
        return ipaddress.ip_network(entry, strict=True)
    except ValueError as exc:
        if "/" in entry or ":" in entry or _looks_numeric(entry):
            raise ValueError(
                f"expected a host name, an IP address or a CIDR network: {exc}"
            ) from None
    if _HOST_NAME_RE.fullmatch(entry) is None:
        raise ValueError(f"expected a host name (no scheme, port or wildcard), got {text!r}")
    return entry


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Public addresses, plus the host names and networks an operator allowed."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> AddressPolicy:
        """Build from validated ``redirect_allow`` entries."""
        parsed = [parse_allow_entry(entry) for entry in entries]
        return cls(
            frozenset(p for p in parsed if isinstance(p, str)),
            tuple(p for p in parsed if not isinstance(p, str)),
        )

    def host_allowed(self, host: str) -> bool:
        """Whether ``host`` is allowlisted by name (then any address it resolves to is)."""
        return host.lower().rstrip(".") in self.hosts

    def refusal(self, address: IPAddress) -> str | None:
        """``None`` if the mirror may connect to ``address``, else why not."""
        found = address_class(address)
        if found is None:
            return None
        candidates = [address]
        if isinstance(address, ipaddress.IPv6Address):
            embedded = _embedded_ipv4(address)
            if embedded is not None:
                candidates.append(embedded)
        if any(a in network for a in candidates for network in self.networks):
            return None
        return found
