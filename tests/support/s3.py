"""An S3 endpoint for tests: moto in server mode, a real HTTP server on loopback.

moto runs as its own process (``python -m moto.server``), so the mirror talks
to it over real sockets exactly as to AWS or MinIO, and a test can stop it
to simulate an outage. Tests inspect the bucket with a plain boto3 client.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3

if TYPE_CHECKING:
    # boto3-stubs[s3] (the dev extra): types only, so the tests run without them.
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import MultipartUploadTypeDef

from mirror.config import S3Config
from tests.support.processes import ManagedProcess, free_port, start_process, wait_for_http

REGION = "us-east-1"
ACCESS_KEY = "testing-key"
SECRET_KEY = "testing-secret"
MIN_PART = 5 * 1024 * 1024  # S3's (and moto's) smallest part but the last


@dataclass
class MotoS3:
    """A running moto S3 server and a boto3 client for looking into it."""

    endpoint_url: str
    process: ManagedProcess
    _client: S3Client | None = field(default=None, repr=False)

    @property
    def client(self) -> S3Client:
        """A synchronous boto3 S3 client for assertions and set-up."""
        if self._client is None:
            self._client = boto3.client(
                "s3", region_name=REGION, endpoint_url=self.endpoint_url,
                aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            )  # fmt: skip
        return self._client

    def create_bucket(self) -> str:
        """A fresh, empty bucket with a unique name."""
        name = f"mirror-{uuid.uuid4().hex[:16]}"
        self.client.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """Every object under ``prefix``: key -> size."""
        found: dict[str, int] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix
        ):
            found.update({item["Key"]: item["Size"] for item in page.get("Contents", [])})
        return found

    def uploads(self, bucket: str, prefix: str = "") -> list[MultipartUploadTypeDef]:
        """Multipart uploads in progress under ``prefix``."""
        answer = self.client.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
        return answer.get("Uploads", [])

    def s3_config(self, bucket: str, prefix: str = "", **settings: Any) -> S3Config:
        """An :class:`S3Config` for this server (5 MiB parts unless given)."""
        settings.setdefault("part_size", MIN_PART)
        return S3Config(
            bucket=bucket, prefix=prefix, region=REGION, endpoint_url=self.endpoint_url,
            access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY, **settings,
        )  # fmt: skip

    def storage_settings(
        self, bucket: str, spool: Path, prefix: str = "mirror", **s3: Any
    ) -> dict[str, Any]:
        """The TOML-shaped ``storage`` table of a mirror caching in ``bucket``."""
        return {
            "backend": "s3",
            "path": str(spool),
            "s3": {
                "bucket": bucket, "prefix": prefix, "region": REGION,
                "endpoint_url": self.endpoint_url, "access_key_id": ACCESS_KEY,
                "secret_access_key": SECRET_KEY, "part_size": "5MiB", **s3,
            },
        }  # fmt: skip


@contextmanager
def running_moto(workdir: Path) -> Iterator[MotoS3]:
    """Start a moto S3 server on a free loopback port; stop it (by PID) on exit."""
    port = free_port()
    process = start_process(
        "moto",
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        log_path=workdir / "moto.log",
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(url + "/moto-api/", process, timeout=30)
        yield MotoS3(url, process)
    finally:
        process.stop()


def dead_endpoint() -> str:
    """An http URL on loopback where nothing listens (S3 down)."""
    return f"http://127.0.0.1:{free_port()}"
