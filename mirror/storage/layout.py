"""The key layout of the cache; the only place that spells storage keys.

::

    <upstream>/blobs/<alg>/<hex[:2]>/<hex>            blob bytes
    <upstream>/manifests/<alg>/<hex[:2]>/<hex>        b"<media type>\\n" + manifest bytes
    <upstream>/tags/<repository>/<tag>/<variant>      JSON tag record

Upstreams are kept apart (one upstream cannot be used to read what was pulled
from another); within one upstream a blob is stored once, whatever
repositories share it. Repository names and tags are validated by
:mod:`mirror.oci` before they reach this module, so they are safe path parts.

A tag has one record per ``Accept`` variant (``any``, ``manifest``,
``schema1``; see :mod:`mirror.accept`), so at most three. Versions before
the variants named records by a hash of the client's whole Accept set;
such records are still read (offline, and as stale answers) and count
toward the cache budget like any record, but are never written again.
"""

from __future__ import annotations

from mirror.oci import Digest

BLOBS = "blobs"
MANIFESTS = "manifests"
TAGS = "tags"
# Written and removed by the readiness probe; upstream names cannot start with "_".
PROBE_KEY = "_probe/readyz"


def blob_key(upstream: str, digest: Digest) -> str:
    """Where the bytes of a blob live."""
    return f"{upstream}/{BLOBS}/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"


def manifest_key(upstream: str, digest: Digest) -> str:
    """Where a manifest (with its media type) lives."""
    return f"{upstream}/{MANIFESTS}/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"


def tag_prefix(upstream: str, repository: str, tag: str | None = None) -> str:
    """The folder of one tag's records, or of all tags of a repository."""
    if tag is None:
        return f"{upstream}/{TAGS}/{repository}/"
    return f"{upstream}/{TAGS}/{repository}/{tag}/"


def tag_key(upstream: str, repository: str, tag: str, variant: str) -> str:
    """Where the record for (repository, tag, Accept variant) lives."""
    return tag_prefix(upstream, repository, tag) + variant


def _is_upstream(name: str) -> bool:
    # Upstream names never contain "/" and never start with "_" (PROBE_KEY, QUARANTINE).
    return bool(name) and "/" not in name and not name.startswith("_")


def parse_content_key(key: str) -> tuple[str, str, Digest] | None:
    """``(upstream, kind, digest)`` of a blob or manifest key, None for other keys."""
    parts = key.split("/")
    # Upstream names never contain "/", so the kind is always the second part.
    if len(parts) != 5 or parts[1] not in (BLOBS, MANIFESTS) or not _is_upstream(parts[0]):
        return None
    upstream, kind, algorithm, _, hex_part = parts
    return upstream, kind, Digest(algorithm, hex_part)


def parse_tag_key(key: str) -> tuple[str, str, str] | None:
    """``(upstream, repository, tag)`` of a tag record key, None for other keys."""
    upstream, sep, rest = key.partition(f"/{TAGS}/")
    if not sep or not _is_upstream(upstream):
        return None
    repository_tag, _, _ = rest.rpartition("/")
    repository, _, tag = repository_tag.rpartition("/")
    if not repository or not tag:
        return None
    return upstream, repository, tag


def upstream_of(key: str) -> str | None:
    """The upstream of a blob, manifest or tag record key; None for any other key.

    The whole key space is listed with ``walk("")`` and sorted with this, so
    the commands and the index see every upstream's objects, including those
    of upstreams the configuration no longer names.
    """
    content = parse_content_key(key)
    if content is not None:
        return content[0]
    tag = parse_tag_key(key)
    return tag[0] if tag is not None else None


QUARANTINE = "_quarantine"  # "_" never starts an upstream name, so no clash


def quarantine_key(key: str) -> str:
    """Where ``verify --quarantine`` moves an object whose bytes do not match its digest."""
    return f"{QUARANTINE}/{key}"
