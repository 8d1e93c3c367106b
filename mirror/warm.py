"""Pre-warming: pull whole images through a running mirror so that it caches them.

For air-gapped sites: warm a mirror where there is network, carry its cache
directory (or bucket) over, and serve it there with ``--offline``. Every
platform of a multi-arch image is fetched, so the copy works for any node.

References are written the way ``docker pull`` takes them, optionally with
the registry first: ``alpine:3.20``, ``ghcr.io/org/app@sha256:…``. The mirror
itself decides the upstream (a configured registry prefix, else its default
upstream), exactly as for any client.

The referrers of every manifest come along, recursively (a signature of an
attestation): what the mirror's referrers endpoint lists, and cosign's
``sha256-<hex>.sig``, ``.att`` and ``.sbom`` tags, with their blobs. So an
offline copy can verify what it serves (content trust) and answer the
referrers endpoint.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp

from mirror.oci import DEFAULT_ACCEPT, DIGEST_HEADER, INDEX_MEDIA_TYPES
from mirror.progress import Reporter, make_reporter

_BLOB_CONCURRENCY = 4
_READ_CHUNK = 1024 * 1024
#: how deep referrers are followed (a signature of an attestation of an image is 2)
_REFERRER_DEPTH = 4
#: referrer manifests taken per image, however many its publisher attached
_MAX_REFERRERS = 500
_COSIGN_SUFFIXES = (".sig", ".att", ".sbom")


class _NotFound(ValueError):
    """The mirror answered 404."""


@dataclass
class WarmResult:
    """What warming one reference did."""

    reference: str
    digest: str | None = None
    manifests: int = 0
    blobs: int = 0
    blob_bytes: int = 0
    referrers: int = 0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Pace:
    """How many blobs go at once, and where their bytes are reported."""

    limit: asyncio.Semaphore
    reporter: Reporter


def split_reference(reference: str) -> tuple[str, str]:
    """``name:tag`` or ``name@digest`` -> (name, tag or digest); a bare name means ``latest``."""
    name, at, digest = reference.partition("@")
    if at:
        return name, digest
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :]
    return name, "latest"


async def warm(
    mirror_url: str, references: Iterable[str], reporter: Reporter | None = None
) -> list[WarmResult]:
    """Pull every reference (all platforms, all blobs) through the mirror.

    ``reporter`` shows each image's blob bytes as they arrive (a bar, or lines).
    """
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300)
    limit = asyncio.Semaphore(_BLOB_CONCURRENCY)
    progress = reporter if reporter is not None else make_reporter(quiet=True)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        results = []
        for reference in references:
            result = WarmResult(reference)
            try:
                await _warm_one(session, mirror_url.rstrip("/"), result, _Pace(limit, progress))
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                result.error = str(exc) or type(exc).__name__
            results.append(result)
        return results


async def _warm_one(
    session: aiohttp.ClientSession,
    base: str,
    result: WarmResult,
    pace: _Pace,
) -> None:
    name, ref = split_reference(result.reference)
    digest, document = await _manifest(session, f"{base}/v2/{name}/manifests/{ref}")
    result.digest = digest
    result.manifests += 1
    documents = [document]
    if document.get("mediaType") in INDEX_MEDIA_TYPES or "manifests" in document:
        for child in _descriptors(document, "manifests"):
            url = f"{base}/v2/{name}/manifests/{child}"
            documents.append((await _manifest(session, url))[1])
            result.manifests += 1
    subjects = [digest, *_descriptors(document, "manifests")]
    documents += await _referrers(session, f"{base}/v2/{name}", subjects, result)
    blobs = {
        digest
        for doc in documents
        for digest in _descriptors(doc, "config") + _descriptors(doc, "layers")
    }
    pace.reporter.start(f"warm {result.reference}", total_bytes=_total_size(documents),
                  total_items=len(blobs))  # fmt: skip
    await asyncio.gather(
        *(_blob(session, f"{base}/v2/{name}/blobs/{d}", result, pace) for d in sorted(blobs))
    )


async def _referrers(
    session: aiohttp.ClientSession, repository_url: str, subjects: list[str], result: WarmResult
) -> list[dict[str, object]]:
    """The referrer manifests of ``subjects``, and theirs, breadth first, each once."""
    seen = set(subjects)
    found: list[dict[str, object]] = []
    level = [s for s in subjects if s]
    for _ in range(_REFERRER_DEPTH):
        next_level = []
        for subject in level:
            for digest, document in await _referrers_of(session, repository_url, subject):
                if digest in seen or result.referrers >= _MAX_REFERRERS:
                    continue
                seen.add(digest)
                found.append(document)
                next_level.append(digest)
                result.referrers += 1
        level = next_level
    return found


async def _referrers_of(
    session: aiohttp.ClientSession, repository_url: str, subject: str
) -> list[tuple[str, dict[str, object]]]:
    """Manifests that refer to ``subject``: the referrers index, then cosign's tags."""
    async with session.get(f"{repository_url}/referrers/{subject}") as resp:
        index = json.loads(await resp.read()) if resp.status == 200 else {}
    digests = _descriptors(index, "manifests") if isinstance(index, dict) else []
    found = [await _manifest(session, f"{repository_url}/manifests/{d}") for d in digests]
    tag = subject.replace(":", "-", 1)
    for suffix in _COSIGN_SUFFIXES:
        tagged = await _optional_manifest(session, f"{repository_url}/manifests/{tag}{suffix}")
        if tagged is not None:
            found.append(tagged)
    return found


async def _optional_manifest(
    session: aiohttp.ClientSession, url: str
) -> tuple[str, dict[str, object]] | None:
    """A manifest that may well not exist (404: None)."""
    try:
        return await _manifest(session, url)
    except _NotFound:
        return None


def _descriptors(document: dict[str, object], field: str) -> list[str]:
    """Digests of the descriptor (or list of descriptors) under ``field``."""
    value = document.get(field)
    entries = value if isinstance(value, list) else [value]
    return [
        e["digest"] for e in entries if isinstance(e, dict) and isinstance(e.get("digest"), str)
    ]


async def _manifest(session: aiohttp.ClientSession, url: str) -> tuple[str, dict[str, object]]:
    headers = [("Accept", media_type) for media_type in DEFAULT_ACCEPT]
    async with session.get(url, headers=headers) as resp:
        body = await resp.read()
        if resp.status == 404:
            raise _NotFound(f"{url}: 404 {_oci_message(body)}")
        if resp.status != 200:
            raise ValueError(f"{url}: {resp.status} {_oci_message(body)}")
        document = json.loads(body)
        if not isinstance(document, dict):
            raise ValueError(f"{url}: not a manifest")
        return resp.headers.get(DIGEST_HEADER, ""), document


def _total_size(documents: list[dict[str, object]]) -> int:
    """The bytes of every config and layer, once each, as the manifests give them."""
    sizes: dict[str, int] = {}
    for doc in documents:
        for field in ("config", "layers"):
            value = doc.get(field)
            for entry in value if isinstance(value, list) else [value]:
                if isinstance(entry, dict) and isinstance(entry.get("size"), int):
                    sizes[str(entry.get("digest"))] = entry["size"]
    return sum(sizes.values())


async def _blob(
    session: aiohttp.ClientSession,
    url: str,
    result: WarmResult,
    pace: _Pace,
) -> None:
    async with pace.limit, session.get(url) as resp:
        if resp.status != 200:
            raise ValueError(f"{url}: {resp.status} {_oci_message(await resp.read())}")
        # The mirror verifies and caches; here the bytes only need to be drained.
        async for chunk in resp.content.iter_chunked(_READ_CHUNK):
            result.blob_bytes += len(chunk)
            pace.reporter.advance(len(chunk))
    result.blobs += 1


def _oci_message(body: bytes) -> str:
    try:
        return str(json.loads(body)["errors"][0]["message"])
    except (ValueError, KeyError, IndexError, TypeError):
        return body[:200].decode(errors="replace")
