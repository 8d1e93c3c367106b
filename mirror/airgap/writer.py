"""Where an export writes its layout: a directory, or a tar stream (plain or zstd).

:func:`open_target` picks one from the destination: ``-`` is a tar stream on
standard output, ``*.tar`` a tar file, ``*.tar.zst`` / ``*.tzst`` a
zstd-compressed tar file, anything else a directory.

Every target streams: a blob is written chunk by chunk as the exporter reads
it, so memory stays bounded whatever the blob sizes. File I/O and
compression run in worker threads (zstd releases the GIL), never on the
event loop.

Nothing looks complete before it is:

- a directory is written as a hidden sibling ``.<name>.partial-*``, every
  file fsynced, and renamed to its name only at the end;
- a tar file likewise (``.<name>.partial-*``), and then two files are put
  beside it: ``<name>.summary.json`` (the summary) and ``<name>.sha256``
  (``sha256sum -c`` format, the hash of the file as written);
- a stream cannot be taken back: a failed export stops writing and exits
  non-zero, the stream has no end-of-archive blocks, and the import reports
  what the summary promised and the stream did not bring.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, BinaryIO, Protocol, cast

import zstandard

from mirror.airgap.errors import ExportError
from mirror.airgap.streams import write_overlapped
from mirror.storage.vectored import write_all

ZSTD_SUFFIXES = (".tar.zst", ".tzst")
# zstd's default level: fast, and layers are compressed already, so higher levels gain little.
ZSTD_LEVEL = 3


class LayoutTarget(Protocol):
    """Receives the layout's files in the exporter's order."""

    async def add_file(self, path: str, data: bytes) -> None:
        """A small file (``oci-layout``, ``index.json``, the summary, the sums)."""
        ...

    async def add_blob(self, path: str, size: int, chunks: AsyncIterator[bytes]) -> None:
        """A blob of exactly ``size`` bytes, streamed (the exporter checks the bytes)."""
        ...

    async def finish(self, summary: bytes) -> list[Path]:
        """Make the layout visible; return the files written beside it."""
        ...

    async def abort(self) -> None:
        """Leave nothing that looks complete; safe after finish and more than once."""
        ...

    @property
    def stream_sha256(self) -> str | None:
        """The sha256 of a tar stream as written (None for a directory)."""
        ...


def open_target(dest: str, *, mtime: int, form: str | None = None) -> LayoutTarget:
    """The target for ``dest``; ``form`` (``dir``, ``tar``, ``tar.zst``) overrides the name."""
    form = form or _form_of(dest)
    if dest == "-":
        if form == "dir":
            raise ExportError("standard output can only take a tar stream")
        if sys.stdout.isatty():
            raise ExportError("refusing to write a tar stream to a terminal: redirect it")
        return TarTarget(sys.stdout.buffer, mtime=mtime, zstd=form == "tar.zst")
    path = Path(dest)
    if path.exists() or path.is_symlink():
        raise ExportError(f"{dest} exists: give a new name (it appears only once complete)")
    if not path.parent.is_dir():
        raise ExportError(f"{path.parent} is not a directory")
    if form == "dir":
        return DirectoryTarget(path)
    return TarFileTarget(path, mtime=mtime, zstd=form == "tar.zst")


def _form_of(dest: str) -> str:
    if dest.endswith(ZSTD_SUFFIXES):
        return "tar.zst"
    if dest == "-" or dest.endswith(".tar"):
        return "tar"
    return "dir"


class DirectoryTarget:
    """A layout directory, built as a hidden sibling and renamed into place."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.partial = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
        self._finished = False

    @property
    def stream_sha256(self) -> str | None:
        return None

    async def add_file(self, path: str, data: bytes) -> None:
        await asyncio.to_thread(_write_file, self.partial / path, data)

    async def add_blob(self, path: str, size: int, chunks: AsyncIterator[bytes]) -> None:
        target = self.partial / path
        await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
        fd = await asyncio.to_thread(os.open, target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)

        async def write(chunk: bytes) -> None:
            await asyncio.to_thread(write_all, fd, [chunk])

        try:
            await write_overlapped(chunks, write)
            await asyncio.to_thread(os.fsync, fd)
        finally:
            os.close(fd)

    async def finish(self, summary: bytes) -> list[Path]:
        await asyncio.to_thread(_publish_directory, self.partial, self.dest)
        self._finished = True
        return []

    async def abort(self) -> None:
        if not self._finished:
            await asyncio.to_thread(shutil.rmtree, self.partial, True)


class TarTarget:
    """A tar stream (optionally zstd-compressed) to a binary file object."""

    def __init__(self, out: BinaryIO, *, mtime: int, zstd: bool) -> None:
        self._raw = _HashingWriter(out)
        self._mtime = mtime
        self._out: _Writer = self._raw
        self._compressor: zstandard.ZstdCompressionWriter | None = None
        if zstd:
            context = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
            # _HashingWriter has the write() the compressor calls; IO[bytes] is wider than needed.
            self._compressor = context.stream_writer(cast(IO[bytes], self._raw), closefd=False)
            self._out = self._compressor
        self._dirs: set[str] = set()
        self._closed = False
        self._archived = 0  # tar bytes before compression, for the end-of-archive padding

    @property
    def stream_sha256(self) -> str | None:
        return self._raw.hash.hexdigest()

    async def add_file(self, path: str, data: bytes) -> None:
        await self._parents(path)
        await asyncio.to_thread(self._write, self._header(path, len(data)) + data + _pad(len(data)))

    async def add_blob(self, path: str, size: int, chunks: AsyncIterator[bytes]) -> None:
        await self._parents(path)
        await asyncio.to_thread(self._write, self._header(path, size))
        await write_overlapped(chunks, lambda chunk: asyncio.to_thread(self._write, chunk))
        await asyncio.to_thread(self._write, _pad(size))

    async def finish(self, summary: bytes) -> list[Path]:
        await asyncio.to_thread(self._close)
        return []

    async def abort(self) -> None:
        # A stream cannot be taken back; it is left without its end-of-archive blocks.
        self._closed = True

    async def _parents(self, path: str) -> None:
        parts = path.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            directory = "/".join(parts[:depth])
            if directory not in self._dirs:
                self._dirs.add(directory)
                await asyncio.to_thread(self._write, self._header(directory, 0, directory=True))

    def _header(self, path: str, size: int, *, directory: bool = False) -> bytes:
        info = tarfile.TarInfo(path + "/" if directory else path)
        info.size = size
        info.mtime = self._mtime
        info.mode = 0o755 if directory else 0o644
        info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
        info.uname = info.gname = ""
        # PAX only when a field needs it (a blob over 8 GiB): plain ustar otherwise.
        return info.tobuf(format=tarfile.PAX_FORMAT)

    def _write(self, data: bytes) -> None:
        if self._closed:
            raise ExportError("the tar stream was closed")
        self._out.write(data)
        self._archived += len(data)

    def _close(self) -> None:
        # End of archive: two zero blocks, padded to a whole record as tar(1) does.
        end = 2 * tarfile.BLOCKSIZE
        self._write(b"\0" * (end + (-(self._archived + end) % tarfile.RECORDSIZE)))
        if self._compressor is not None:
            self._compressor.flush(zstandard.FLUSH_FRAME)
        self._raw.flush()
        self._closed = True


class TarFileTarget(TarTarget):
    """A tar file, written as a hidden sibling and renamed into place, with its sidecars."""

    def __init__(self, dest: Path, *, mtime: int, zstd: bool) -> None:
        self.dest = dest
        fd, partial = tempfile.mkstemp(prefix=f".{dest.name}.partial-", dir=dest.parent)
        self.partial = Path(partial)
        self._file = os.fdopen(fd, "wb")
        self._published = False
        super().__init__(self._file, mtime=mtime, zstd=zstd)

    async def finish(self, summary: bytes) -> list[Path]:
        await super().finish(summary)
        await asyncio.to_thread(self._publish, summary)
        return [_summary_path(self.dest), _sha256_path(self.dest)]

    async def abort(self) -> None:
        await super().abort()
        if not self._published:
            self._file.close()
            self.partial.unlink(missing_ok=True)

    def _publish(self, summary: bytes) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.rename(self.partial, self.dest)
        self._published = True
        _write_atomically(_summary_path(self.dest), summary)
        line = f"{self.stream_sha256}  {self.dest.name}\n".encode()
        _write_atomically(_sha256_path(self.dest), line)
        _fsync_directory(self.dest.parent)


def _summary_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".summary.json")


def _sha256_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


class _Writer(Protocol):
    def write(self, data: bytes, /) -> int: ...


class _HashingWriter:
    """Passes bytes to a file object, hashing them."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.hash = hashlib.sha256()

    def write(self, data: bytes, /) -> int:
        self.hash.update(data)
        self.out.write(data)
        return len(data)

    def flush(self) -> None:
        self.out.flush()


def _pad(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    partial.write_bytes(data)
    with partial.open("rb") as handle:
        os.fsync(handle.fileno())
    os.rename(partial, path)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish_directory(partial: Path, dest: Path) -> None:
    for directory in [p for p in partial.rglob("*") if p.is_dir()]:
        _fsync_directory(directory)
    _fsync_directory(partial)
    if dest.exists():
        raise ExportError(f"{dest} appeared while the export ran; the export is in {partial}")
    os.rename(partial, dest)
    _fsync_directory(dest.parent)
