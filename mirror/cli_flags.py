"""Command-line flags that several commands share, declared once."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from mirror.storage.factory import BACKENDS


def add_storage_flags(add: Callable[..., argparse.Action]) -> None:
    """``--storage`` and the S3 flags, for every command that opens the cache."""
    add("--storage", choices=sorted(BACKENDS), help="cache backend (default disk)")
    add("--s3-bucket", help="S3 bucket (storage s3)")
    add("--s3-prefix", help="key prefix inside the bucket")
    add("--s3-region", help="S3 region")
    add("--s3-endpoint-url", help="S3 endpoint for MinIO, Ceph RGW, R2, ...")
