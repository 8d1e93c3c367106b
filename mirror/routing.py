"""Which upstream a request is for, and the repository name there.

Three ways to pick, on one listener:

1. containerd's ``?ns=<registry>`` query parameter;
2. a path prefix, ``/v2/<registry>/<repository>/...``, for clients that
   cannot send ``ns`` (containerd ``override_path``, ``docker pull
   mirror:5000/ghcr.io/org/image``);
3. neither: the default upstream (Docker Hub for docker's
   ``registry-mirrors``), where one-component names get ``library/``.

``ns`` and the prefix only ever select among configured upstreams: the
mirror never dials a host named by a client, so it cannot be used as an
open proxy. An unknown ``ns``, or a path whose first component looks like an
unconfigured registry host, gets 403 ``DENIED`` (containerd then tries its
next host, so a catch-all ``_default`` hosts.toml keeps working).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from mirror.config import Config
from mirror.docker_hub import official_repository
from mirror.errors import Denied
from mirror.oci import validate_name
from mirror.upstream.base import Upstream

_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_HOST_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]{{1,5}})?")


@dataclass(frozen=True, slots=True)
class Target:
    """The upstream and repository one request is about."""

    upstream: Upstream
    repository: str
    namespace: str | None  # the ns value to echo in OCI-Namespace, if one was given


class Router:
    """Maps request names (and ``ns``) to configured upstreams."""

    def __init__(self, config: Config, upstreams: Mapping[str, Upstream]) -> None:
        self._config = config
        self._upstreams = upstreams
        self._default = upstreams[config.default_upstream.name]

    @property
    def default(self) -> Upstream:
        """The upstream of names without a registry (Docker Hub, if configured)."""
        return self._default

    def upstream_named(self, name: str) -> Upstream | None:
        """The configured upstream called ``name`` (or a Docker Hub alias of it)."""
        found = self._config.upstream_named(name)
        return self._upstreams.get(found.name) if found is not None else None

    def resolve(self, name: str, ns: str | None) -> Target:
        """Pick the upstream for a request for ``name`` (the path's repository part)."""
        if ns is not None:
            upstream = self.upstream_named(ns)
            if upstream is None:
                raise Denied(f"registry {ns[:100]!r} is not configured on this mirror")
            repository = self._strip_own_prefix(name, upstream)
            return Target(upstream, self._normalize(upstream, repository), ns)
        first, sep, rest = name.partition("/")
        upstream = self.upstream_named(first) if sep else None
        if upstream is not None:
            return Target(upstream, self._normalize(upstream, validate_name(rest)), None)
        if sep and _looks_like_registry(first):
            raise Denied(f"registry {first[:100]!r} is not configured on this mirror")
        return Target(self._default, self._normalize(self._default, validate_name(name)), None)

    def _strip_own_prefix(self, name: str, upstream: Upstream) -> str:
        # containerd with override_path or a catch-all may send both forms.
        first, sep, rest = name.partition("/")
        if sep and self.upstream_named(first) is upstream:
            return validate_name(rest)
        return validate_name(name)

    @staticmethod
    def _normalize(upstream: Upstream, repository: str) -> str:
        return official_repository(repository, docker_hub=upstream.config.is_docker_hub)


def _looks_like_registry(component: str) -> bool:
    """Docker's rule: a first component with '.' or ':', or 'localhost', is a host."""
    if _HOST_RE.fullmatch(component) is None:
        return False
    return "." in component or ":" in component or component == "localhost"
