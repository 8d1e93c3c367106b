"""Reading an OCI image layout: a directory, or a tar stream (plain, gzip or zstd).

The reader hands out bytes; it checks nothing about them (the importer
hashes every object before it uses it). What it guarantees is bounded
memory and one pass over a stream:

- a directory is read at random, a blob at a time, in chunks;
- a tar file or ``-`` (standard input) is read once, front to back. An
  export of this tool puts ``oci-layout``, ``index.json``, the summary and the
  manifests first, so the importer knows the whole graph before the first
  layer arrives and streams every layer straight to the cache. A tar made by
  another tool may put a layer before the manifests that say what it is:
  such members, read before they are asked for, are spooled to a temporary
  directory (``spool_dir``) and handed out from there. So any order works,
  and our own order needs no spool for blobs.

A stream that breaks (truncated, not a tar, corrupt compression) ends the
reading; :attr:`Layout.problems` says where, and whatever was not read is
missing, by name, in the importer's report.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol, cast

import zstandard

from mirror.airgap.errors import LayoutError
from mirror.airgap.summary import SUMMARY_FILE, ExportSummary, parse_summary
from mirror.errors import MirrorError
from mirror.oci import Digest, parse_digest

CHUNK = 1024 * 1024
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# index.json and the summary are read whole; a layout of 100 000 objects has a
# summary of about 10 MB, so these bound memory without refusing real layouts.
MAX_METADATA = 256 * 1024 * 1024
_METADATA = ("oci-layout", "index.json", SUMMARY_FILE)


@dataclass
class LayoutHead:
    """The layout's metadata files."""

    index: bytes
    summary: ExportSummary | None = None


@dataclass
class LayoutBlob:
    """A blob as the layout holds it; ``chunks`` must be read to the end before the next."""

    digest: Digest
    size: int
    chunks: AsyncIterator[bytes]


class Layout(Protocol):
    """An image layout being read."""

    #: where it is read from, for messages
    name: str
    #: stream-level problems (a truncated or corrupt stream), in the order met
    problems: list[str]

    async def head(self) -> LayoutHead:
        """``index.json`` (and the summary); :class:`LayoutError` when it is no layout."""
        ...

    async def manifest(self, digest: Digest, limit: int) -> bytes | None:
        """The object's bytes (at most ``limit`` + 1 of them), None when it is not there."""
        ...

    def blobs(self, wanted: set[Digest]) -> AsyncIterator[LayoutBlob]:
        """Each wanted blob the layout holds, once, in the layout's own order."""
        ...

    async def close(self) -> None:
        """Release files and remove the spool."""
        ...


def open_layout(source: str, *, spool_dir: Path | None = None) -> Layout:
    """A reader for a directory, a tar file (plain, gzip, zstd) or ``-`` (standard input)."""
    if source != "-" and Path(source).is_dir():
        return DirectoryLayout(Path(source))
    if source == "-":
        return TarLayout(source, cast(io.BufferedReader, sys.stdin.buffer), spool_dir)
    try:
        # Closed by TarLayout.close(): the stream outlives this function.
        raw = Path(source).open("rb")  # noqa: SIM115
    except OSError as exc:
        raise LayoutError(f"{source}: {exc.strerror or exc}") from None
    return TarLayout(source, raw, spool_dir)


def _check_oci_layout(data: bytes, where: str) -> None:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("imageLayoutVersion"), str):
        raise LayoutError(f"{where}: oci-layout has no imageLayoutVersion: not an OCI image layout")


def _blob_digest(name: str) -> Digest | None:
    """The digest of a ``blobs/<alg>/<hex>`` member name, None for anything else."""
    parts = name.removeprefix("./").split("/")
    if len(parts) != 3 or parts[0] != "blobs":
        return None
    try:
        return parse_digest(f"{parts[1]}:{parts[2]}")
    except MirrorError:
        return None


class DirectoryLayout:
    """A layout directory, read at random."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = str(root)
        self.problems: list[str] = []

    async def head(self) -> LayoutHead:
        oci_layout = await self._read_small("oci-layout")
        index = await self._read_small("index.json")
        if oci_layout is None or index is None:
            raise LayoutError(f"{self.name}: no oci-layout or index.json: not an OCI image layout")
        _check_oci_layout(oci_layout, self.name)
        summary = await self._read_small(SUMMARY_FILE)
        parsed = parse_summary(summary, f"{self.name}/{SUMMARY_FILE}") if summary else None
        return LayoutHead(index, parsed)

    async def manifest(self, digest: Digest, limit: int) -> bytes | None:
        return await asyncio.to_thread(_read_prefix, self._path(digest), limit + 1)

    async def blobs(self, wanted: set[Digest]) -> AsyncIterator[LayoutBlob]:
        for digest in sorted(wanted, key=str):
            path = self._path(digest)
            try:
                handle = await asyncio.to_thread(path.open, "rb")
            except OSError:
                continue  # missing (or unreadable): the importer names it
            try:
                info = await asyncio.to_thread(os.fstat, handle.fileno())
                yield LayoutBlob(digest, info.st_size, _file_chunks(handle))
            finally:
                handle.close()

    async def close(self) -> None:
        return None

    def _path(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.hex

    async def _read_small(self, name: str) -> bytes | None:
        data = await asyncio.to_thread(_read_prefix, self.root / name, MAX_METADATA + 1)
        if data is not None and len(data) > MAX_METADATA:
            raise LayoutError(f"{self.name}/{name} is larger than {MAX_METADATA} bytes")
        return data


async def _file_chunks(handle: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(handle.read, CHUNK):
        yield chunk


def _read_prefix(path: Path, limit: int) -> bytes | None:
    try:
        with path.open("rb") as handle:
            return handle.read(limit)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


@dataclass
class _Stream:
    """The tar stream's state: the member under the read head, and what was read ahead."""

    archive: tarfile.TarFile | None = None
    current: tarfile.TarInfo | None = None
    ended: bool = False
    metadata: dict[str, bytes] = field(default_factory=dict)
    spooled: dict[Digest, Path] = field(default_factory=dict)
    members: int = 0


class TarLayout:
    """A tar stream, read once; members read before they are wanted are spooled."""

    def __init__(self, name: str, raw: io.BufferedReader, spool_dir: Path | None) -> None:
        self.name = name
        self.problems: list[str] = []
        self._raw = raw
        self._spool_dir = spool_dir
        self._spool: tempfile.TemporaryDirectory[str] | None = None
        self._stream = _Stream()

    async def head(self) -> LayoutHead:
        await asyncio.to_thread(self._open)
        # Read up to the first blob after index.json, so a summary right behind it is seen.
        while not self._stream.ended:
            member = await self._member()
            if member is None:
                break
            if self._has_metadata() and _blob_digest(member.name):
                break
            await self._take(member)
        found = self._stream.metadata
        if "oci-layout" not in found or "index.json" not in found:
            detail = f" ({self.problems[-1]})" if self.problems else ""
            raise LayoutError(f"{self.name}: no oci-layout or index.json in the stream{detail}")
        _check_oci_layout(found["oci-layout"], self.name)
        summary = found.get(SUMMARY_FILE)
        parsed = parse_summary(summary, f"{self.name}:{SUMMARY_FILE}") if summary else None
        return LayoutHead(found["index.json"], parsed)

    def _has_metadata(self) -> bool:
        return all(name in self._stream.metadata for name in ("oci-layout", "index.json"))

    async def manifest(self, digest: Digest, limit: int) -> bytes | None:
        while digest not in self._stream.spooled:
            member = await self._member()
            if member is None:
                return None
            await self._take(member)
        return await asyncio.to_thread(_read_prefix, self._stream.spooled[digest], limit + 1)

    async def blobs(self, wanted: set[Digest]) -> AsyncIterator[LayoutBlob]:
        left = set(wanted)
        for digest in sorted(left & self._stream.spooled.keys(), key=str):
            left.discard(digest)
            path = self._stream.spooled[digest]
            with path.open("rb") as handle:
                yield LayoutBlob(digest, path.stat().st_size, _file_chunks(handle))
        while left:
            member = await self._member()
            if member is None:
                return
            found = _blob_digest(member.name)
            self._stream.current = None
            if found is not None and found in left:
                left.discard(found)
                yield LayoutBlob(found, member.size, self._member_chunks(member))

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _open(self) -> None:
        try:
            source = _decompressed(self._raw)
            # Closed by close(): the archive is read across many calls.
            self._stream.archive = tarfile.open(fileobj=source, mode="r|*")  # noqa: SIM115
        except (tarfile.TarError, zstandard.ZstdError, OSError, EOFError) as exc:
            raise LayoutError(f"{self.name}: not a tar stream ({exc})") from None

    async def _member(self) -> tarfile.TarInfo | None:
        """The member under the read head (a regular file of the layout), None at the end."""
        while self._stream.current is None and not self._stream.ended:
            self._stream.current = await asyncio.to_thread(self._next)
        return self._stream.current

    def _next(self) -> tarfile.TarInfo | None:
        assert self._stream.archive is not None
        try:
            member = self._stream.archive.next()
        except (tarfile.TarError, zstandard.ZstdError, OSError, EOFError) as exc:
            self._broken(exc)
            return None
        if member is None:
            self._stream.ended = True
            return None
        self._stream.members += 1
        name = member.name.removeprefix("./")
        wanted = name in _METADATA or _blob_digest(name) is not None
        return member if member.isfile() and wanted else None

    async def _take(self, member: tarfile.TarInfo) -> None:
        """Consume the member under the read head: keep metadata, spool a blob."""
        self._stream.current = None
        name = member.name.removeprefix("./")
        digest = _blob_digest(name)
        if digest is None:
            if member.size > MAX_METADATA:
                raise LayoutError(f"{self.name}: {name} is larger than {MAX_METADATA} bytes")
            data = await asyncio.to_thread(self._read_member, member)
            if data is not None:
                self._stream.metadata.setdefault(name, data)
            return
        if digest not in self._stream.spooled:
            path = self._spool_path(digest)
            if await asyncio.to_thread(self._spool_member, member, path):
                self._stream.spooled[digest] = path

    async def _member_chunks(self, member: tarfile.TarInfo) -> AsyncIterator[bytes]:
        assert self._stream.archive is not None
        handle = self._stream.archive.extractfile(member)
        assert handle is not None  # regular files only
        while True:
            try:
                chunk = await asyncio.to_thread(handle.read, CHUNK)
            except (tarfile.TarError, zstandard.ZstdError, OSError, EOFError) as exc:
                self._broken(exc)
                return
            if not chunk:
                return
            yield chunk

    def _read_member(self, member: tarfile.TarInfo) -> bytes | None:
        assert self._stream.archive is not None
        handle = self._stream.archive.extractfile(member)
        assert handle is not None
        try:
            return handle.read()
        except (tarfile.TarError, zstandard.ZstdError, OSError, EOFError) as exc:
            self._broken(exc)
            return None

    def _spool_member(self, member: tarfile.TarInfo, path: Path) -> bool:
        assert self._stream.archive is not None
        handle = self._stream.archive.extractfile(member)
        assert handle is not None
        try:
            with path.open("wb") as out:
                shutil.copyfileobj(handle, out, CHUNK)
        except (tarfile.TarError, zstandard.ZstdError, EOFError) as exc:
            self._broken(exc)
            return False
        return True

    def _spool_path(self, digest: Digest) -> Path:
        if self._spool is None:
            self._spool = tempfile.TemporaryDirectory(
                prefix="registry-mirror-import-", dir=self._spool_dir
            )
        return Path(self._spool.name) / f"{digest.algorithm}-{digest.hex}"

    def _broken(self, exc: BaseException) -> None:
        self._stream.ended = True
        self._stream.current = None
        reason = str(exc) or type(exc).__name__
        self.problems.append(
            f"{self.name}: stream broken after {self._stream.members} members: {reason}"
        )

    def _close(self) -> None:
        if self._stream.archive is not None:
            self._stream.archive.close()
        if self._raw is not sys.stdin.buffer:
            self._raw.close()
        if self._spool is not None:
            self._spool.cleanup()


def _decompressed(raw: io.BufferedReader) -> IO[bytes]:
    """``raw``, decompressed when it starts with zstd's magic (tarfile knows gzip itself)."""
    if raw.peek(4)[:4] == ZSTD_MAGIC:
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        return cast(IO[bytes], reader)
    return raw
