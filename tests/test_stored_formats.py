"""Stored manifests and tag records: what is written reads back, nothing else does."""

from __future__ import annotations

import json

import pytest

from mirror.oci import OCI_MANIFEST
from mirror.stored import StoredManifest, TagRecord, decode_manifest, decode_record

DIGEST = "sha256:" + "ab" * 32
GOOD = {"digest": DIGEST, "media_type": OCI_MANIFEST, "size": 10, "checked": 1700000000.5}


def test_a_manifest_reads_back_with_its_media_type() -> None:
    stored = StoredManifest(OCI_MANIFEST, b'{"schemaVersion": 2}\n')
    assert decode_manifest(stored.encode()) == stored
    assert decode_manifest(b"no media type line") is None


def test_a_record_reads_back() -> None:
    record = TagRecord(DIGEST, OCI_MANIFEST, 10, 1700000000.5)
    assert decode_record(record.encode()) == record
    assert record.age(now=1700000010.5) == 10


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b"[" * 100_000,
        json.dumps({**GOOD, "digest": "sha256:short"}).encode(),
        json.dumps({**GOOD, "digest": 5}).encode(),
        json.dumps({**GOOD, "media_type": "text/html"}).encode(),
        json.dumps({**GOOD, "size": -1}).encode(),
        json.dumps({**GOOD, "size": 1.5}).encode(),
        json.dumps({**GOOD, "size": True}).encode(),
        json.dumps({**GOOD, "checked": "yesterday"}).encode(),
        json.dumps({**GOOD, "checked": 2**60}).encode(),
        json.dumps({k: v for k, v in GOOD.items() if k != "size"}).encode(),
    ],
)
def test_anything_else_is_no_record(raw: bytes) -> None:
    assert decode_record(raw) is None
