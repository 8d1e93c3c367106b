"""What the mirror signs of an S3 payload: nothing over TLS, a sha256 of it over plain HTTP.

Without a checksum header botocore hashes every payload for its SigV4
signature, on the event loop. Over TLS the mirror sends ``UNSIGNED-PAYLOAD``
instead; over plain HTTP the signature is all that protects the body, so it
keeps it. moto (over real TLS with a certificate from a private CA, and over
plain HTTP) records every request's headers as it received them. A
certificate the mirror does not trust fails like an S3 that is down.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import pytest

from mirror.storage.base import StorageError
from mirror.storage.s3 import S3Storage
from mirror.storage.s3_errors import S3Unreachable
from tests.support.pki import PrivateCA
from tests.support.s3 import MIN_PART, MotoS3, running_moto

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tls_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """moto serving https with a certificate of a private CA."""
    workdir = tmp_path_factory.mktemp("moto-tls")
    ca = PrivateCA.create(workdir / "pki")
    with running_moto(workdir, ca.issue_server("127.0.0.1"), ca.root_path) as server:
        yield server


@pytest.fixture(scope="module")
def plain_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """moto serving plain HTTP, with a recording of its own."""
    with running_moto(tmp_path_factory.mktemp("moto-plain")) as server:
        yield server


def header(request: dict[str, Any], name: str) -> str | None:
    """A recorded request's header, whatever its case."""
    found = [v for k, v in request["headers"].items() if k.lower() == name.lower()]
    return found[0] if found else None


def body(request: dict[str, Any]) -> bytes:
    """A recorded request's body."""
    text = request.get("body") or ""
    return base64.b64decode(text) if request.get("body_encoded") else text.encode()


async def store(server: MotoS3, objects: dict[str, bytes]) -> None:
    """Write ``objects`` through the mirror's S3 storage, recording what moto receives."""
    storage = await S3Storage.open(server.s3_config(server.create_bucket(), "signing"))
    server.record()
    try:
        for key, data in objects.items():
            writer = await storage.writer(key)
            await writer.write(data)
            await writer.commit()
            assert await storage.get(key) == data
    finally:
        await storage.close()


@pytest.mark.parametrize("scheme", ["https", "http"])
async def test_payloads_are_hashed_for_the_signature_only_without_tls(
    scheme: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    server: MotoS3 = request.getfixturevalue("tls_moto" if scheme == "https" else "plain_moto")
    if server.ca_file is not None:
        monkeypatch.setenv("AWS_CA_BUNDLE", str(server.ca_file))  # botocore trusts the CA
    assert server.endpoint_url.startswith(f"{scheme}://")
    # One object in a single PUT, one in two parts.
    await store(server, {"blobs/small": os.urandom(1000), "blobs/big": os.urandom(MIN_PART + 1)})
    puts = [r for r in server.recorded() if r["method"] == "PUT" and "/signing/blobs/" in r["url"]]
    assert len(puts) == 3
    for put in puts:
        sent = header(put, "X-Amz-Content-SHA256")
        if scheme == "https":
            assert sent == "UNSIGNED-PAYLOAD"
        else:
            assert sent == hashlib.sha256(body(put)).hexdigest()


async def test_an_s3_certificate_nobody_vouches_for_is_a_storage_failure(
    tls_moto: MotoS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the CA: every call fails as S3 down does, so pulls are served through.
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    storage = await S3Storage.open(tls_moto.s3_config(tls_moto.create_bucket(), "untrusted"))
    try:
        with pytest.raises(S3Unreachable, match="CERTIFICATE_VERIFY_FAILED"):
            await storage.put("blobs/one", b"bytes")
        with pytest.raises(StorageError):
            await storage.stat("blobs/one")
    finally:
        await storage.close()
