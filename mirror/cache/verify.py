"""Re-hash every cached blob and manifest; remove or quarantine the bad ones.

Bytes are verified before they are committed, so a mismatch found here means
the storage itself changed them (a failing disk, a hand edit, a bug in a
backend). A damaged object is deleted, or with ``quarantine`` first copied
under :func:`mirror.storage.layout.quarantine_key` for inspection, so the
next pull fetches a good copy. Only the storage protocol is used, so this
works the same on disk and S3. The whole key space is checked, whatever
upstreams the configuration names: a cache filled under another
configuration is checked all the same. Quarantined objects are not checked
again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mirror.oci import Digest
from mirror.storage import layout
from mirror.storage.base import ObjectInfo, ObjectNotFound, Storage, StorageError
from mirror.stored import decode_manifest

log = logging.getLogger(__name__)


@dataclass
class VerifyReport:
    """Counts of what was checked and what was wrong."""

    blobs: int = 0
    manifests: int = 0
    bytes: int = 0
    damaged: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    quarantined: int = 0
    deleted: int = 0
    #: blobs and manifests checked of each upstream the configuration does not name
    unconfigured: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether everything hashed to its digest."""
        return not self.damaged and not self.unreadable


async def verify(storage: Storage, upstreams: list[str], *, quarantine: bool) -> VerifyReport:
    """Check every blob and manifest in ``storage``, of whatever upstream.

    ``upstreams`` are the configured ones: objects of any other upstream are
    checked as well, and counted in :attr:`VerifyReport.unconfigured`.
    """
    report = VerifyReport()
    async for info in storage.walk(""):
        parsed = layout.parse_content_key(info.key)
        if parsed is None:
            continue  # a tag record (nothing to hash), the probe, the quarantine
        upstream, kind, digest = parsed
        if upstream not in upstreams:
            report.unconfigured[upstream] = report.unconfigured.get(upstream, 0) + 1
        await _check(storage, info, kind, digest, report, quarantine)
    report.unconfigured = dict(sorted(report.unconfigured.items()))
    return report


async def _check(
    storage: Storage,
    info: ObjectInfo,
    kind: str,
    digest: Digest,
    report: VerifyReport,
    quarantine: bool,
) -> None:
    try:
        if kind == layout.BLOBS:
            report.blobs += 1
            good = await _blob_matches(storage, info.key, digest)
        else:
            report.manifests += 1
            good = await _manifest_matches(storage, info.key, digest)
    except ObjectNotFound:
        return  # removed since the walk (evicted or purged): nothing to check
    except StorageError as exc:
        log.warning("cannot read %s: %s", info.key, exc)
        report.unreadable.append(info.key)
        return
    report.bytes += info.size
    if good:
        return
    log.warning("%s does not match its digest", info.key)
    report.damaged.append(info.key)
    if quarantine:
        await _copy(storage, info.key, layout.quarantine_key(info.key))
        report.quarantined += 1
    await storage.delete(info.key)
    report.deleted += 1


async def _blob_matches(storage: Storage, key: str, digest: Digest) -> bool:
    hasher = digest.hasher()
    async for chunk in storage.read(key):
        hasher.update(chunk)
    return hasher.hexdigest() == digest.hex


async def _manifest_matches(storage: Storage, key: str, digest: Digest) -> bool:
    raw = await storage.get(key)
    if raw is None:
        return True  # removed since the walk: nothing left to be wrong
    stored = decode_manifest(raw)
    return stored is not None and digest.matches(stored.body)


async def _copy(storage: Storage, source: str, target: str) -> None:
    writer = await storage.writer(target)
    try:
        async for chunk in storage.read(source):
            await writer.write(chunk)
        await writer.commit()
    finally:
        await writer.abort()
