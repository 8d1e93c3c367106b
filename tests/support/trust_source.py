"""Two :class:`mirror.trust.source.SignatureSource` implementations for tests.

- :class:`MemorySource`: content in dictionaries, with a referrers API, a
  switch that makes it unavailable, and a count of every call;
- :class:`HttpSource`: a registry's pull API over HTTP (a real distribution
  registry or a :class:`FakeUpstream`), with the referrers tag-schema
  fallback for registries without the API, as a client does it.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import aiohttp

from mirror.oci import OCI_INDEX, OCI_MANIFEST
from mirror.trust import SignatureSourceUnavailable
from tests.support.oci_content import Content, fallback_tag, sha256

_ACCEPT = f"{OCI_MANIFEST}, {OCI_INDEX}"


class MemorySource:
    """Signature material in memory, answered like a registry with the referrers API."""

    def __init__(self) -> None:
        self.tags: dict[tuple[str, str], str] = {}
        self.manifests: dict[tuple[str, str], bytes] = {}
        self.blobs: dict[str, bytes] = {}
        self.unavailable = False
        self.calls: Counter[str] = Counter()

    def add(self, repository: str, content: Content, tag: str | None = None) -> str:
        """Store a manifest and its blobs; point ``tag`` at it."""
        for blob in content.blobs:
            self.blobs[sha256(blob)] = blob
        self.manifests[(repository, content.digest)] = content.body
        if tag is not None:
            self.tags[(repository, tag)] = content.digest
        return content.digest

    def _call(self, name: str) -> None:
        self.calls[name] += 1
        if self.unavailable:
            raise SignatureSourceUnavailable("the source is switched off")

    async def tagged_manifest(self, repository: str, tag: str) -> bytes | None:
        """The manifest ``tag`` points at."""
        self._call("tagged_manifest")
        digest = self.tags.get((repository, tag))
        return None if digest is None else self.manifests.get((repository, digest))

    async def referrers(self, repository: str, digest: str) -> list[dict[str, Any]]:
        """Every stored manifest of ``repository`` whose subject is ``digest``."""
        self._call("referrers")
        found = []
        for (repo, manifest_digest), body in self.manifests.items():
            doc = json.loads(body)
            if repo == repository and doc.get("subject", {}).get("digest") == digest:
                entry = {"mediaType": doc.get("mediaType"), "digest": manifest_digest}
                entry["artifactType"] = doc.get("artifactType") or doc["config"]["mediaType"]
                found.append(entry)
        return found

    async def manifest(self, repository: str, digest: str) -> bytes | None:
        """A manifest by digest."""
        self._call("manifest")
        return self.manifests.get((repository, digest))

    async def blob(self, repository: str, digest: str, max_size: int) -> bytes | None:
        """A blob by digest (any repository)."""
        self._call("blob")
        data = self.blobs.get(digest)
        return data if data is not None and len(data) <= max_size else None


class HttpSource:
    """A registry's pull API, anonymous; the referrers fallback tag when the API is missing."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")

    async def _get(self, path: str, accept: str | None = None) -> bytes | None:
        headers = {"Accept": accept} if accept else {}
        try:
            async with self.session.get(f"{self.base_url}/v2/{path}", headers=headers) as resp:
                if resp.status == 404:
                    return None
                if resp.status != 200:
                    raise SignatureSourceUnavailable(f"GET {path}: HTTP {resp.status}")
                return await resp.read()
        except aiohttp.ClientError as exc:
            raise SignatureSourceUnavailable(f"GET {path}: {exc}") from None

    async def tagged_manifest(self, repository: str, tag: str) -> bytes | None:
        """GET the manifest a tag points at."""
        return await self._get(f"{repository}/manifests/{tag}", _ACCEPT)

    async def referrers(self, repository: str, digest: str) -> list[dict[str, Any]]:
        """The referrers API, else the ``sha256-<hex>`` fallback index."""
        index = await self._get(f"{repository}/referrers/{digest}", OCI_INDEX)
        if index is None:
            index = await self._get(f"{repository}/manifests/{fallback_tag(digest)}", OCI_INDEX)
        if index is None:
            return []
        entries = json.loads(index).get("manifests", [])
        return [entry for entry in entries if isinstance(entry, dict)]

    async def manifest(self, repository: str, digest: str) -> bytes | None:
        """GET a manifest by digest."""
        return await self._get(f"{repository}/manifests/{digest}", _ACCEPT)

    async def blob(self, repository: str, digest: str, max_size: int) -> bytes | None:
        """GET a blob (whole: signature blobs are small)."""
        data = await self._get(f"{repository}/blobs/{digest}")
        return data if data is not None and len(data) <= max_size else None
