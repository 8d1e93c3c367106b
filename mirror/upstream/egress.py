"""Where the mirror connects on an upstream's word: redirect targets and token realms.

The configured upstream's own origin is trusted: the operator chose it.
Anything else an upstream names (a redirect ``Location``, the realm of a
``WWW-Authenticate`` challenge) could point into the mirror's own network,
from a hostile upstream or from whoever controls a plain-HTTP path to it. So:

* a redirect of a blob request is followed when the upstream's ``redirects``
  setting is ``blobs`` (the default) or ``all``; a redirect of anything else
  (manifests, tag lists, referrers) only with ``all`` — blob redirects to a CDN
  are the only ones the distribution protocol uses;
* a token realm on the upstream's own host (any port) is trusted like the
  upstream;
* any other host must have only public addresses, unless the upstream's
  ``redirect_allow`` lists its name or a network holding its address (see
  :mod:`mirror.upstream.addresses`).

The check is made on the addresses actually connected to: requests to other
hosts go out on a separate session per upstream whose resolver drops every
refused address, so a name that resolves to a public address when checked and
to a private one when connecting (DNS rebinding) gets nowhere. IP literals,
which aiohttp never resolves, are checked before the request is sent.

A refusal is logged at WARNING, counted in
``mirror_upstream_refused_destinations_total`` and raised as
:class:`~mirror.errors.UpstreamRefused` (502), naming the host and the
setting that would allow it.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from mirror import __version__
from mirror.config import UpstreamConfig
from mirror.errors import UpstreamRefused
from mirror.metrics import Metrics
from mirror.upstream.addresses import AddressPolicy, ip_literal

log = logging.getLogger(__name__)

USER_AGENT = f"registry-mirror/{__version__} (+aiohttp)"

Origin = tuple[str, str, int]


def origin(url: str) -> Origin:
    """``(scheme, host, port)`` of a URL, the port filled in; ``ValueError`` on a bad port."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def client_session(resolver: AbstractResolver | None = None) -> aiohttp.ClientSession:
    """A session for talking to registries; every egress uses the same settings."""
    return aiohttp.ClientSession(
        headers={"User-Agent": USER_AGENT},
        connector=aiohttp.TCPConnector(
            limit=256, limit_per_host=64, ttl_dns_cache=60, resolver=resolver
        ),
        auto_decompress=False,
        # aiohttp's 64 KiB default pauses the socket every couple of reads during a
        # blob download; 1 MiB lets a fill take the upstream's bytes in big gulps.
        read_bufsize=1024 * 1024,
    )


class AddressRefused(OSError):
    """A host name resolved only to addresses the policy refuses."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"{host} resolves only to refused addresses ({reason})")
        self.host = host
        self.reason = reason


class PolicyResolver(AbstractResolver):
    """A resolver (the system's by default) keeping only the addresses a policy allows."""

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve ``host``; raise :class:`AddressRefused` if no allowed address is left."""
        found = await self._inner.resolve(host, port, family)
        if self._policy.host_allowed(host):
            return found
        kept: list[ResolveResult] = []
        refused = "no address"
        for entry in found:
            try:
                reason = self._policy.refusal(ipaddress.ip_address(entry["host"]))
            except ValueError:
                reason = "unreadable address"
            if reason is None:
                kept.append(entry)
            else:
                refused = reason
        if not kept:
            raise AddressRefused(host, refused)
        return kept

    async def close(self) -> None:
        """Release the system resolver."""
        await self._inner.close()


class Egress:
    """The ways out for one upstream: straight to it, or policed everywhere else."""

    def __init__(
        self, config: UpstreamConfig, session: aiohttp.ClientSession, metrics: Metrics
    ) -> None:
        self.direct = session
        self.origin = origin(config.url)
        self._name = config.name
        self._redirects = config.redirects
        self._policy = AddressPolicy.from_entries(config.redirect_allow)
        self._metrics = metrics
        self._guarded: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        """Close the policed session, if one was opened."""
        if self._guarded is not None:
            await self._guarded.close()

    def follow(self, url: str, location: str, *, blob: bool) -> tuple[str, aiohttp.ClientSession]:
        """The URL a redirect from ``url`` points to, and the session to follow it on.

        Raises UpstreamRefused when the policy does not allow it.
        """
        try:
            target = urljoin(url, location)
        except ValueError:
            raise self._refuse("redirect", "url", "?", "not a valid URL") from None
        host, target_origin = self._parse(target, "redirect")
        if target_origin == self.origin:
            return target, self.direct
        if self._redirects != "all" and not (blob and self._redirects == "blobs"):
            what = "blob" if blob else "manifest, tag list or referrers"
            raise self._refuse(
                "redirect", "mode", host,
                f"a {what} redirect, not followed with redirects = {self._redirects!r}; "
                f'set redirects = "all" for upstream {self._name} to follow it',
            )  # fmt: skip
        return target, self._checked(host, "redirect")

    def for_realm(self, realm: str, *, home: bool) -> aiohttp.ClientSession:
        """The session to ask a token realm on; ``home``: the upstream itself named it.

        Raises UpstreamRefused when the policy does not allow the realm.
        """
        host, _ = self._parse(realm, "realm")
        if home and host == self.origin[1]:
            return self.direct
        return self._checked(host, "realm")

    def refused_at_connect(self, exc: BaseException, via: str) -> UpstreamRefused | None:
        """The refusal behind a connection error from the policed session, if it was one."""
        if isinstance(exc, aiohttp.ClientConnectorError):
            cause = exc.os_error
            if isinstance(cause, AddressRefused):
                hint = self._allow_hint(cause.host, cause.reason)
                return self._refuse(via, "address", cause.host, hint)
        return None

    def _parse(self, url: str, via: str) -> tuple[str, Origin]:
        """Host and origin of a URL an upstream named; UpstreamRefused if it is unusable."""
        try:
            parts = urlsplit(url)
            found = origin(url)  # a port that is not a number in range raises here
        except ValueError:
            raise self._refuse(via, "url", "?", "not a valid URL") from None
        host = parts.hostname or ""
        if parts.scheme.lower() not in ("http", "https") or not host:
            raise self._refuse(via, "url", host, "not an http(s) URL with a host")
        if parts.username is not None or parts.password is not None:
            raise self._refuse(via, "url", host, "the URL carries credentials")
        return host, found

    def _checked(self, host: str, via: str) -> aiohttp.ClientSession:
        """The policed session, after the checks the resolver cannot make (IP literals)."""
        if self._policy.host_allowed(host):
            return self._session()
        try:
            literal = ip_literal(host)
        except ValueError:
            raise self._refuse(via, "url", host, "not a canonical IP address") from None
        if literal is not None:
            reason = self._policy.refusal(literal)
            if reason is not None:
                raise self._refuse(via, "address", host, self._allow_hint(host, reason))
        return self._session()

    def _allow_hint(self, host: str, reason: str) -> str:
        return (
            f"a {reason} address; add {host!r} (or its network) to "
            f"redirect_allow of upstream {self._name} to allow it"
        )

    def _session(self) -> aiohttp.ClientSession:
        if self._guarded is None:
            self._guarded = client_session(PolicyResolver(self._policy))
        return self._guarded

    def _refuse(self, via: str, reason: str, host: str, why: str) -> UpstreamRefused:
        verb = "redirected the mirror to" if via == "redirect" else "named a token realm on"
        message = f"upstream {self._name} {verb} {host!r}, refused: {why}"
        log.warning("%s", message)
        self._metrics.upstream_refused(self._name, via, reason)
        return UpstreamRefused(message)
