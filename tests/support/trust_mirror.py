"""A mirror with a trust policy in front of a registry of signed images, for tests.

The upstream is named ``registry.example`` (:data:`tests.support.cosign_cases.REGISTRY`),
so the docker-reference of the signatures made by :mod:`tests.support.cosign_cases`
names the image as the mirror pulls it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from mirror.config import Config
from mirror.oci import OCI_INDEX
from tests.support.cosign import CosignKey, payload, sign_layer, signature_manifest
from tests.support.cosign_cases import REGISTRY
from tests.support.mirror_app import mirror_config
from tests.support.oci_content import Content, compact

POLICY = "acme"


def trust_config(
    work: Path, upstream_url: str, key: CosignKey, *, mode: str = "require", **settings: Any
) -> Config:
    """A mirror of ``upstream_url`` (named ``registry.example``) whose policy trusts ``key``.

    The cache is ``work / "cache"``, so mirrors made with the same ``work``
    share it (online, then offline).
    """
    work.mkdir(parents=True, exist_ok=True)
    (work / "acme.pub").write_bytes(key.public_pem())
    trust = {
        "keys": {"acme": str(work / "acme.pub")},
        "policies": [{"name": POLICY, "repositories": ["acme/**"], "mode": mode, "keys": ["acme"]}],
    }
    upstream = {"url": upstream_url, "name": REGISTRY, "retries": 1, "connect_timeout": 2,
                "read_timeout": 10}  # fmt: skip
    settings = {"upstreams": [upstream], "trust": trust} | settings
    return mirror_config(work / "cache", upstream_url, **settings)


def platform_index(children: list[Content]) -> Content:
    """An OCI image index listing ``children`` (linux/amd64, linux/arm64, ...)."""
    architectures = ("amd64", "arm64", "s390x", "ppc64le")
    entries = [
        child.descriptor | {"platform": {"os": "linux", "architecture": arch}}
        for child, arch in zip(children, architectures, strict=False)
    ]
    body = compact({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    return Content(OCI_INDEX, body)


def signature_for(key: CosignKey, repository: str, digest: str) -> Content:
    """A cosign ``.sig`` manifest signing ``digest`` as ``registry.example/<repository>``."""
    return signature_manifest([sign_layer(key, payload(f"{REGISTRY}/{repository}", digest))])


async def fetch(
    http: aiohttp.ClientSession, url: str, path: str, *, method: str = "GET"
) -> tuple[int, dict[str, Any]]:
    """Status and (for an error) the OCI error document of a manifest request."""
    accept = f"{OCI_INDEX}, application/vnd.oci.image.manifest.v1+json"
    async with http.request(method, f"{url}{path}", headers={"Accept": accept}) as resp:
        body = await resp.read()
        if resp.status < 400 or method == "HEAD":
            return resp.status, {}
        return resp.status, json.loads(body)["errors"][0]


async def metric_values(http: aiohttp.ClientSession, url: str, name: str) -> dict[str, float]:
    """Each series of ``name`` on ``/metrics``, by its one label's value."""
    async with http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    values = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            label, value = line[len(name) + 1 :].split("} ")
            values[label.split('"')[1]] = float(value)
    return values
