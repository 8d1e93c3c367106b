"""The export summary and the ``SHA256SUMS`` list that travel with a layout.

``registry-mirror-export.json`` says what a layout holds and where it came
from: the tool and its version, when it was made, each image (reference,
digest, media type, bytes, platforms left out), what was skipped, every
object under ``blobs/`` with its size, and totals. An incremental export
adds ``base``: the layout it was made on top of and every blob the far side
is expected to hold already (cumulative over a chain of incrementals, so
``--since`` the latest one is enough).

``SHA256SUMS`` is in the format of ``sha256sum``: ``<hex>  <path>`` for
``oci-layout``, ``index.json``, the summary and every blob, sorted by path,
so ``sha256sum -c SHA256SUMS`` in the layout's root checks the transfer
before anything is imported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mirror.airgap.errors import LayoutError
from mirror.errors import MirrorError
from mirror.oci import Digest, parse_digest

SUMMARY_FILE = "registry-mirror-export.json"
SUMS_FILE = "SHA256SUMS"
FORMAT = "registry-mirror-export/1"


@dataclass(frozen=True, slots=True)
class Base:
    """The export an incremental one was made on top of."""

    layout: str
    created: str
    #: every blob the far side holds once it imported the base (and its own bases)
    blobs: dict[Digest, int]


@dataclass
class ExportSummary:
    """The parsed ``registry-mirror-export.json``."""

    tool: str
    created: str
    #: digest of the layout's ``index.json``: names this export for a later ``--since``
    layout: str
    images: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    #: every object under ``blobs/``, manifests included, with its size
    blobs: dict[Digest, int] = field(default_factory=dict)
    base: Base | None = None

    def known_blobs(self) -> dict[Digest, int]:
        """What the far side holds after importing this layout (and its bases)."""
        known = dict(self.base.blobs) if self.base is not None else {}
        known.update(self.blobs)
        return known

    def absent(self) -> set[Digest]:
        """Platform manifests the export left out on purpose (not cached at export time)."""
        found = set()
        for image in self.images:
            for line in image.get("absent", []):
                try:
                    found.add(parse_digest(str(line).split(" ", 1)[0]))
                except MirrorError:
                    continue  # not a line this version wrote: the platform counts as missing
        return found

    def to_json(self) -> bytes:
        """The summary file's bytes."""
        doc: dict[str, Any] = {
            "format": FORMAT,
            "tool": self.tool,
            "created": self.created,
            "layout": self.layout,
            "images": self.images,
            "skipped": self.skipped,
            "totals": self.totals(),
            "blobs": _sizes_json(self.blobs),
        }
        if self.base is not None:
            doc["base"] = {
                "layout": self.base.layout,
                "created": self.base.created,
                "blobs": _sizes_json(self.base.blobs),
            }
        return json.dumps(doc, indent=1).encode() + b"\n"

    def totals(self) -> dict[str, int]:
        """Counts and bytes of the layout."""
        referrers = sum(1 for image in self.images if image.get("subject"))
        return {
            "images": len(self.images) - referrers,
            "referrers": referrers,
            "objects": len(self.blobs),
            "bytes": sum(self.blobs.values()),
            "expected_from_base": len(self.base.blobs) if self.base is not None else 0,
        }


def parse_summary(data: bytes, where: str) -> ExportSummary:
    """Read a summary; :class:`LayoutError` naming ``where`` when it is not one."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise LayoutError(f"{where}: not a {FORMAT} summary")
        base = doc.get("base")
        return ExportSummary(
            tool=str(doc["tool"]),
            created=str(doc["created"]),
            layout=str(doc["layout"]),
            images=list(doc["images"]),
            skipped=list(doc["skipped"]),
            blobs=_sizes(doc["blobs"]),
            base=Base(str(base["layout"]), str(base["created"]), _sizes(base["blobs"]))
            if base
            else None,
        )
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError, MirrorError) as exc:
        if isinstance(exc, LayoutError):
            raise
        raise LayoutError(f"{where}: unreadable summary ({type(exc).__name__}: {exc})") from None


def sums_file(hashes: dict[str, str]) -> bytes:
    """``SHA256SUMS`` for ``path -> sha256 hex``, sorted by path."""
    return "".join(f"{hexdigest}  {path}\n" for path, hexdigest in sorted(hashes.items())).encode()


def blob_path(digest: Digest) -> str:
    """Where a blob lives in a layout."""
    return f"blobs/{digest.algorithm}/{digest.hex}"


def _sizes(value: object) -> dict[Digest, int]:
    if not isinstance(value, dict):
        raise TypeError("blobs must be an object")
    return {parse_digest(key): int(size) for key, size in value.items()}


def _sizes_json(sizes: dict[Digest, int]) -> dict[str, int]:
    return {str(digest): sizes[digest] for digest in sorted(sizes, key=str)}
