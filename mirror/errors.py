"""The mirror's one exception tree and the one table that maps it to OCI errors.

::

    MirrorError                       (500 UNKNOWN: a bug, never expected)
    ├── CacheUnreadable               a cached blob broke off while being sent (the client is cut)
    ├── ClientError                   the request itself is wrong
    │   ├── NameInvalid               400 NAME_INVALID
    │   ├── NameUnknown               404 NAME_UNKNOWN (no such upstream / repository)
    │   ├── DigestInvalid             400 DIGEST_INVALID
    │   ├── ReferenceInvalid          400 MANIFEST_INVALID (bad tag syntax in the admin API, pins)
    │   ├── ManifestUnknown           404 MANIFEST_UNKNOWN
    │   ├── BlobUnknown               404 BLOB_UNKNOWN
    │   ├── NotCachedOffline          404 (the resource's *_UNKNOWN code: offline, not cached)
    │   ├── RangeNotSatisfiable       416 (with Content-Range: bytes */size)
    │   ├── Unsupported               405 UNSUPPORTED (push to a mirror)
    │   ├── QueryInvalid              400 PAGINATION_NUMBER_INVALID
    │   ├── Denied                    403 DENIED (e.g. an unconfigured upstream)
    │   ├── Unauthorized              401 UNAUTHORIZED (admin API without its token)
    │   │   └── AuthenticationRequired  401 UNAUTHORIZED with the client-auth challenge
    │   ├── TokenRequestInvalid       400 UNSUPPORTED (a token request the mirror cannot read)
    │   ├── SelectorRequired          400 UNSUPPORTED (an admin purge that names nothing to purge)
    │   └── TooManyRequests           429 TOOMANYREQUESTS (+ Retry-After: a client's rate limit)
    └── UpstreamError                 the upstream failed us
        ├── UpstreamUnauthorized      401 UNAUTHORIZED (the upstream wants credentials)
        │   └── CredentialsRefused    401 (the upstream refused the mirror's credentials)
        ├── UpstreamDenied            403 DENIED
        ├── UpstreamRateLimited       429 TOOMANYREQUESTS (+ Retry-After)
        ├── UpstreamUnavailable       502 UNAVAILABLE (5xx, bad answer, digest mismatch)
        │   ├── UpstreamBusy          503 UNAVAILABLE (+ Retry-After: an upstream 503 said when)
        │   ├── DigestMismatch        502 (the upstream sent bytes that do not hash right)
        │   └── ManifestRejected      502 (the upstream sent something that is not a manifest)
        ├── UpstreamRefused           502 UNAVAILABLE (a redirect or token realm the policy refuses)
        └── UpstreamTimeout           504 UNAVAILABLE (connect error, timeout)

Routes never build error bodies themselves: the middleware in
:mod:`mirror.routes.middleware` turns any :class:`MirrorError` into
``{"errors": [{"code", "message", "detail"}]}`` with :attr:`MirrorError.status`.
"""

from __future__ import annotations

from typing import Any


class MirrorError(Exception):
    """Base of every error the mirror raises on purpose."""

    status = 500
    code = "UNKNOWN"

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def headers(self) -> dict[str, str]:
        """Extra response headers this error must carry."""
        return {}


class CacheUnreadable(MirrorError):
    """A cached blob could not be read to its end: the backend failed, or the file shrank.

    Only ever raised once the status line went out: the client's transfer is cut.
    """


class ClientError(MirrorError):
    """The request is malformed or asks for something that does not exist."""

    status = 400


class NameInvalid(ClientError):
    """Repository name does not match the spec's grammar."""

    code = "NAME_INVALID"


class NameUnknown(ClientError):
    """The repository (or the upstream it should come from) is not known."""

    status = 404
    code = "NAME_UNKNOWN"


class DigestInvalid(ClientError):
    """A digest is malformed or uses an algorithm the mirror cannot verify."""

    code = "DIGEST_INVALID"


class ReferenceInvalid(ClientError):
    """A manifest reference is neither a valid tag nor a valid digest."""

    code = "MANIFEST_INVALID"


class ManifestUnknown(ClientError):
    """No such manifest, here or upstream."""

    status = 404
    code = "MANIFEST_UNKNOWN"


class BlobUnknown(ClientError):
    """No such blob, here or upstream."""

    status = 404
    code = "BLOB_UNKNOWN"


class NotCachedOffline(ClientError):
    """The mirror is offline and has not cached what was asked for.

    A 404 with the code of the resource asked for (``MANIFEST_UNKNOWN``,
    ``BLOB_UNKNOWN``, ``NAME_UNKNOWN``). Not a failure of anything: what the
    cache does know (a record of another Accept variant, the tags it has seen)
    may answer in its place, without a ``Warning``.
    """

    status = 404

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class QueryInvalid(ClientError):
    """A query parameter (such as ``n``) has a bad value."""

    code = "PAGINATION_NUMBER_INVALID"


class Unsupported(ClientError):
    """The operation is not available on a pull-only mirror."""

    status = 405
    code = "UNSUPPORTED"


class Denied(ClientError):
    """The mirror refuses the request (for example, an upstream it is not configured for)."""

    status = 403
    code = "DENIED"


class Unauthorized(ClientError):
    """The request lacks the credentials the mirror itself asks for (the admin token)."""

    status = 401
    code = "UNAUTHORIZED"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="registry-mirror admin"'}


class AuthenticationRequired(Unauthorized):
    """The request needs (other) client credentials; ``challenge`` says how to get them."""

    def __init__(self, message: str, challenge: str, detail: Any = None) -> None:
        super().__init__(message, detail)
        self.challenge = challenge

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": self.challenge}


class TokenRequestInvalid(ClientError):
    """A request to the mirror's token endpoint that it cannot read (OAuth ``invalid_request``)."""

    code = "UNSUPPORTED"


class SelectorRequired(ClientError):
    """An admin request lacks the parameters that say what it is about (a purge of nothing)."""

    code = "UNSUPPORTED"


class TooManyRequests(ClientError):
    """The client went over its rate limit (or its failed logins are being slowed down)."""

    status = 429
    code = "TOOMANYREQUESTS"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, {"retry_after": retry_after})
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class LayoutInvalid(ClientError):
    """An imported body is not an OCI image layout the cache can take."""

    code = "BLOB_UPLOAD_INVALID"


class ImportTooLarge(ClientError):
    """An import does not fit the cache budget, or its body passed its bound."""

    status = 413
    code = "SIZE_INVALID"


class CacheUnavailable(MirrorError):
    """The cache's storage refused a write (S3 down, a disk error); nothing partial is visible."""

    status = 503
    code = "UNAVAILABLE"


class RangeNotSatisfiable(ClientError):
    """A ``Range`` lies outside the object."""

    status = 416
    code = "RANGE_INVALID"

    def __init__(self, size: int) -> None:
        super().__init__("requested range not satisfiable", {"size": size})
        self.size = size

    def headers(self) -> dict[str, str]:
        return {"Content-Range": f"bytes */{self.size}"}


class UpstreamError(MirrorError):
    """The upstream registry could not give us what we asked for."""

    status = 502
    code = "UNAVAILABLE"


class UpstreamUnauthorized(UpstreamError):
    """The upstream refused the mirror's credentials (or wants some)."""

    status = 401
    code = "UNAUTHORIZED"


class CredentialsRefused(UpstreamUnauthorized):
    """The upstream, or its token service, refused the credentials the mirror sent.

    Every pull of that upstream fails until an operator fixes them: logged as
    a WARNING and reported by ``/readyz`` (mirror.upstream.health).
    """


class UpstreamDenied(UpstreamError):
    """The upstream denied access to the repository."""

    status = 403
    code = "DENIED"


class UpstreamRateLimited(UpstreamError):
    """The upstream answered 429; ``retry_after`` is passed to the client."""

    status = 429
    code = "TOOMANYREQUESTS"

    def __init__(self, message: str, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": self.retry_after or "60"}


class UpstreamUnavailable(UpstreamError):
    """The upstream answered 5xx or something unusable."""


class UpstreamBusy(UpstreamUnavailable):
    """The upstream answered 503 with a ``Retry-After`` the mirror could not wait out."""

    status = 503

    def __init__(self, message: str, retry_after: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": self.retry_after}


class DigestMismatch(UpstreamUnavailable):
    """Upstream bytes did not hash to the digest they were asked for."""


class ManifestRejected(UpstreamUnavailable):
    """The upstream answered a manifest request with something that is not a manifest.

    A captive portal's HTML page, a proxy's error page, a truncated or
    mistyped document: never stored, never served (see :mod:`mirror.manifest_check`).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"upstream sent something that is not a manifest: {reason}")
        self.reason = reason


class UpstreamRefused(UpstreamError):
    """The upstream sent the mirror to a host its redirect policy does not allow.

    Not a reason to serve a stale manifest: the operator must see it and decide.
    """


class UpstreamTimeout(UpstreamError):
    """The upstream could not be reached or did not answer in time."""

    status = 504


def is_retryable_upstream(error: MirrorError) -> bool:
    """Whether a stale cached answer may stand in for this upstream failure."""
    return isinstance(error, UpstreamRateLimited | UpstreamUnavailable | UpstreamTimeout)
