"""The ``Authorization`` header a client sends, and the ``WWW-Authenticate`` challenge it gets.

::

    Bearer realm="https://mirror:5443/auth/token",service="registry-mirror",scope="repository:docker.io/library/alpine:pull"
    Basic realm="registry-mirror"

The scope names the upstream and the repository, so a client that only has
the request (containerd with ``?ns=``) asks for a token the mirror can check.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from dataclasses import dataclass, field

TOKEN_PATH = "/auth/token"
BASIC_REALM = "registry-mirror"
_MAX_HEADER = 8192
_UNQUOTED_RE = re.compile(r'[\x00-\x1f\x7f"\\]')
_EMPTY_BASIC = base64.b64encode(b":").decode()


class MalformedCredentials(ValueError):
    """An ``Authorization`` header the mirror cannot read."""


@dataclass(frozen=True, slots=True)
class BasicCredentials:
    """User name and password from ``Authorization: Basic``."""

    user: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class BearerCredentials:
    """A token from ``Authorization: Bearer``."""

    token: str = field(repr=False)


Credentials = BasicCredentials | BearerCredentials


def decode_basic(value: str) -> BasicCredentials:
    """The user and password of a Basic credential (base64 of UTF-8 ``user:password``)."""
    try:
        text = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        # ValueError: characters beyond ASCII (a Latin-1 header), which b64decode refuses
        # before it looks at the alphabet.
        raise MalformedCredentials("Basic credentials are not base64 of UTF-8 text") from None
    user, sep, password = text.partition(":")
    if not sep or not user:
        raise MalformedCredentials("Basic credentials need user:password")
    return BasicCredentials(user, password)


def parse_authorization(header: str | None) -> Credentials | None:
    """The credentials of an ``Authorization`` header (None when absent).

    ``Basic`` of an empty user and password counts as absent: podman and skopeo
    send it when they have no login for a registry that challenged them.
    """
    if header is None or not header.strip():
        return None
    if len(header) > _MAX_HEADER:
        raise MalformedCredentials("Authorization header too long")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "basic":
        return None if value.strip() == _EMPTY_BASIC else decode_basic(value)
    if scheme.lower() == "bearer" and value.strip():
        return BearerCredentials(value.strip())
    raise MalformedCredentials("expected Basic or Bearer credentials")


def _quote(value: str) -> str:
    return '"' + _UNQUOTED_RE.sub("", value) + '"'


def pull_scope(upstream: str, repository: str) -> str:
    """``repository:<upstream>/<repository>:pull``."""
    return f"repository:{upstream}/{repository}:pull"


def token_realm(configured: str | None, secure: bool, host: str) -> str:
    """The token endpoint's URL: as configured, else on the host the client called."""
    if configured is not None:
        return configured
    return f"{'https' if secure else 'http'}://{host}{TOKEN_PATH}"


def bearer_challenge(
    realm: str, service: str, scope: str | None = None, error: str | None = None
) -> str:
    """A ``Bearer`` challenge; ``error`` as in RFC 6750 (``invalid_token``, ...)."""
    parts = [f"realm={_quote(realm)}", f"service={_quote(service)}"]
    if scope is not None:
        parts.append(f"scope={_quote(scope)}")
    if error is not None:
        parts.append(f"error={_quote(error)}")
    return "Bearer " + ",".join(parts)


def basic_challenge() -> str:
    """The ``Basic`` challenge, for a mirror without token auth."""
    return f"Basic realm={_quote(BASIC_REALM)}"


def carries_bearer(authorization: str | None, token: str | None) -> bool:
    """Whether an ``Authorization`` header is ``Bearer <token>`` (never, when ``token`` is unset).

    Compared in constant time: the answer time must not reveal how much of a
    guess matched. The admin API's static token is checked this way everywhere.
    """
    scheme, _, given = (authorization or "").partition(" ")
    if not token or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())
