"""An S3 endpoint for tests: moto in server mode, a real HTTP server on loopback.

moto runs as its own process (``python -m moto.server``), so the mirror talks
to it over real sockets exactly as to AWS or MinIO, and a test can stop it
to simulate an outage. Tests inspect the bucket with a plain boto3 client.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import urllib.request
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

    from tests.support.pki import Issued

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
    ca_file: Path | None = None  # the CA its certificate chains to, when it serves https
    recording: Path | None = None  # where moto's recorder writes the requests it saw
    _client: S3Client | None = field(default=None, repr=False)

    @property
    def client(self) -> S3Client:
        """A synchronous boto3 S3 client for assertions and set-up."""
        if self._client is None:
            self._client = boto3.client(
                "s3", region_name=REGION, endpoint_url=self.endpoint_url,
                aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                verify=str(self.ca_file) if self.ca_file else None,
            )  # fmt: skip
        return self._client

    def record(self) -> None:
        """Have moto record every request from now on (headers and bodies: keep them small)."""
        assert self.recording is not None
        self.recording.unlink(missing_ok=True)
        self._moto_api("recorder/start-recording")

    def recorded(self) -> list[dict[str, Any]]:
        """The requests recorded since :meth:`record`: ``method``, ``url``, ``headers``."""
        assert self.recording is not None
        if not self.recording.exists():
            return []
        return [json.loads(line) for line in self.recording.read_text().splitlines()]

    def _moto_api(self, path: str) -> None:
        context = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/{path}", method="POST")
        with urllib.request.urlopen(request, timeout=10, context=context) as answer:
            answer.read()

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
def running_moto(workdir: Path, tls: Issued | None = None, ca_file: Path | None = None,
                 ) -> Iterator[MotoS3]:  # fmt: skip
    """Start a moto S3 server on a free loopback port; stop it (by PID) on exit.

    ``tls``: serve https with this certificate, which chains to ``ca_file``.
    """
    port = free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    context = None
    if tls is not None:
        tls.write(workdir / "moto.crt", workdir / "moto.key")
        argv += ["--ssl-cert", str(workdir / "moto.crt"), "--ssl-key", str(workdir / "moto.key")]
        context = ssl.create_default_context(cafile=ca_file)
    recording = workdir / "moto-recording.jsonl"
    env = {**os.environ, "MOTO_RECORDER_FILEPATH": str(recording)}
    process = start_process("moto", argv, log_path=workdir / "moto.log", env=env)
    try:
        url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        wait_for_http(url + "/moto-api/", process, timeout=30, context=context)
        yield MotoS3(url, process, ca_file, recording)
    finally:
        process.stop()


def dead_endpoint() -> str:
    """An http URL on loopback where nothing listens (S3 down)."""
    return f"http://127.0.0.1:{free_port()}"
