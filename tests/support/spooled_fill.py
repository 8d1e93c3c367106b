"""A :class:`Download` with a real spool file, driven by a test as the fill runner would."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from mirror.oci import parse_digest
from mirror.proxy.download import Download


def new_fill(tmp_path: Path, blob: bytes) -> tuple[Download, int]:
    """A fill of ``blob`` whose spool is ``tmp_path/spool``; the runner's descriptor for it."""
    fill = Download("key", parse_digest("sha256:" + hashlib.sha256(blob).hexdigest()))
    fd = os.open(tmp_path / "spool", os.O_RDWR | os.O_CREAT, 0o600)
    fill.attach_spool(os.dup(fd))  # the fill closes its own copy
    fill.set_size(len(blob))
    return fill, fd
