"""Docker token auth: the JWTs the mirror issues to its clients and checks on their requests.

An access token is what Docker Hub's token service gives, signed with the
mirror's own key (:mod:`mirror.security.keys`)::

    {"iss": issuer, "sub": user or "", "aud": service, "exp", "nbf", "iat", "jti",
     "access": [{"type": "repository", "name": "docker.io/library/alpine", "actions": ["pull"]}]}

The ``name`` of a grant is the upstream and the repository the client's
name resolved to (``docker.io/library/alpine`` for ``alpine``), so a request
is checked with one set lookup whatever spelling (``?ns=``, path prefix,
``library/`` rule) it uses. Clients treat tokens as opaque.

A refresh token (``docker login`` asks for one) is a JWT for the audience
``refresh:<service>`` that names the user and a digest of the user's htpasswd
entry: changing the password, or removing the user, ends it.

Checks refuse a token that is expired or not yet valid (10 s leeway for
clocks of a fleet), signed with another key or algorithm (``alg: none``
included), meant for another audience or issuer, or malformed. Verified access
tokens are remembered until they expire, so a request pays one dictionary
lookup, not a signature check.
"""

from __future__ import annotations

import datetime
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from cachetools import LRUCache

from mirror.config_security import TokenConfig
from mirror.security.keys import SigningKey

MAX_TOKEN_LENGTH = 8192
MAX_SCOPES = 16
LEEWAY = 10.0
_REQUIRED = ["exp", "nbf", "iat", "iss", "aud", "sub", "jti"]

Reason = Literal["expired_token", "invalid_token"]


class TokenInvalid(Exception):
    """A token was refused; ``reason`` is a closed label for logs and metrics."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason


@dataclass(frozen=True, slots=True)
class Scope:
    """One ``type:name:actions`` scope of a token request."""

    type: str
    name: str
    actions: tuple[str, ...]


def parse_scopes(values: Iterable[str]) -> list[Scope]:
    """Scopes from repeated and/or space-separated values; malformed ones are skipped.

    The name may itself hold ``:`` (``host:port/repo``): actions follow the last one.
    """
    scopes: list[Scope] = []
    for value in values:
        for item in value.split():
            kind, _, rest = item.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind and name and len(scopes) < MAX_SCOPES:
                scopes.append(Scope(kind, name, tuple(a for a in actions.split(",") if a)))
    return scopes


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A signed access token and what the token endpoint says about it."""

    token: str
    expires_in: int
    issued_at: float

    def body(self, refresh_token: str | None = None) -> dict[str, Any]:
        """The token endpoint's JSON answer (``token`` for docker, ``access_token`` for OAuth)."""
        issued = datetime.datetime.fromtimestamp(self.issued_at, datetime.UTC)
        body: dict[str, Any] = {
            "token": self.token,
            "access_token": self.token,
            "expires_in": self.expires_in,
            "issued_at": issued.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if refresh_token is not None:
            body["refresh_token"] = refresh_token
        return body


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A verified access token: whose, until when, and the repositories it may pull."""

    subject: str
    expires_at: float
    pulls: frozenset[str]


class TokenAuthority:
    """Issues and verifies the mirror's tokens with one signing key."""

    def __init__(
        self, key: SigningKey, config: TokenConfig, clock: Callable[[], float] = time.time
    ) -> None:
        self._key = key
        self._config = config
        self._clock = clock
        self._verified: LRUCache[str, AccessToken] = LRUCache(4096)

    @property
    def refresh_enabled(self) -> bool:
        """Whether ``docker login`` gets a refresh token."""
        return self._config.refresh_expires_in > 0

    def _claims(self, subject: str, audience: str, lifetime: float) -> dict[str, Any]:
        now = int(self._clock())
        return {
            "iss": self._config.issuer,
            "sub": subject,
            "aud": audience,
            "exp": now + int(lifetime),
            "nbf": now,
            "iat": now,
            "jti": secrets.token_urlsafe(16),
        }

    def _sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(
            claims, self._key.private_key, algorithm=self._key.algorithm,
            headers={"kid": self._key.key_id},
        )  # fmt: skip

    def issue(self, subject: str, pulls: Iterable[str]) -> IssuedToken:
        """An access token for ``subject`` ("" when anonymous) granting pull on ``pulls``."""
        claims = self._claims(subject, self._config.service, self._config.expires_in)
        claims["access"] = [
            {"type": "repository", "name": name, "actions": ["pull"]} for name in sorted(pulls)
        ]
        return IssuedToken(self._sign(claims), int(self._config.expires_in), claims["iat"])

    def issue_refresh(self, subject: str, fingerprint: str) -> str:
        """A refresh token for ``subject``, valid while its htpasswd entry stays the same."""
        claims = self._claims(
            subject, f"refresh:{self._config.service}", self._config.refresh_expires_in
        )
        claims["pwd"] = fingerprint
        return self._sign(claims)

    def _decode(self, token: str, audience: str) -> dict[str, Any]:
        if len(token) > MAX_TOKEN_LENGTH:
            raise TokenInvalid("invalid_token", "token too long")
        try:
            header = jwt.get_unverified_header(token)
            if header.get("kid") != self._key.key_id:
                raise TokenInvalid("invalid_token", "token signed with an unknown key")
            claims: dict[str, Any] = jwt.decode(
                token, self._key.public_key, algorithms=[self._key.algorithm],
                audience=audience, issuer=self._config.issuer,
                # Times are checked below with this authority's clock.
                options={"require": _REQUIRED, "verify_exp": False, "verify_nbf": False,
                         "verify_iat": False},
            )  # fmt: skip
        except jwt.PyJWTError as exc:
            raise TokenInvalid("invalid_token", f"token refused: {exc}") from None
        self._check_times(claims)
        return claims

    def _check_times(self, claims: dict[str, Any]) -> None:
        now = self._clock()
        times = [claims.get(name) for name in ("exp", "nbf", "iat")]
        if not all(isinstance(t, int | float) and not isinstance(t, bool) for t in times):
            raise TokenInvalid("invalid_token", "token times are not numbers")
        if claims["exp"] <= now - LEEWAY:
            raise TokenInvalid("expired_token", "token expired")
        if claims["nbf"] > now + LEEWAY or claims["iat"] > now + LEEWAY:
            raise TokenInvalid("invalid_token", "token not valid yet")

    def verify(self, token: str) -> AccessToken:
        """The verified access token; :class:`TokenInvalid` when refused."""
        known = self._verified.get(token)
        if known is not None:
            if known.expires_at > self._clock() - LEEWAY:
                return known
            del self._verified[token]
        claims = self._decode(token, self._config.service)
        access = claims.get("access")
        if not isinstance(access, list) or not isinstance(claims["sub"], str):
            raise TokenInvalid("invalid_token", "token without an access list")
        pulls = frozenset(
            entry["name"] for entry in access
            if isinstance(entry, dict) and entry.get("type") == "repository"
            and isinstance(entry.get("name"), str) and "pull" in (entry.get("actions") or ())
        )  # fmt: skip
        verified = AccessToken(claims["sub"], float(claims["exp"]), pulls)
        self._verified[token] = verified
        return verified

    def verify_refresh(self, token: str) -> tuple[str, str]:
        """``(user, entry fingerprint)`` of a refresh token; :class:`TokenInvalid` when refused."""
        claims = self._decode(token, f"refresh:{self._config.service}")
        user, fingerprint = claims["sub"], claims.get("pwd")
        if not isinstance(user, str) or not user or not isinstance(fingerprint, str):
            raise TokenInvalid("invalid_token", "not a refresh token")
        return user, fingerprint
