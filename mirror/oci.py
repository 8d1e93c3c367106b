"""Pure OCI distribution vocabulary: names, references, digests, media types, headers.

Nothing here does I/O. Every parser raises a :mod:`mirror.errors` exception that
maps to the OCI error code a client expects, so routes never see a bare
``ValueError``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from mirror.errors import (
    DigestInvalid,
    ManifestUnknown,
    NameInvalid,
    RangeNotSatisfiable,
    ReferenceInvalid,
)
from mirror.numbers import digits_value

# Header names, spelled once.
DIGEST_HEADER = "Docker-Content-Digest"
API_VERSION_HEADER = "Docker-Distribution-API-Version"
API_VERSION = "registry/2.0"
NAMESPACE_HEADER = "OCI-Namespace"

# Media types of the manifests the mirror serves (see mirror.manifest_check).
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_MEDIA_TYPES = frozenset(
    {OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST, DOCKER_SCHEMA1_SIGNED, DOCKER_SCHEMA1}
)

# What the mirror asks the upstream for when the client sent no Accept at all:
# every modern manifest type, so the cached answer suits any later client.
DEFAULT_ACCEPT = (OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST)

# The distribution spec's grammar. A component always starts and ends with an
# alphanumeric, so no component can be "." or "..": names are safe path parts.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
_NAME_MAX = 255
# Algorithms whose hex length we know; only sha256 and sha512 are ever verified.
_HEX_LENGTHS = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)")
_RANGE_RE = re.compile(r"bytes=([0-9]*)-([0-9]*)")


@dataclass(frozen=True, slots=True)
class Digest:
    """A content digest such as ``sha256:<64 hex>``; only verifiable algorithms parse."""

    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    def hasher(self) -> hashlib._Hash:
        """A fresh hash object of this digest's algorithm."""
        return hashlib.new(self.algorithm)

    def matches(self, data: bytes) -> bool:
        """Whether ``data`` hashes to this digest."""
        h = self.hasher()
        h.update(data)
        return h.hexdigest() == self.hex


def parse_digest(value: str) -> Digest:
    """Parse and validate a digest; raise :class:`DigestInvalid` otherwise."""
    match = _DIGEST_RE.fullmatch(value)
    if match is None:
        raise DigestInvalid(f"malformed digest {value[:100]!r}")
    algorithm, hex_part = match.groups()
    expected = _HEX_LENGTHS.get(algorithm)
    if expected is None:
        raise DigestInvalid(f"unsupported digest algorithm {algorithm!r}")
    if len(hex_part) != expected or not re.fullmatch(r"[0-9a-f]+", hex_part):
        raise DigestInvalid(f"{algorithm} digest must be {expected} lowercase hex characters")
    return Digest(algorithm, hex_part)


def is_digest_syntax(value: str) -> bool:
    """Whether ``value`` follows the OCI digest grammar (any algorithm, verifiable or not)."""
    return _DIGEST_RE.fullmatch(value) is not None


def sha256_digest(data: bytes) -> Digest:
    """The sha256 digest of ``data``."""
    return Digest("sha256", hashlib.sha256(data).hexdigest())


def is_digest_like(reference: str) -> bool:
    """Whether a manifest reference is meant as a digest (it contains ':')."""
    return ":" in reference


def validate_name(name: str) -> str:
    """Validate a repository name against the spec's grammar and return it."""
    if len(name) > _NAME_MAX or _NAME_RE.fullmatch(name) is None:
        raise NameInvalid(f"invalid repository name {name[:100]!r}")
    return name


def validate_tag(tag: str) -> str:
    """Validate a tag against the spec's grammar and return it."""
    if _TAG_RE.fullmatch(tag) is None:
        raise ReferenceInvalid(f"invalid tag {tag[:130]!r}")
    return tag


@dataclass(frozen=True, slots=True)
class Reference:
    """A manifest reference: exactly one of ``tag`` and ``digest`` is set."""

    tag: str | None = None
    digest: Digest | None = None

    def __str__(self) -> str:
        return self.tag if self.tag is not None else str(self.digest)


def parse_reference(value: str) -> Reference:
    """Parse a manifest reference (a tag or a digest).

    A malformed digest is 400 ``DIGEST_INVALID``. Text that is no valid tag
    names no manifest: 404 ``MANIFEST_UNKNOWN``, the only failure the
    distribution spec allows for fetching a manifest (its conformance suite
    asks for ``.INVALID_MANIFEST_NAME``).
    """
    if is_digest_like(value):
        return Reference(digest=parse_digest(value))
    if _TAG_RE.fullmatch(value) is None:
        raise ManifestUnknown(f"no manifest is tagged {value[:130]!r}: it is not a valid tag")
    return Reference(tag=value)


@dataclass(frozen=True, slots=True)
class ByteRange:
    """An inclusive byte range already resolved against the object's size."""

    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        """Number of bytes in the range."""
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        """The ``Content-Range`` header value for a 206 answer."""
        return f"bytes {self.start}-{self.end}/{size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """Resolve a ``Range`` header against ``size``.

    Returns None when the whole object should be sent (no header, or a header
    we ignore as RFC 9110 allows, such as several ranges). Raises
    :class:`RangeNotSatisfiable` for a well-formed range outside the object.
    Positions are ASCII digits of any length, never converted whole (see
    :func:`mirror.numbers.digits_value`).
    """
    if header is None:
        return None
    match = _RANGE_RE.fullmatch(header.strip(" \t"))
    if match is None:
        # Multi-range or other units: serving the full body is always allowed.
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        return _suffix_range(digits_value(last), size)
    start = digits_value(first)
    end = digits_value(last) if last else None
    if start >= size or (end is not None and end < start):
        raise RangeNotSatisfiable(size)
    return ByteRange(start, size - 1 if end is None else min(end, size - 1))


def _suffix_range(suffix: int, size: int) -> ByteRange | None:
    """The last ``suffix`` bytes; None (the whole, empty, object) when there are none."""
    if suffix == 0:
        raise RangeNotSatisfiable(size)
    if size == 0:
        return None
    return ByteRange(max(size - suffix, 0), size - 1)
