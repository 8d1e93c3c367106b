"""Upstream authentication: Basic, and the Docker/OCI Bearer token flow.

On a 401 the upstream names its scheme in ``WWW-Authenticate``. For Bearer,
the mirror asks the realm for a token (with Basic credentials when it has
any), keeps it per scope until shortly before it expires, and sends it on
later requests, so one token serves a whole pull. Credentials go only to the
upstream itself and to the realm it names (never to a plain-HTTP realm of an
HTTPS upstream); the client drops them on redirects to other origins.

The realm is a URL the upstream chose, so it passes the same policy as a
redirect (:mod:`mirror.upstream.egress`): on the upstream's own host (any
port) it is trusted, elsewhere it must be public or allowed by ``redirect_allow``.
"""

from __future__ import annotations

import asyncio
import base64
import math
import re
import time
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

import aiohttp

from mirror.config import UpstreamConfig
from mirror.errors import (
    CredentialsRefused,
    UpstreamTimeout,
    UpstreamUnauthorized,
    UpstreamUnavailable,
)
from mirror.upstream.egress import Egress, Origin
from mirror.upstream.failures import Timeouts, describe_failure

# Tokens are renewed this long before they expire, to survive clock skew and
# a request that takes a while to reach the upstream.
_EXPIRY_MARGIN = 10.0
_DEFAULT_EXPIRES_IN = 60.0  # what the token spec says when expires_in is absent
_MAX_EXPIRES_IN = 86400  # renew at least daily, whatever the token service claims
_QUOTED_PAIR_RE = re.compile(r"\\(.)")
_PARAM_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?')


@dataclass(frozen=True, slots=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` header."""

    scheme: str
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge:
    """Parse ``Bearer realm="…",service="…",scope="…"`` (quoted values may hold commas)."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    position = 0
    while position < len(rest):
        match = _PARAM_RE.match(rest, position)
        if match is None or match.end() == position:
            break
        quoted, bare = match.group(2), match.group(3)
        # RFC 9110 quoted-pair: a backslash takes the next character as it is (\" and \\).
        value = _QUOTED_PAIR_RE.sub(r"\1", quoted) if quoted is not None else (bare or "")
        params[match.group(1).lower()] = value
        position = match.end()
    return Challenge(scheme.lower(), params)


@dataclass(slots=True)
class _Token:
    header: str
    expires_at: float


class Authenticator:
    """Produces the ``Authorization`` header for one upstream, per scope.

    ``home``: this authenticates to the configured upstream itself, so a realm
    on its host is trusted; ``False`` for a registry it redirected to.
    """

    def __init__(self, config: UpstreamConfig, egress: Egress, *, home: bool) -> None:
        self._config = config
        self._egress = egress
        self._home = home
        self._tokens: dict[str, _Token] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._scheme: str | None = None  # learnt from the first challenge
        self._bearer: dict[str, str] | None = None  # realm and service of the last challenge
        self.token_requests = 0

    def _basic(self) -> str | None:
        if not self._config.username:
            return None
        raw = f"{self._config.username}:{self._config.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    @property
    def sends_basic(self) -> bool:
        """Whether requests carry the mirror's credentials themselves (Basic), not a token."""
        return self._scheme == "basic" and self._basic() is not None

    def header_for(self, scope: str) -> str | None:
        """The header to send pre-emptively for ``scope``, if we have one."""
        if self._scheme == "basic":
            return self._basic()
        token = self._tokens.get(scope)
        if token is not None and token.expires_at > time.monotonic():
            return token.header
        return None

    async def prefetch(self, scope: str) -> str | None:
        """A token for a new scope from the realm we already know, saving a 401 round trip."""
        if self._scheme != "bearer" or self._bearer is None:
            return None
        params = {k: v for k, v in self._bearer.items() if k != "scope"}
        return await self._bearer_header(params, scope, None)

    async def answer(self, www_authenticate: str, scope: str, rejected: str | None) -> str:
        """Get a header that answers the challenge, or raise UpstreamUnauthorized.

        ``rejected`` is the header the upstream just refused, so a stale token
        is replaced rather than sent again.
        """
        challenge = parse_challenge(www_authenticate)
        if challenge.scheme == "basic":
            self._scheme = "basic"
            header = self._basic()
            if header is None:
                raise UpstreamUnauthorized(
                    f"upstream {self._config.name} wants credentials the mirror does not have"
                )
            if header == rejected:
                raise CredentialsRefused(
                    f"upstream {self._config.name} refused the mirror's credentials"
                )
            return header
        if challenge.scheme != "bearer" or "realm" not in challenge.params:
            raise UpstreamUnauthorized(f"unsupported upstream auth scheme {challenge.scheme!r}")
        if urlsplit(challenge.params["realm"]).scheme.lower() not in ("http", "https"):
            raise UpstreamUnauthorized("upstream named a token realm that is not an http(s) URL")
        self._scheme = "bearer"
        self._bearer = challenge.params
        return await self._bearer_header(challenge.params, scope, rejected)

    async def _bearer_header(self, params: dict[str, str], scope: str, rejected: str | None) -> str:
        lock = self._locks.setdefault(scope, asyncio.Lock())
        async with lock:
            # Another request may have fetched a fresh token while we waited.
            current = self.header_for(scope)
            if current is not None and current != rejected:
                return current
            token = await self._fetch_token(params, scope)
            self._tokens[scope] = token
            return token.header

    def _may_send_credentials(self, realm: str) -> bool:
        """Whether the realm may see the upstream's password.

        The realm is wherever the upstream's challenge points (Docker Hub:
        auth.docker.io), but never a plain-HTTP realm for an HTTPS upstream:
        that would let one forged challenge downgrade the password to cleartext.
        """
        realm_scheme = urlsplit(realm).scheme.lower()
        return realm_scheme == "https" or urlsplit(self._config.url).scheme == "http"

    async def _fetch_token(self, params: dict[str, str], scope: str) -> _Token:
        query = {"scope": params.get("scope") or scope}
        if "service" in params:
            query["service"] = params["service"]
        headers = {}
        basic = self._basic() if self._may_send_credentials(params["realm"]) else None
        if basic is not None:
            headers["Authorization"] = basic
            query["account"] = self._config.username or ""
        session = self._egress.for_realm(params["realm"], home=self._home)
        self.token_requests += 1
        timeout = aiohttp.ClientTimeout(
            total=self._config.read_timeout, connect=self._config.connect_timeout
        )
        try:
            async with session.get(
                params["realm"], params=query, headers=headers, timeout=timeout,
                allow_redirects=False,
            ) as response:  # fmt: skip
                if response.status in (401, 403):
                    raise _token_refused(self._config.name, response.status, basic is not None)
                if response.status != 200:
                    raise UpstreamUnavailable(f"token service answered {response.status}")
                document = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            refused = self._egress.refused_at_connect(exc, "realm")
            if refused is not None:
                raise refused from exc
            timeouts = Timeouts(self._config.connect_timeout, self._config.read_timeout)
            what = describe_failure(exc, params["realm"], timeouts)
            raise UpstreamTimeout(f"token service unreachable: {what}") from exc
        except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
            raise UpstreamUnavailable("token service sent no JSON") from exc
        return _token_from(document)


def _token_refused(name: str, status: int, with_credentials: bool) -> UpstreamUnauthorized:
    """The error for a token service's 401 or 403: refused credentials, or no anonymous token."""
    if with_credentials:
        return CredentialsRefused(
            f"upstream {name} refused the mirror's credentials (its token service answered "
            f"{status})"
        )
    return UpstreamUnauthorized(
        f"upstream {name}'s token service refused an anonymous token ({status}): "
        "the mirror needs credentials for it"
    )


class Authenticators:
    """The :class:`Authenticator` of each origin a request to one upstream meets.

    The upstream's own, with its credentials, and an anonymous one for each
    registry it redirects to (registry.k8s.io sends clients to Artifact
    Registry, which wants its own token); those never see the credentials, and
    their realms are never trusted like the upstream's host.
    """

    def __init__(self, config: UpstreamConfig, egress: Egress) -> None:
        self._config = config
        self._egress = egress
        self._home = Authenticator(config, egress, home=True)
        self._foreign: dict[Origin, Authenticator] = {}

    def header_for(self, at: Origin, scope: str) -> str | None:
        """Only what this origin itself asked for: a CDN that never challenged gets nothing."""
        if at == self._egress.origin:
            return self._home.header_for(scope)
        foreign = self._foreign.get(at)
        return foreign.header_for(scope) if foreign is not None else None

    async def authorize(self, at: Origin, scope: str, challenge: str | None) -> None:
        """Get origin ``at`` a header for ``scope``: prefetched, or answering ``challenge``."""
        authenticator = self._authenticator(at)
        current = authenticator.header_for(scope)
        if challenge is None:
            if current is None:
                await authenticator.prefetch(scope)
            return
        await authenticator.answer(challenge, scope, rejected=current)

    def refused(self, at: Origin, scope: str) -> UpstreamUnauthorized:
        """The error for a 401 from ``at`` after its challenge was answered.

        With Basic the credentials themselves were refused; with a token, the
        token service took them but the registry refused the token for this
        repository (Docker Hub answers so for a repository that does not exist).
        """
        name = self._config.name
        if at == self._egress.origin and self._home.sends_basic:
            return CredentialsRefused(f"upstream {name} refused the mirror's credentials")
        return UpstreamUnauthorized(
            f"upstream {name} refused the token it issued for {scope}: the repository may "
            "not exist, or the mirror's credentials do not give access to it"
        )

    def _authenticator(self, at: Origin) -> Authenticator:
        if at == self._egress.origin:
            return self._home
        found = self._foreign.get(at)
        if found is None:
            anonymous = replace(self._config, username=None, password=None)
            found = self._foreign[at] = Authenticator(anonymous, self._egress, home=False)
        return found


def _token_from(document: object) -> _Token:
    if not isinstance(document, dict):
        raise UpstreamUnavailable("token service sent an unexpected answer")
    value = document.get("token") or document.get("access_token")
    if not isinstance(value, str) or not value:
        raise UpstreamUnavailable("token service sent no token")
    lifetime = _lifetime(document.get("expires_in"))
    lifetime = max(lifetime - _EXPIRY_MARGIN, lifetime / 2)
    return _Token(f"Bearer {value}", time.monotonic() + lifetime)


def _lifetime(expires_in: object) -> float:
    """The token's lifetime in seconds: ``expires_in`` when it is a sane number.

    Compared before any conversion: ``float()`` of a 400-digit JSON integer
    raises, and NaN, infinity or a negative value would never (or always) expire.
    """
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
        return _DEFAULT_EXPIRES_IN
    if not 0 < expires_in < math.inf:  # also false for NaN
        return _DEFAULT_EXPIRES_IN
    return float(min(expires_in, _MAX_EXPIRES_IN))
