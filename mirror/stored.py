"""What the mirror stores besides blob bytes, as bytes: a manifest object and a tag record.

A manifest is stored by digest as ``b"<media type>\\n" + body`` in one
object, so its media type can never be lost apart from it. A tag record is a
small JSON document: the digest, media type and size the upstream last
answered for a tag, and the wall-clock time it was last confirmed.

This module is the only one that knows these formats: the proxy's stores
write and read them, pins and ``verify`` read them. Pure: no I/O. Decoding
never raises: what does not parse is None, and the caller treats it as absent.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import TypeGuard

from mirror.errors import MirrorError
from mirror.oci import MANIFEST_MEDIA_TYPES, parse_digest

_LATEST_TIME = 2**53  # a record's "checked" beyond this is not a time (nor a float)


@dataclass(frozen=True, slots=True)
class StoredManifest:
    """A manifest's bytes with its media type."""

    media_type: str
    body: bytes

    def encode(self) -> bytes:
        """The stored object: media type, newline, body."""
        return self.media_type.encode() + b"\n" + self.body


def decode_manifest(raw: bytes) -> StoredManifest | None:
    """A stored manifest object; None when it has no media type line."""
    media_type, sep, body = raw.partition(b"\n")
    if not sep:
        return None
    return StoredManifest(media_type.decode("ascii", "replace"), body)


@dataclass(frozen=True, slots=True)
class TagRecord:
    """What a tag pointed to when the upstream was last asked."""

    digest: str
    media_type: str
    size: int
    checked: float  # wall-clock seconds, so it survives restarts

    def age(self, now: float | None = None) -> float:
        """Seconds since the upstream last confirmed this record."""
        return (time.time() if now is None else now) - self.checked

    def encode(self) -> bytes:
        """The stored record: a JSON object of the four fields."""
        return json.dumps(asdict(self)).encode()


def decode_record(raw: bytes) -> TagRecord | None:
    """A record as :meth:`TagRecord.encode` writes it; None for anything else.

    A record must name a valid digest and a manifest media type, with a size
    and a time that are plain non-negative numbers.
    """
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    digest, media_type = doc.get("digest"), doc.get("media_type")
    size, checked = doc.get("size"), doc.get("checked")
    if not isinstance(digest, str) or not _is_digest(digest):
        return None
    if not isinstance(media_type, str) or media_type not in MANIFEST_MEDIA_TYPES:
        return None
    if not _is_number(size) or not _is_number(checked) or not isinstance(size, int):
        return None
    return TagRecord(digest, media_type, size, float(checked))


def _is_number(value: object) -> TypeGuard[int | float]:
    """A JSON number from 0 up to :data:`_LATEST_TIME` (``true`` is no number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return 0 <= value < _LATEST_TIME


def _is_digest(value: str) -> bool:
    try:
        parse_digest(value)
    except MirrorError:
        return False
    return True
